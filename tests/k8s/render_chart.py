#!/usr/bin/env python3
"""Renders the Helm chart k8s/chart/drover without helm, for the template subset the chart uses.

The plain manifests of k8s/ are this renderer's output with the chart's default values (release
`drover` in namespace `drover`); `--write` regenerates them and `--check` fails when they differ
from a fresh render. tests/k8s/check_manifests.py runs all of its checks on that render too.

Supported (k8s/README.md, "The chart's template subset"); everything else is an error, never
silently ignored:

- actions `{{ PIPELINE }}` with `{{-` / `-}}` trimming, comments `{{/* ... */}}`;
- `if PIPELINE` / `else` / `else if PIPELINE` / `end`; `range PIPELINE`, `range $v := PIPELINE` and
  `range $k, $v := PIPELINE` over lists and maps (maps in key order, as Go does); `define "name"`;
- values: `.Values.a.b`, `.Release.Name`, `.Release.Namespace`, `.Chart.Name`, `.Chart.Version`,
  `.Chart.AppVersion`, `.` and `.field` (inside range), `$` and `$.field`, `$var` and `$var.field`,
  string, integer and boolean literals, `( PIPELINE )`; a missing key is an error;
- functions, called with arguments or at the end of a `|` pipe: include, toYaml, nindent, indent,
  quote, default, printf (%s %d %v %q), not, fail.

Usage: tests/k8s/render_chart.py [--chart DIR] [--out DIR] [--release NAME] [--namespace NS]
                                 [-f VALUES.yaml ...] [--set key.path=value ...] [--write | --check]
Without --write or --check the rendered files are printed to stdout. Exit status 0 on success,
1 when a check fails or the chart uses something outside the subset.
"""

import argparse
import copy
import json
import os
import re
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "k8s", "chart", "drover")
OUT = os.path.join(ROOT, "k8s")
# Files of k8s/ that are written by hand, not rendered from the chart.
HAND_WRITTEN = ("kustomization.yaml", "secret.example.yaml")
HEADER = "# Rendered from k8s/chart/drover/templates/{name} by tests/k8s/render_chart.py --write: edit the chart.\n"


class TemplateError(Exception):
    pass


# ---- lexing --------------------------------------------------------------------------------------


def lex(name, text):
    """Splits a template into ('text', str, line) and ('action', str, line) items, trimming as Go does."""
    items = []
    pos = 0
    while True:
        i = text.find("{{", pos)
        if i < 0:
            items.append(("text", text[pos:], text.count("\n", 0, pos) + 1))
            break
        j = text.find("}}", i)
        if j < 0:
            raise TemplateError(f"{name}:{text.count(chr(10), 0, i) + 1}: unclosed action")
        body = text[i + 2 : j]
        line = text.count("\n", 0, i) + 1
        chunk = text[pos:i]
        if body.startswith("- ") or body.startswith("-\n") or body == "-":
            chunk = chunk.rstrip(" \t\r\n")
            body = body[1:]
        end = j + 2
        if body.endswith(" -") or body.endswith("\n-"):
            body = body[:-1]
            while end < len(text) and text[end] in " \t\r\n":
                end += 1
        items.append(("text", chunk, line))
        body = body.strip()
        if body.startswith("/*"):
            if not body.endswith("*/"):
                raise TemplateError(f"{name}:{line}: a comment must be {{{{/* ... */}}}}")
        else:
            items.append(("action", body, line))
        pos = end
    return [it for it in items if not (it[0] == "text" and it[1] == "")]


TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<num>-?\d+)(?![\w.])
    | (?P<assign>:=)
    | (?P<punct>[()|,])
    | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.X,
)


def tokens(where, s):
    out, pos = [], 0
    s = s.rstrip()
    while pos < len(s):
        m = TOKEN.match(s, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"{where}: cannot parse {s[pos:].strip()!r}")
        kind = m.lastgroup
        val = m.group(kind)
        if kind == "str":
            val = json.loads(val)
        elif kind == "raw":
            val = val[1:-1]
        elif kind == "num":
            val = int(val)
        out.append((kind, val))
        pos = m.end()
    return out


# ---- parsing -------------------------------------------------------------------------------------


def parse_pipeline(where, toks):
    """toks -> ('pipe', [command, ...]); a command is a list of operands."""
    cmds, cur, i = [], [], 0
    while i < len(toks):
        kind, val = toks[i]
        if kind == "punct" and val == "|":
            if not cur:
                raise TemplateError(f"{where}: empty command before '|'")
            cmds.append(cur)
            cur = []
        elif kind == "punct" and val == "(":
            depth, j = 1, i + 1
            while j < len(toks) and depth:
                if toks[j] == ("punct", "("):
                    depth += 1
                elif toks[j] == ("punct", ")"):
                    depth -= 1
                j += 1
            if depth:
                raise TemplateError(f"{where}: unbalanced '('")
            cur.append(parse_pipeline(where, toks[i + 1 : j - 1]))
            i = j
            continue
        elif kind in ("punct", "assign"):
            raise TemplateError(f"{where}: unexpected {val!r}")
        else:
            cur.append((kind, val))
        i += 1
    if not cur:
        raise TemplateError(f"{where}: empty pipeline")
    cmds.append(cur)
    return ("pipe", cmds)


def parse(name, text, defines):
    """Builds the node tree of one template; `define` blocks go into `defines`."""
    items = lex(name, text)
    pos = 0

    def block(stop):
        nonlocal pos
        nodes = []
        while pos < len(items):
            kind, body, line = items[pos]
            where = f"{name}:{line}"
            pos += 1
            if kind == "text":
                nodes.append(("text", body))
                continue
            word = body.split(None, 1)[0] if body else ""
            rest = body[len(word) :].strip()
            if word in ("end", "else"):
                if word not in stop:
                    raise TemplateError(f"{where}: unexpected {{{{ {body} }}}}")
                return nodes, word, rest, where
            if word == "if":
                nodes.append(parse_if(where, rest))
            elif word == "range":
                m = re.match(r"(\$[A-Za-z0-9_]+)\s*(?:,\s*(\$[A-Za-z0-9_]+)\s*)?:=\s*(.*)$", rest, re.S)
                names = []
                if m:
                    names = [m.group(1)] + ([m.group(2)] if m.group(2) else [])
                    rest = m.group(3)
                pipe = parse_pipeline(where, tokens(where, rest))
                body_nodes, w, _, _ = block(("end",))
                nodes.append(("range", names, pipe, body_nodes, where))
            elif word == "define":
                toks = tokens(where, rest)
                if len(toks) != 1 or toks[0][0] not in ("str", "raw"):
                    raise TemplateError(f"{where}: define takes one quoted name")
                body_nodes, _, _, _ = block(("end",))
                if toks[0][1] in defines:
                    raise TemplateError(f"{where}: template {toks[0][1]!r} defined twice")
                defines[toks[0][1]] = body_nodes
            elif word in ("with", "template", "block", "break", "continue") or re.match(r"\$\w*\s*:?=", body):
                raise TemplateError(f"{where}: {{{{ {word} }}}} is outside the chart's template subset")
            else:
                nodes.append(("out", parse_pipeline(where, tokens(where, body)), where))
        if stop:
            raise TemplateError(f"{name}: missing {{{{ end }}}}")
        return nodes, None, None, None

    def parse_if(where, rest):
        cond = parse_pipeline(where, tokens(where, rest))
        then, w, wrest, wwhere = block(("end", "else"))
        other = []
        if w == "else":
            if wrest.startswith("if ") or wrest == "if":
                other = [parse_if(wwhere, wrest[2:].strip())]
            elif wrest:
                raise TemplateError(f"{wwhere}: unexpected {{{{ else {wrest} }}}}")
            else:
                other, _, _, _ = block(("end",))
        return ("if", cond, then, other, where)

    nodes, _, _, _ = block(())
    return nodes


# ---- evaluation ----------------------------------------------------------------------------------


def truthy(v):
    return not (v is None or v is False or v == 0 and not isinstance(v, bool) or v in ("", [], {}))


def go_str(where, v):
    if v is None:
        raise TemplateError(f"{where}: no value (a missing or null key)")
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return format(v, "g")
    if isinstance(v, (dict, list)):
        raise TemplateError(f"{where}: a map or list is printed; use toYaml")
    return str(v)


def to_yaml(v):
    if v is None:
        return "null"
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True, width=1000).rstrip("\n")


def indent(n, s):
    pad = " " * n
    return pad + s.replace("\n", "\n" + pad)


def printf(where, fmt, *args):
    out, ai = [], 0
    for m in re.finditer(r"%(.)|[^%]+", fmt):
        if not m.group(1):
            out.append(m.group(0))
            continue
        verb = m.group(1)
        if verb == "%":
            out.append("%")
            continue
        if ai >= len(args):
            raise TemplateError(f"{where}: printf {fmt!r}: too few arguments")
        a = args[ai]
        ai += 1
        if verb in ("s", "v"):
            out.append(go_str(where, a))
        elif verb == "d":
            if not isinstance(a, int) or isinstance(a, bool):
                raise TemplateError(f"{where}: printf %d of {a!r}")
            out.append(str(a))
        elif verb == "q":
            out.append(json.dumps(go_str(where, a)))
        else:
            raise TemplateError(f"{where}: printf verb %{verb} is outside the chart's template subset")
    if ai != len(args):
        raise TemplateError(f"{where}: printf {fmt!r}: too many arguments")
    return "".join(out)


class Renderer:
    def __init__(self, defines):
        self.defines = defines
        self.depth = 0

    def field(self, where, base, path, desc):
        v = base
        for part in path:
            if not isinstance(v, dict) or part not in v:
                raise TemplateError(f"{where}: {desc} has no key {part!r}")
            v = v[part]
        return v

    def operand(self, where, op, dot, scope):
        if isinstance(op, tuple) and op[0] == "pipe":
            return self.pipeline(where, op, dot, scope)
        kind, val = op
        if kind in ("str", "raw", "num"):
            return val
        if kind == "field":
            if val == ".":
                return dot
            return self.field(where, dot, val[1:].split("."), val)
        if kind == "var":
            name, _, path = val.partition(".")
            if name not in scope:
                raise TemplateError(f"{where}: undefined variable {name}")
            return self.field(where, scope[name], path.split(".") if path else [], val)
        if kind == "ident":
            if val in ("true", "false"):
                return val == "true"
            return self.call(where, val, [])
        raise TemplateError(f"{where}: unexpected {val!r}")

    def call(self, where, fn, args):
        def want(n):
            if len(args) != n:
                raise TemplateError(f"{where}: {fn} takes {n} argument(s), got {len(args)}")

        if fn == "include":
            want(2)
            if args[0] not in self.defines:
                raise TemplateError(f"{where}: include of undefined template {args[0]!r}")
            self.depth += 1
            if self.depth > 50:
                raise TemplateError(f"{where}: include nested too deeply")
            try:
                return self.nodes(self.defines[args[0]], args[1], {"$": args[1]})
            finally:
                self.depth -= 1
        if fn == "toYaml":
            want(1)
            return to_yaml(args[0])
        if fn in ("nindent", "indent"):
            want(2)
            if not isinstance(args[0], int):
                raise TemplateError(f"{where}: {fn} needs a number first")
            s = indent(args[0], go_str(where, args[1]))
            return "\n" + s if fn == "nindent" else s
        if fn == "quote":
            if not args:
                raise TemplateError(f"{where}: quote takes at least one argument")
            return " ".join(json.dumps(go_str(where, a)) for a in args)
        if fn == "default":
            want(2)
            return args[1] if truthy(args[1]) else args[0]
        if fn == "printf":
            if not args or not isinstance(args[0], str):
                raise TemplateError(f"{where}: printf needs a format string")
            return printf(where, *args)
        if fn == "not":
            want(1)
            return not truthy(args[0])
        if fn == "fail":
            want(1)
            raise TemplateError(f"{where}: fail: {go_str(where, args[0])}")
        raise TemplateError(f"{where}: function {fn!r} is outside the chart's template subset")

    def pipeline(self, where, pipe, dot, scope):
        val, first = None, True
        for cmd in pipe[1]:
            head = cmd[0]
            if isinstance(head, tuple) and head[0] == "ident" and head[1] not in ("true", "false"):
                args = [self.operand(where, op, dot, scope) for op in cmd[1:]]
                if not first:
                    args.append(val)
                val = self.call(where, head[1], args)
            else:
                if len(cmd) != 1 or not first:
                    raise TemplateError(f"{where}: only a function can take arguments or a piped value")
                val = self.operand(where, head, dot, scope)
            first = False
        return val

    def nodes(self, nodes, dot, scope):
        out = []
        for n in nodes:
            kind = n[0]
            if kind == "text":
                out.append(n[1])
            elif kind == "out":
                out.append(go_str(n[2], self.pipeline(n[2], n[1], dot, scope)))
            elif kind == "if":
                _, cond, then, other, where = n
                out.append(self.nodes(then if truthy(self.pipeline(where, cond, dot, scope)) else other, dot, scope))
            elif kind == "range":
                _, names, pipe, body, where = n
                seq = self.pipeline(where, pipe, dot, scope)
                if isinstance(seq, dict):
                    pairs = [(k, seq[k]) for k in sorted(seq)]
                elif isinstance(seq, list):
                    pairs = list(enumerate(seq))
                elif seq is None:
                    pairs = []
                else:
                    raise TemplateError(f"{where}: range over {type(seq).__name__}, not a list or map")
                for k, v in pairs:
                    inner = dict(scope)
                    if len(names) == 1:
                        inner[names[0]] = v
                    elif len(names) == 2:
                        inner[names[0]], inner[names[1]] = k, v
                    out.append(self.nodes(body, v, inner))
        return "".join(out)


# ---- the chart -----------------------------------------------------------------------------------


def merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


def set_value(values, expr):
    """--set a.b=c: one key path (\\. keeps a dot inside a key); the value is parsed as YAML."""
    if "=" not in expr:
        raise TemplateError(f"--set {expr!r}: expected key.path=value")
    path, raw = expr.split("=", 1)
    keys = [k.replace("\0", ".") for k in path.replace("\\.", "\0").split(".")]
    if not all(keys):
        raise TemplateError(f"--set {expr!r}: empty key")
    d = values
    for k in keys[:-1]:
        if not isinstance(d.get(k), dict):
            d[k] = {}
        d = d[k]
    d[keys[-1]] = yaml.safe_load(raw) if raw else ""


def render(chart=CHART, release="drover", namespace="drover", values_files=(), sets=()):
    """Renders every template of the chart: {template file name: text}; empty renders are left out."""
    with open(os.path.join(chart, "Chart.yaml"), encoding="utf-8") as fh:
        meta = yaml.safe_load(fh)
    with open(os.path.join(chart, "values.yaml"), encoding="utf-8") as fh:
        values = yaml.safe_load(fh) or {}
    for f in values_files:
        with open(f, encoding="utf-8") as fh:
            merge(values, yaml.safe_load(fh) or {})
    for s in sets:
        set_value(values, s)
    ctx = {
        "Values": values,
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {"Name": meta.get("name"), "Version": meta.get("version"), "AppVersion": meta.get("appVersion")},
    }
    tdir = os.path.join(chart, "templates")
    defines, trees = {}, {}
    for f in sorted(os.listdir(tdir)):
        with open(os.path.join(tdir, f), encoding="utf-8") as fh:
            text = fh.read()
        if f.endswith(".tpl"):
            rest = parse(f, text, defines)
            if any(n[0] != "text" or n[1].strip() for n in rest):
                raise TemplateError(f"{f}: a helper file may hold only define blocks")
        elif f.endswith((".yaml", ".yml")):
            trees[f] = parse(f, text, defines)
        elif not f.startswith("."):
            raise TemplateError(f"templates/{f}: not a .yaml or .tpl file")
    r = Renderer(defines)
    out = {}
    for f, tree in trees.items():
        text = r.nodes(tree, copy.deepcopy(ctx), {"$": ctx})
        if text.strip():
            out[f] = text.strip("\n") + "\n"
            for n, doc in enumerate(out[f].split("\n---\n")):
                try:
                    list(yaml.safe_load_all(doc))
                except yaml.YAMLError as e:
                    raise TemplateError(f"{f}: rendered document {n + 1} is not YAML: {e}")
    return out


def with_headers(rendered):
    return {f: HEADER.format(name=f) + text for f, text in rendered.items()}


def differences(rendered, out_dir=OUT):
    """Files of out_dir that differ from a fresh render (with headers), or are missing or extra."""
    want = with_headers(rendered)
    diffs = []
    for f, text in sorted(want.items()):
        path = os.path.join(out_dir, f)
        if not os.path.exists(path):
            diffs.append(f"k8s/{f} is missing (run tests/k8s/render_chart.py --write)")
        elif open(path, encoding="utf-8").read() != text:
            diffs.append(f"k8s/{f} differs from the chart's render (edit the chart, then tests/k8s/render_chart.py --write)")
    for f in sorted(os.listdir(out_dir)):
        if f.endswith((".yaml", ".yml")) and f not in want and f not in HAND_WRITTEN:
            diffs.append(f"k8s/{f} is not rendered from the chart: add it to the chart or to HAND_WRITTEN")
    return diffs


# ---- self-test: constructs outside the subset are errors ----------------------------------------

SELF_TEST_BAD = [
    ("{{ .Values.nope }}", "no key"),
    ("{{ with .Values }}x{{ end }}", "outside"),
    ("{{ upper .Release.Name }}", "outside"),
    ("{{ if .Values.a }}x", "missing"),
    ("x{{ end }}", "unexpected"),
    ("{{ .Values }}", "toYaml"),
    ('{{ printf "%x" 1 }}', "outside"),
    ('{{ include "nope" . }}', "undefined"),
    ("{{ $x := 1 }}", "outside"),
    ('{{ fail "boom" }}', "boom"),
    ("{{ .Values.a ! }}", "cannot parse"),
]
SELF_TEST_GOOD = [
    ("a\n  {{- .Values.a }}\n", "a1\n"),
    ("{{ .Values.a -}}\n  b", "1b"),
    ('{{ if not .Values.b }}no{{ else if .Values.a }}a{{ else }}x{{ end }}', "no"),
    ('{{ range $k, $v := .Values.m }}{{ $k }}={{ $v }};{{ end }}', "x=1;y=2;"),
    ("{{ range .Values.l }}[{{ . }}]{{ end }}", "[p][q]"),
    ('{{ define "t" }}<{{ .Release.Name }}>{{ end }}{{ include "t" . | quote }}', '"<rel>"'),
    ('{{ printf "%s-%d" .Release.Name .Values.a }}|{{ default "d" .Values.b }}', "rel-1|d"),
    ("k:{{ toYaml .Values.m | nindent 2 }}", "k:\n  x: 1\n  y: 2"),
    ("{{/* a comment */}}{{ $.Chart.Version }}", "9.9.9"),
]


def self_test():
    ctx = {"Values": {"a": 1, "b": "", "m": {"y": 2, "x": 1}, "l": ["p", "q"]},
           "Release": {"Name": "rel", "Namespace": "ns"}, "Chart": {"Version": "9.9.9"}}
    failures = []
    for src, expect in SELF_TEST_BAD:
        try:
            defines = {}
            Renderer(defines).nodes(parse("t", src, defines), ctx, {"$": ctx})
            failures.append(f"render self-test: {src!r} rendered without an error")
        except TemplateError as e:
            if expect not in str(e):
                failures.append(f"render self-test: {src!r}: error {e} does not mention {expect!r}")
    for src, expect in SELF_TEST_GOOD:
        try:
            defines = {}
            got = Renderer(defines).nodes(parse("t", src, defines), ctx, {"$": ctx})
            if got != expect:
                failures.append(f"render self-test: {src!r} gave {got!r}, expected {expect!r}")
        except TemplateError as e:
            failures.append(f"render self-test: {src!r}: {e}")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chart", default=CHART)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--release", default="drover")
    ap.add_argument("--namespace", default="drover")
    ap.add_argument("-f", "--values", action="append", default=[])
    ap.add_argument("--set", action="append", default=[])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true", help="regenerate the manifests of --out")
    g.add_argument("--check", action="store_true", help="fail when --out differs from a fresh render")
    g.add_argument("--self-test", action="store_true", help="check the renderer itself")
    a = ap.parse_args()
    if a.self_test:
        failures = self_test()
        for f in failures:
            print(f"FAIL {f}")
        print("ok: renderer self-test" if not failures else f"{len(failures)} problem(s) found")
        return 1 if failures else 0
    try:
        rendered = render(a.chart, a.release, a.namespace, a.values, a.set)
    except (TemplateError, OSError, yaml.YAMLError) as e:
        print(f"FAIL {e}", file=sys.stderr)
        return 1
    if a.write:
        if a.values or a.set or a.release != "drover" or a.namespace != "drover":
            print("FAIL --write renders the default values only (k8s/ is the default install)", file=sys.stderr)
            return 1
        for f, text in with_headers(rendered).items():
            with open(os.path.join(a.out, f), "w", encoding="utf-8") as fh:
                fh.write(text)
        print(f"wrote {len(rendered)} files to {a.out}")
        return 0
    if a.check:
        diffs = differences(rendered, a.out)
        for d in diffs:
            print(f"FAIL {d}")
        return 1 if diffs else 0
    for f, text in rendered.items():
        sys.stdout.write(f"---\n# Source: drover/templates/{f}\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
