#!/usr/bin/env python3
"""Checks that deploy/container/Containerfile builds from a fresh clone, without a container engine.

The build stage's COPY lines (minus the patterns of Containerfile.dockerignore) are replayed into a
scratch folder, exactly as an engine would lay out the build context under WORKDIR. Then:

- `cmake -S scratch -B scratch/build` with the Containerfile's -D options (tests off) must succeed, so
  every folder of the add_subdirectory chain is in the context;
- a dry run of the build (`make -n -k`) must find every source-tree input of every rule, which catches files read
  only at build time, such as docs/openapi.yaml that the ingress embeds.

The runtime stage's package list is compared with the libraries the built binaries load by
tests/k8s/check_manifests.py (check_containerfile).

Finally the check leaves each top-level COPY out in turn and fails unless the scratch build then
fails: every COPY is needed, and the check can fail.

Usage: tests/k8s/check_container.py [--root DIR]
Exit status 0 when the context is complete, 1 otherwise.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

CONTAINERFILE = "deploy/container/Containerfile"
IGNOREFILE = "deploy/container/Containerfile.dockerignore"


# ---- parsing -------------------------------------------------------------------------------------


def logical_lines(text):
    """Containerfile instructions with their continuation lines joined and comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        if not cur and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        if cur.strip():
            out.append(cur.strip())
        cur = ""
    if cur.strip():
        out.append(cur.strip())
    return out


def build_stage(text):
    """The first stage: (list of (src list, dest, workdir)), cmake -D options). Raises ValueError."""
    copies, workdir, defs, stage = [], "/", None, 0
    for ins in logical_lines(text):
        word, _, rest = ins.partition(" ")
        word = word.upper()
        if word == "FROM":
            stage += 1
            if stage > 1:
                break
        elif word == "WORKDIR":
            rest = rest.strip()
            workdir = rest if rest.startswith("/") else os.path.join(workdir, rest)
        elif word == "COPY":
            args = rest.split()
            if any(a.startswith("--from") for a in args):
                continue
            args = [a for a in args if not a.startswith("--")]
            if args and args[0].startswith("["):
                raise ValueError(f"COPY in JSON form is not supported by this check: {ins}")
            if len(args) < 2:
                raise ValueError(f"COPY without a destination: {ins}")
            copies.append((args[:-1], args[-1], workdir))
        elif word == "RUN" and re.search(r"\bcmake\s+-S\b", rest):
            defs = re.findall(r"(-D\S+)", rest)
    if stage == 0:
        raise ValueError("no FROM line")
    if defs is None:
        raise ValueError("the build stage runs no `cmake -S`")
    return copies, defs


def ignore_patterns(text):
    """.dockerignore lines as (negated, regex) in order; the last matching pattern decides."""
    pats = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        neg = s.startswith("!")
        s = s[1:] if neg else s
        s = s.strip("/")
        rx, i = "", 0
        while i < len(s):
            if s.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
                continue
            if s.startswith("**", i):
                rx += ".*"
                i += 2
                continue
            ch = s[i]
            rx += "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch)
            i += 1
        pats.append((neg, re.compile(rx + r"\Z")))
    return pats


def ignored(rel, pats):
    """True when `rel` (a context path) or one of its parent folders is excluded."""
    parts = rel.split("/")
    out = False
    for neg, rx in pats:
        for n in range(1, len(parts) + 1):
            if rx.match("/".join(parts[:n])):
                out = not neg
                break
    return out


# ---- the scratch context -------------------------------------------------------------------------


def lay_out(root, copies, pats, scratch, skip=None):
    """Replays the COPY lines into scratch (the WORKDIR of the build); returns the problems found."""
    problems = []
    for srcs, dest, workdir in copies:
        for src in srcs:
            if src == skip:
                continue
            full = os.path.join(root, src)
            if not os.path.exists(full):
                problems.append(f"COPY {src}: no such path in the repository")
                continue
            target = dest if dest.startswith("/") else os.path.join(workdir, dest)
            rel_target = os.path.relpath(target, workdir)
            if rel_target.startswith(".."):
                continue  # outside the source tree (e.g. /tmp/packages.txt): not a build input
            base = os.path.join(scratch, rel_target)
            if os.path.isfile(full):
                if not ignored(os.path.normpath(src), pats):
                    if dest.endswith("/") or rel_target == ".":
                        base = os.path.join(base, os.path.basename(src))
                    os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
                    shutil.copy2(full, base)
                continue
            for dirpath, dirnames, files in os.walk(full):
                rel_dir = os.path.relpath(dirpath, root)
                dirnames[:] = [d for d in dirnames if not ignored(os.path.normpath(os.path.join(rel_dir, d)), pats)]
                for f in files:
                    rel = os.path.normpath(os.path.join(rel_dir, f))
                    if ignored(rel, pats):
                        continue
                    out = os.path.join(base, os.path.relpath(os.path.join(dirpath, f), full))
                    os.makedirs(os.path.dirname(out), exist_ok=True)
                    shutil.copy2(os.path.join(dirpath, f), out)
    return problems


def try_build(scratch, defs):
    """Configures and dry-runs the build in scratch; returns None or the error text."""
    build = os.path.join(scratch, "build")
    r = subprocess.run(["cmake", "-G", "Unix Makefiles", "-S", scratch, "-B", build] + defs,
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return "cmake configure failed: " + tail(r.stderr or r.stdout)
    # A dry run of recursive Makefiles cannot see libraries it did not build, so it reports those too;
    # only inputs from the source tree (absolute paths outside build/) are missing files of the context.
    r = subprocess.run(["cmake", "--build", build, "--", "-n", "-k"], capture_output=True, text=True, timeout=300)
    missing = sorted({t for t in re.findall(r"No rule to make target '([^']+)'", r.stderr + r.stdout)
                      if os.path.isabs(t) and not t.startswith(build + os.sep)})
    if missing:
        return "build inputs missing from the context: " + ", ".join(os.path.relpath(t, scratch) for t in missing)
    return None


def tail(text, n=4):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def check(root, defs_want="-DDR_BUILD_TESTS=OFF"):
    errors = []
    with open(os.path.join(root, CONTAINERFILE), encoding="utf-8") as fh:
        text = fh.read()
    try:
        copies, defs = build_stage(text)
    except ValueError as e:
        return [f"{CONTAINERFILE}: {e}"], []
    if defs_want not in defs:
        errors.append(f"{CONTAINERFILE}: the build stage's cmake does not pass {defs_want}")
        defs.append(defs_want)
    pats = []
    if os.path.exists(os.path.join(root, IGNOREFILE)):
        with open(os.path.join(root, IGNOREFILE), encoding="utf-8") as fh:
            pats = ignore_patterns(fh.read())
    scratch = tempfile.mkdtemp(prefix="drover-context-")
    try:
        errors += [f"{CONTAINERFILE}: {p}" for p in lay_out(root, copies, pats, scratch)]
        if not os.path.exists(os.path.join(scratch, "CMakeLists.txt")):
            errors.append(f"{CONTAINERFILE}: the build context has no CMakeLists.txt under WORKDIR")
        else:
            e = try_build(scratch, defs)
            if e:
                errors.append(f"{CONTAINERFILE}: an image build from a fresh clone fails: {e}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return errors, (copies, defs, pats)


def self_test(root, copies, defs, pats):
    """Leaves each source tree COPY out in turn: the scratch build must then fail."""
    failures = []
    for srcs, _, _ in copies:
        for src in srcs:
            if src == "CMakeLists.txt" or src.startswith("deploy/"):
                continue
            scratch = tempfile.mkdtemp(prefix="drover-context-")
            try:
                lay_out(root, copies, pats, scratch, skip=src)
                if try_build(scratch, defs) is None:
                    failures.append(f"self-test: the build still works without COPY {src}: the COPY is useless or the check cannot fail")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    # The ignore patterns: tests/ is excluded, so a file under it must not reach the context.
    if pats and not ignored("tests/k8s/check_container.py", pats):
        failures.append("self-test: Containerfile.dockerignore does not exclude tests/")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
    a = ap.parse_args()
    if not shutil.which("cmake") or not shutil.which("make"):
        print("FAIL cmake and make are needed to configure the build context")
        return 1
    errors, parsed = check(a.root)
    for e in errors:
        print(f"FAIL {e}")
    if errors:
        print(f"{len(errors)} problem(s) found")
        return 1
    copies, defs, pats = parsed
    failures = self_test(a.root, copies, defs, pats)
    for f in failures:
        print(f"FAIL {f}")
    if failures:
        return 1
    n = sum(len(s) for s, _, _ in copies)
    print(f"ok: the {n} COPY sources of the build stage configure and dry-run with {' '.join(defs)}; "
          "leaving any one out breaks the build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
