#!/usr/bin/env python3
"""Browser tests of the web console: one real stack (tests/integration/harness.py), simulated devices,
and console.test.mjs driving Debian's headless Chromium through playwright-core.

Steps: npm installs playwright-core (its browser download off) into the output folder, reused while
package.json is unchanged; deploy/local/console-vendor.sh fills the vendor folder; the stack starts
with two ingress nodes (the second with a 4 s login lifetime for the expired-session case); devices
that acknowledge on their own connect over MQTT; then node runs the scenarios.

Output folder: $DROVER_BROWSER_OUT, else <build>/browser next to $DROVER_BIN_DIR. Screenshots go to its
browser-screenshots/. Exit status: node's, or 1 when the stack reports a crash or sanitizer finding.
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import harness  # noqa: E402

CHROMIUM = os.environ.get("DROVER_CHROMIUM", "/usr/bin/chromium")
SHORT_TTL_S = 4


def out_dir():
    d = os.environ.get("DROVER_BROWSER_OUT")
    if not d:
        d = os.path.join(os.path.dirname(os.path.abspath(harness.BIN_DIR)), "browser")
    os.makedirs(d, exist_ok=True)
    return d


def need(path_or_cmd, what):
    found = path_or_cmd if os.path.isabs(path_or_cmd) and os.access(path_or_cmd, os.X_OK) else shutil.which(path_or_cmd)
    if not found:
        sys.exit("browser tests: %s not found (%s); see deploy/local/packages-test.txt" % (path_or_cmd, what))
    return found


def npm_install(out):
    """playwright-core into out/npm, again only when package.json changed."""
    npm_dir = os.path.join(out, "npm")
    os.makedirs(npm_dir, exist_ok=True)
    src = os.path.join(HERE, "package.json")
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    stamp = os.path.join(npm_dir, ".installed")
    mod = os.path.join(npm_dir, "node_modules", "playwright-core")
    if os.path.isdir(mod) and os.path.exists(stamp) and open(stamp).read() == digest:
        return os.path.join(npm_dir, "node_modules")
    shutil.copy(src, os.path.join(npm_dir, "package.json"))
    env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1", PUPPETEER_SKIP_DOWNLOAD="1")
    r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=npm_dir, env=env,
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        sys.exit("browser tests: npm install failed:\n%s%s" % (r.stdout, r.stderr))
    with open(stamp, "w") as f:
        f.write(digest)
    return os.path.join(npm_dir, "node_modules")


def preflight(port):
    """Fails at once, with the reason, when the ingress does not serve the console at all."""
    for path in ("/admin/login.html", "/vendor/chart.js/chart.min.js"):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        if status != 200:
            raise harness.HarnessError("the ingress answers %s for %s: it does not serve the console" % (status, path))


def main():
    need(CHROMIUM, "Debian package chromium")
    node = need("node", "Node.js")
    need("npm", "npm")
    out = out_dir()
    modules = npm_install(out)
    vendor = os.path.join(out, "vendor")
    subprocess.run([os.path.join(ROOT, "deploy", "local", "console-vendor.sh"), vendor], check=True, timeout=300)
    shots = os.path.join(out, "browser-screenshots")
    shutil.rmtree(shots, ignore_errors=True)
    os.makedirs(shots)

    work = tempfile.mkdtemp(prefix="drover-browser-")
    port, short_port = harness.free_port(), harness.free_port()
    common = {"auth.bcrypt_cost": 4, "http.key_cache_ms": 300, "http.vendor_dir": vendor,
              "http.console_dir": os.path.join(ROOT, "services", "ingress", "console"),
              "auth.login_failures": 1000}
    stack = harness.Stack(work, dict(common, **{"http.port": port}))
    rc = 1
    try:
        stack.start()
        short = stack.add_ingress(overrides={"http.port": short_port, "auth.token_ttl_s": SHORT_TTL_S,
                                             "registry.bootstrap": 0})
        m = stack.ingress.wait_log(r"created operator 'admin' with password (\S+)", 20)
        harness.wait_until(lambda: harness.tcp_ready(short_port), 20, msg="the second ingress never listened")
        # devices that acknowledge by themselves; "quiet" never connects, so its messages stay pending
        preflight(port)
        for d in ("b-dev", "b-r1", "b-r2", "b-r3"):
            stack.device(d, qos=1, auto_ack=True)
        env = dict(os.environ, NODE_PATH=modules, DROVER_BASE_URL="http://127.0.0.1:%d" % port,
                   DROVER_SHORT_URL="http://127.0.0.1:%d" % short_port, DROVER_SHORT_TTL_S=str(SHORT_TTL_S),
                   DROVER_ADMIN_PASSWORD=m.group(1), DROVER_SHOTS=shots, DROVER_CHROMIUM=CHROMIUM,
                   DROVER_CONSOLE_DIR=os.path.join(ROOT, "services", "ingress", "console"))
        # node resolves bare imports from the script's folder upwards, not NODE_PATH, for ES modules:
        # run a copy placed next to node_modules.
        script = os.path.join(os.path.dirname(modules), "console.test.mjs")
        shutil.copy(os.path.join(HERE, "console.test.mjs"), script)
        args = [node, "--test", "--test-concurrency=1", "--test-reporter=spec", script]
        if os.environ.get("DROVER_BROWSER_ONLY"):
            args[2:2] = ["--test-name-pattern=" + os.environ["DROVER_BROWSER_ONLY"]]
        rc = subprocess.run(args, env=env, timeout=240).returncode
        if rc != 0:
            print(stack.log_tails(40))
    finally:
        problems = stack.close()
        shutil.rmtree(work, ignore_errors=True)
    if problems:
        print("stack problems:\n" + "\n".join(problems))
        rc = rc or 1
    print("screenshots: %s" % shots)
    return rc


if __name__ == "__main__":
    sys.exit(main())
