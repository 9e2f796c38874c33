"""Build step: turns docs/openapi.yaml into a C file holding the same document as compact JSON,
served by the ingress at GET /v1/openapi.json. Fails the build if the YAML is not a mapping with an
openapi version 3.1.x and paths."""
import json
import sys

import yaml

src, out = sys.argv[1], sys.argv[2]
with open(src, encoding="utf-8") as f:
    doc = yaml.safe_load(f)
if not isinstance(doc, dict) or not str(doc.get("openapi", "")).startswith("3.1") or "paths" not in doc:
    sys.exit(f"{src}: not an OpenAPI 3.1 document")
text = json.dumps(doc, separators=(",", ":"), ensure_ascii=True)
lines = [text[i:i + 100] for i in range(0, len(text), 100)]
with open(out, "w", encoding="utf-8") as f:
    f.write("/* Generated from docs/openapi.yaml by embed_openapi.py. Do not edit. */\n")
    f.write("#include <stddef.h>\n\nconst char dr_openapi_json[] =\n")
    for line in lines:
        f.write('    "' + line.replace("\\", "\\\\").replace('"', '\\"') + '"\n')
    f.write(";\nconst size_t dr_openapi_json_len = sizeof(dr_openapi_json) - 1;\n")
