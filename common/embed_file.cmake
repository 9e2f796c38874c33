# Writes OUT: the text of IN as one C string named NAME.
file(READ ${IN} text)
string(REPLACE "\\" "\\\\" text "${text}")
string(REPLACE "\"" "\\\"" text "${text}")
string(REPLACE "\n" "\\n\"\n\"" text "${text}")
file(WRITE ${OUT} "/* Generated from ${IN} by embed_file.cmake. Do not edit. */\nextern const char ${NAME}[];\nconst char ${NAME}[] =\n\"${text}\";\n")
