# Writes OUT: one C string per script in SCRIPTS, each being lib.lua followed by <name>.lua.
string(REPLACE "," ";" SCRIPTS "${SCRIPTS}")
file(READ ${LIB} lib)
set(out "/* Generated from common/lua by embed_lua.cmake. Do not edit. */\n#include \"dr/scripts.h\"\n\n")
foreach(s ${SCRIPTS})
  file(READ ${DIR}/${s}.lua body)
  set(text "${lib}\n${body}")
  # Emit as a sequence of string literals, one per line, escaping backslashes and quotes.
  string(REPLACE "\\" "\\\\" text "${text}")
  string(REPLACE "\"" "\\\"" text "${text}")
  string(REPLACE "\n" "\\n\"\n\"" text "${text}")
  string(APPEND out "const char dr_script_${s}[] =\n\"${text}\";\n\n")
endforeach()
file(WRITE ${OUT} "${out}")
