"""Integration-test harness for Drover: real redis-server, nats-server and mosquitto on random loopback
ports, the drover-ingress / drover-dispatcher binaries under test, and MQTT device/producer simulators.

Everything here is reusable by other suites (fault tests): servers and nodes can be stopped, killed
(SIGKILL) and started again with the same data directory and port. Processes are only ever ended by the
PID this module started.

Time handling: every wait is bounded (wait_until); nothing sleeps and then asserts without a bound.
"""
import json
import os
import pwd
import random
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt
import redis as redislib

BIN_DIR = os.environ.get("DROVER_BIN_DIR", "/work/main/build/bin")
REDIS_SERVER = os.environ.get("DROVER_REDIS_SERVER", "/usr/bin/redis-server")
NATS_SERVER = os.environ.get("DROVER_NATS_SERVER", "/usr/sbin/nats-server")
MOSQUITTO = os.environ.get("DROVER_MOSQUITTO", "/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = os.environ.get("DROVER_MOSQUITTO_PASSWD", "/usr/bin/mosquitto_passwd")

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer")

# Test-friendly defaults for both services (the stack fixture applies them; tests override per key).
TEST_DEFAULTS = {
    "log.level": "verbose",
    "cluster.shards": "16",
    "dispatch.interval_ms": "300",
    "dispatch.ack_timeout_ms": "1500",
    "dispatch.retry_max_ms": "3000",
    "dispatch.tick_ms": "20",
    "metrics.flush_ms": "200",
    # Faster hand-over after a kill -9 of a dispatcher (restart tests); renew <= ttl/2 is required.
    "lease.ttl_ms": "4000",
    "lease.renew_ms": "1000",
    # No REST API unless a test asks for it (avoids port clashes on 8080).
    "http.port": "0",
    # No dispatcher metrics listener unless a test asks for it (avoids clashes on 9102).
    "metrics.port": "0",
}


class HarnessError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------
# small utilities

_handed_out_ports = set()
_port_lock = threading.Lock()


def _server_ports():
    """The range free_port hands out: just below the kernel's ephemeral range. A port chosen there
    cannot be taken as the source port of some outgoing connection (a client of the broker, say)
    between the choice and the bind of the server it is meant for, which a port from the
    ephemeral range could."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(1024, low - 12000), low - 1


def free_port():
    """A currently free TCP port on 127.0.0.1, never handed out twice by this process."""
    lo, hi = _server_ports()
    with _port_lock:
        for _ in range(500):
            port = random.randint(lo, hi)
            if port in _handed_out_ports:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                s.close()
            _handed_out_ports.add(port)
            return port
    raise HarnessError("no free port")


def now_ms():
    return int(time.time() * 1000)


def wait_until(pred, timeout, interval=0.02, msg=None):
    """Polls pred() until it returns a truthy value (returned) or `timeout` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except AssertionError as e:  # a predicate may assert; keep polling
            last_exc = e
        if time.monotonic() >= deadline:
            text = msg() if callable(msg) else msg
            text = text or "condition not met"
            if last_exc:
                text += " (last: %s)" % last_exc
            raise AssertionError("timed out after %.1fs: %s" % (timeout, text))
        time.sleep(interval)


def stays_true(pred, duration, interval=0.02, msg=None):
    """Asserts that pred() stays truthy for `duration` seconds (bounded negative check)."""
    deadline = time.monotonic() + duration
    while True:
        if not pred():
            text = msg() if callable(msg) else msg
            raise AssertionError("condition broken: %s" % (text or "predicate became false"))
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def tcp_ready(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pid_running(pid):
    """True while `pid` exists and is not a zombie (for processes this harness did not start itself)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def tail(path, lines=60):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return "(no log %s)" % path
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:])


def json_keys_in_order(raw):
    """Top-level keys of a JSON object in the order they appear in the raw bytes."""
    pairs = json.loads(raw, object_pairs_hook=lambda p: p)
    return [k for k, _ in pairs]


def shard_of(device_id, shards):
    """A device's shard: FNV-1a-64 of the id's bytes mod the shard count (common/src/shard.c)."""
    h = 0xcbf29ce484222325
    for b in device_id.encode():
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h % shards


def clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DR_")}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:halt_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


# ---------------------------------------------------------------------------------------------------
# processes


class LineProgram:
    """A test driver program (tests/mqttc/mqttc_live, tests/redis/redis_live) run with key=value
    arguments: commands go to its stdin one per line, the lines it prints are collected by a thread,
    and its stderr goes to log_path."""

    def __init__(self, path, env_var, log_path, name, **opts):
        if not os.access(path, os.X_OK):
            raise AssertionError("%s not built (set %s): %s" % (os.path.basename(path), env_var, path))
        self.name = name
        self.log_path = log_path
        args = [path] + ["%s=%s" % (k, v) for k, v in opts.items()]
        with open(self.log_path, "ab") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         env=clean_env())
        self.lines = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            with self.lock:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def snapshot(self):
        with self.lock:
            return list(self.lines)

    def send(self, *cmds):
        for c in cmds:
            self.proc.stdin.write((c + "\n").encode())
        self.proc.stdin.flush()

    def tail(self, n=40):
        return tail(self.log_path, n)

    def failed(self, line):
        """An exception to raise at once for an output line that means failure, or None."""
        return None

    def wait_line(self, pattern, timeout, since=0):
        """Waits for a line (from index `since`) matching regex `pattern`; returns the match. Fails at
        once when the program exits or prints a line failed() objects to."""
        rx = re.compile(pattern)

        def found():
            for line in self.snapshot()[since:]:
                mt = rx.match(line)
                if mt:
                    return mt
                err = self.failed(line)
                if err is not None:
                    raise err
            if self.proc.poll() is not None:
                raise self.exited()
            return None
        return wait_until(found, timeout, interval=0.02,
                          msg=lambda: "%s never printed %r; output:\n%s\nlog:\n%s" % (
                              self.name, pattern, "\n".join(self.snapshot()[-30:]), self.tail()))

    def exited(self):
        return AssertionError("%s exited with %s:\n%s" % (self.name, self.proc.returncode, self.tail()))


class TlsFiles:
    """Throwaway certificates made with the openssl CLI: a CA, a server certificate for localhost, 127.0.0.1
    and ::1, a client certificate, both signed by that CA, and a second, unrelated CA (a "wrong CA" that signed
    nothing we serve). All keys are P-256 and unencrypted; certificates are valid for two days."""

    def __init__(self, directory):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.ca, self.ca_key = self._path("ca.pem"), self._path("ca.key")
        self.other_ca, self.other_ca_key = self._path("other-ca.pem"), self._path("other-ca.key")
        self.server, self.server_key = self._path("server.pem"), self._path("server.key")
        self.client, self.client_key = self._path("client.pem"), self._path("client.key")
        self._make_ca(self.ca, self.ca_key, "Drover Test CA")
        self._make_ca(self.other_ca, self.other_ca_key, "Unrelated Test CA")
        self._make_leaf(self.server, self.server_key, "localhost",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n")
        self._make_leaf(self.client, self.client_key, "drover-test-client", "extendedKeyUsage=clientAuth\n")

    def _path(self, name):
        return os.path.join(self.dir, name)

    @staticmethod
    def _openssl(*args):
        out = subprocess.run(["openssl"] + list(args), capture_output=True, timeout=30)
        if out.returncode != 0:
            raise HarnessError("openssl %s failed: %s" % (args[0], out.stderr.decode(errors="replace")))

    def _make_ca(self, cert, key, cn):
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=%s" % cn)

    def _make_leaf(self, cert, key, cn, extensions):
        csr, ext = cert + ".csr", cert + ".ext"
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n" + extensions)
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", key, "-out", csr, "-subj", "/CN=%s" % cn)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
                      "-days", "2", "-extfile", ext, "-out", cert)

    def client_context(self, ca=None):
        """An ssl.SSLContext that trusts ca (default: our CA) and checks the host name."""
        import ssl
        return ssl.create_default_context(cafile=ca or self.ca)


class NatsSubscriber:
    """A minimal NATS client on a raw socket (plain, or TLS when tls is a TlsFiles): connects, subscribes to
    one subject and collects (subject, payload) pairs on a background thread. Enough to watch the events
    Drover publishes without a NATS client library."""

    def __init__(self, server, subject, tls=None, timeout=10):
        self.messages = []
        self.lock = threading.Lock()
        self.closed = False
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
        f = sock.makefile("rb")
        info = f.readline()
        if not info.startswith(b"INFO"):
            raise HarnessError("NATS: no INFO: %r" % info[:100])
        if tls is not None:
            sock = tls.client_context().wrap_socket(sock, server_hostname="127.0.0.1")
            f = sock.makefile("rb")
        self.sock, self.file = sock, f
        conn = {"verbose": False, "pedantic": False, "user": server.user, "pass": server.password,
                "tls_required": tls is not None, "name": "test-subscriber", "lang": "python", "version": "0"}
        sock.sendall(("CONNECT %s\r\nSUB %s 1\r\nPING\r\n" % (json.dumps(conn), subject)).encode())
        while True:
            line = f.readline()
            if not line or line.startswith(b"-ERR"):
                raise HarnessError("NATS subscribe failed: %r" % line)
            if line.startswith(b"PONG"):
                break
        sock.settimeout(None)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while not self.closed:
                line = self.file.readline()
                if not line:
                    return
                if line.startswith(b"PING"):
                    self.sock.sendall(b"PONG\r\n")
                elif line.startswith(b"MSG "):
                    parts = line.split()
                    payload = self.file.read(int(parts[-1]) + 2)[:-2]
                    with self.lock:
                        self.messages.append((parts[1].decode(), payload))
        except (OSError, ValueError):
            return

    def payloads(self):
        with self.lock:
            return [p for _, p in self.messages]

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


class Proc:
    """A child process with a log file, restartable with the same arguments. Ended only by its PID."""

    name = "proc"

    def __init__(self, workdir, log_name):
        self.workdir = workdir
        self.log_path = os.path.join(workdir, log_name)
        self.proc = None
        self.expected_dead = True  # False while we believe it should be running
        self.exit_codes = []  # (how, returncode) for every stop/kill we did

    def argv(self):
        raise NotImplementedError

    def env(self):
        return None

    def ready(self):
        return True

    def start(self, wait=True, timeout=20):
        if self.proc and self.proc.poll() is None:
            raise HarnessError("%s already running" % self.name)
        logf = open(self.log_path, "ab")
        logf.write(("\n===== start %s at %s =====\n" % (self.name, time.strftime("%H:%M:%S"))).encode())
        logf.flush()
        self.proc = subprocess.Popen(self.argv(), stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self.env(), cwd=self.workdir)
        logf.close()
        self.expected_dead = False
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=20):
        def ok():
            if self.proc.poll() is not None:
                raise HarnessError("%s exited with %s during start-up:\n%s" % (self.name, self.proc.returncode,
                                                                               tail(self.log_path)))
            return self.ready()
        wait_until(ok, timeout, interval=0.05, msg="%s not ready" % self.name)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        """SIGTERM, bounded wait; returns the exit code (SIGKILLs and returns None if it did not exit)."""
        if self.proc is None:
            return None
        self.expected_dead = True
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                self.exit_codes.append(("sigterm-timeout", None))
                return None
        rc = self.proc.returncode
        self.exit_codes.append(("sigterm", rc))
        return rc

    def kill(self):
        """SIGKILL (kill -9) and reap."""
        if self.proc is None:
            return None
        self.expected_dead = True
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self.exit_codes.append(("sigkill", self.proc.returncode))
        return self.proc.returncode

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self, kill=False, wait=True):
        self.kill() if kill else self.stop()
        return self.start(wait=wait)

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def wait_log(self, pattern, timeout, since=0):
        """Waits until the log (from byte offset `since`) matches regex `pattern`; returns the match."""
        rx = re.compile(pattern)

        def found():
            return rx.search(self.log_text()[since:])
        return wait_until(found, timeout, interval=0.05, msg="%s log never matched %r" % (self.name, pattern))

    def tail(self, lines=60):
        return tail(self.log_path, lines)


class RedisServer(Proc):
    def __init__(self, workdir, port=None, password=None):
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        super().__init__(self.dir, "redis.log")
        self.name = "redis"
        self.port = port or free_port()
        self.password = password or secrets.token_hex(12)
        self.conf = os.path.join(self.dir, "redis.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join([
                "bind 127.0.0.1",
                "port %d" % self.port,
                "protected-mode yes",
                "daemonize no",
                'dir "%s"' % self.dir,
                "appendonly yes",
                "appendfsync always",
                'save ""',
                "requirepass %s" % self.password,
                "maxmemory-policy noeviction",
                # the memory settings every Redis we ship has (deploy/local/redis-common.conf)
                "hash-max-listpack-value 1024",
                "stream-node-max-bytes 512",
                'logfile ""',
            ]) + "\n")

    def argv(self):
        return [REDIS_SERVER, self.conf]

    def client(self, decode=True):
        return redislib.Redis(host="127.0.0.1", port=self.port, password=self.password, decode_responses=decode,
                              socket_timeout=5, socket_connect_timeout=2)

    def ready(self):
        if not tcp_ready(self.port):
            return False
        try:
            c = self.client()
            ok = c.ping()
            c.close()
            return ok
        except redislib.exceptions.BusyLoadingError:
            return False
        except redislib.exceptions.RedisError:
            return False


class NatsServer(Proc):
    """One nats-server. Alone by default; as a member of a cluster (NatsCluster) it also gets a server name, a
    route listener, the routes to its peers and a monitoring port (GET /connz, /routez)."""

    def __init__(self, workdir, port=None, name="nats", user=None, password=None, cluster_port=None, routes=(),
                 monitor_port=None, tls=None):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        super().__init__(self.dir, "%s.log" % name)
        self.name = name
        self.port = port or free_port()
        self.user = user or "drover"
        self.password = password or secrets.token_hex(12)
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.monitor_port = monitor_port
        self.tls = tls
        self.conf = os.path.join(self.dir, "nats.conf")
        with open(self.conf, "w") as f:
            f.write('listen: "127.0.0.1:%d"\n' % self.port)
            f.write('authorization {\n  user: "%s"\n  password: "%s"\n}\n' % (self.user, self.password))
            f.write("jetstream: disabled\n")
            if tls is not None:
                # TLS-only: the server still sends INFO in clear text, then every client must upgrade.
                f.write('tls {\n  cert_file: "%s"\n  key_file: "%s"\n  ca_file: "%s"\n  timeout: 5\n}\n'
                        % (tls.server, tls.server_key, tls.ca))
            if monitor_port:
                f.write('http: "127.0.0.1:%d"\n' % monitor_port)
            if cluster_port:
                f.write('server_name: "%s"\n' % name)
                f.write('cluster {\n  name: "drover"\n  listen: "127.0.0.1:%d"\n' % cluster_port)
                f.write("  routes: [\n%s\n  ]\n}\n" % "\n".join(
                    '    "nats-route://127.0.0.1:%d"' % r for r in self.routes))

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("tls" if self.tls else "nats", self.port)

    def argv(self):
        return [NATS_SERVER, "-c", self.conf]

    def ready(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.settimeout(1)
                return s.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def monitor(self, path):
        """GET http://127.0.0.1:<monitor_port>/<path> as JSON (only with a monitoring port)."""
        with urllib.request.urlopen("http://127.0.0.1:%d/%s" % (self.monitor_port, path), timeout=2) as r:
            return json.loads(r.read())

    def client_names(self):
        """Names of the clients connected to this server (Drover nodes name their connection by node.id)."""
        return [c.get("name", "") for c in self.monitor("connz?limit=1024").get("connections") or []]

    def route_count(self):
        return int(self.monitor("routez").get("num_routes", 0))


class NatsCluster:
    """n nats-servers routed to each other on loopback (full mesh of explicit routes), sharing one user and
    password. Nodes are configured with the comma-separated list of every member's client URL (`url`)."""

    def __init__(self, workdir, n=3):
        ports = [free_port() for _ in range(n)]
        cports = [free_port() for _ in range(n)]
        self.user = "drover"
        self.password = secrets.token_hex(12)
        self.servers = [NatsServer(workdir, port=ports[i], name="nats-%d" % (i + 1), user=self.user,
                                   password=self.password, cluster_port=cports[i],
                                   routes=[c for j, c in enumerate(cports) if j != i], monitor_port=free_port())
                        for i in range(n)]

    @property
    def url(self):
        return ",".join(s.url for s in self.servers)

    def start(self, timeout=20):
        for s in self.servers:
            s.start()
        self.wait_routes(timeout)
        return self

    def wait_routes(self, timeout=20):
        """Waits until every running member has a route to every other running member."""
        def meshed():
            up = [s for s in self.servers if s.alive()]
            try:
                return all(s.route_count() >= len(up) - 1 for s in up)
            except (OSError, ValueError):  # monitoring port not listening yet
                return False
        wait_until(meshed, timeout, interval=0.1, msg=lambda: "NATS cluster routes not up: %s" % [
            (s.name, s.alive()) for s in self.servers])

    def clients_by_server(self):
        """{server name: [client names]} of the running members."""
        return {s.name: s.client_names() for s in self.servers if s.alive()}


class MosquittoServer(Proc):
    USERS = ("drover", "producer", "device")

    def __init__(self, workdir, port=None, tls=None, require_certificate=False):
        """tls (a TlsFiles): adds an MQTT-over-TLS listener (tls_port) beside the plain one; clients of this
        module (and Stack's nodes) then use it. require_certificate: that listener also demands a client
        certificate signed by the CA."""
        self.tls = tls
        self.require_certificate = require_certificate
        self.tls_port = free_port() if tls is not None else None
        self.wss_port = free_port() if tls is not None else None  # MQTT over WebSockets over TLS
        self.dir = os.path.join(workdir, "mosquitto")
        os.makedirs(self.dir, exist_ok=True)
        super().__init__(self.dir, "mosquitto.log")
        self.name = "mosquitto"
        self.port = port or free_port()
        self.passwords = {u: secrets.token_hex(10) for u in self.USERS}
        self.pwfile = os.path.join(self.dir, "passwd")
        first = True
        for user, pw in self.passwords.items():
            args = [MOSQUITTO_PASSWD] + (["-c"] if first else []) + ["-b", self.pwfile, user, pw]
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=20)
            first = False
        os.chmod(self.pwfile, 0o600)
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join([
                "per_listener_settings false",
                # run as the invoking user (as root, mosquitto would switch to 'mosquitto' and lose
                # access to the temp dir)
                "user %s" % pwd.getpwuid(os.geteuid()).pw_name,
                "listener %d 127.0.0.1" % self.port,
                "allow_anonymous false",
                "password_file %s" % self.pwfile,
                "persistence true",
                "persistence_location %s/" % self.dir,
                "max_queued_messages 100000",
                "max_inflight_messages 1000",
                "set_tcp_nodelay true",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_type information",
                "connection_messages true",
                "log_timestamp true",
            ]) + "\n")
            if tls is not None:
                f.write("\n".join([
                    "listener %d 127.0.0.1" % self.tls_port,
                    "cafile %s" % tls.ca,
                    "certfile %s" % tls.server,
                    "keyfile %s" % tls.server_key,
                    "tls_version tlsv1.2",
                    "require_certificate %s" % ("true" if require_certificate else "false"),
                ]) + "\n")
                # Duster's 9443: WebSockets over TLS (Debian's Mosquitto binds it on every interface)
                f.write("\n".join([
                    "listener %d" % self.wss_port,
                    "protocol websockets",
                    "cafile %s" % tls.ca,
                    "certfile %s" % tls.server,
                    "keyfile %s" % tls.server_key,
                    "tls_version tlsv1.2",
                    "require_certificate %s" % ("true" if require_certificate else "false"),
                ]) + "\n")

    @property
    def url(self):
        if self.tls is not None:
            return "mqtts://127.0.0.1:%d" % self.tls_port
        return "tcp://127.0.0.1:%d" % self.port

    @property
    def client_port(self):
        """The port MqttClient connects to: the TLS listener when there is one."""
        return self.tls_port if self.tls is not None else self.port

    def tls_set(self, client):
        """Configures a paho client for the TLS listener: our CA and, when required, the client certificate."""
        ctx = self.tls.client_context()
        if self.require_certificate:
            ctx.load_cert_chain(self.tls.client, self.tls.client_key)
        client.tls_set_context(ctx)

    def argv(self):
        return [MOSQUITTO, "-c", self.conf]

    def ready(self):
        if not tcp_ready(self.port):
            return False
        ok = threading.Event()
        c = mqtt.Client(client_id="ready-%s" % secrets.token_hex(4), clean_session=True, protocol=mqtt.MQTTv311)
        c.username_pw_set("producer", self.passwords["producer"])
        c.on_connect = lambda cl, ud, fl, rc: ok.set() if rc == 0 else None
        try:
            c.connect("127.0.0.1", self.port, keepalive=10)
            c.loop_start()
            ok.wait(2)
        except OSError:
            return False
        finally:
            try:
                c.disconnect()
                c.loop_stop()
            except Exception:
                pass
        return ok.is_set()


class Node(Proc):
    """A drover-ingress or drover-dispatcher process with a generated config file."""

    def __init__(self, workdir, service, config):
        self.service = service  # "ingress" | "dispatcher"
        self.config = dict(config)
        self.node_id = self.config["node.id"]
        super().__init__(workdir, "%s.log" % self.node_id)
        self.name = self.node_id
        self.binary = os.path.join(BIN_DIR, "drover-%s" % service)
        self.conf_path = os.path.join(workdir, "%s.conf" % self.node_id)
        self.write_config()

    def write_config(self):
        with open(self.conf_path, "w") as f:
            f.write("# generated by tests/integration/harness.py\n")
            for k, v in self.config.items():
                f.write("%s = %s\n" % (k, v))

    def set(self, **kv):
        """Changes config keys (use dotted names via a dict: node.set(**{'dispatch.window': 2})); applies at
        the next start."""
        self.config.update({k: str(v) for k, v in kv.items()})
        self.write_config()

    def argv(self):
        if not os.access(self.binary, os.X_OK):
            raise HarnessError("binary %s missing (set DROVER_BIN_DIR)" % self.binary)
        return [self.binary, "-c", self.conf_path]

    def env(self):
        return clean_env()

    def start(self, wait=False, timeout=20):
        # A node has no readiness probe of its own; the stack checks end to end.
        return super().start(wait=False)

    def sanitizer_findings(self):
        text = self.log_text()
        return [m for m in SANITIZER_MARKERS if m in text]

    # A crash takes a node's whole process tree. A node runs as one process today (an older ingress
    # started consumer processes of its own); the fault scenarios still kill, stop and count the tree,
    # so a node that starts helper processes again is crashed as a whole: the processes it started are
    # found from its PID and signalled by their own PIDs.

    def child_pids(self):
        """PIDs of the running processes this node started, from /proc/<pid>/task/*/children."""
        if not self.alive():
            return []
        pids = []
        task_dir = "/proc/%d/task" % self.pid
        try:
            for tid in os.listdir(task_dir):
                try:
                    with open(os.path.join(task_dir, tid, "children")) as f:
                        pids += [int(x) for x in f.read().split()]
                except OSError:
                    pass
        except OSError:
            pass
        return sorted(set(pids))

    def kill_all(self, timeout=10):
        """kill -9 of the node and of every process it started, as a crash of the whole host process tree
        would do: the node is stopped first so that it cannot react to its children dying (restart them)."""
        kids = self.child_pids()
        if self.alive():
            os.kill(self.pid, signal.SIGSTOP)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        rc = self.kill()
        wait_until(lambda: not any(pid_running(p) for p in kids), timeout,
                   msg=lambda: "processes of %s still running after kill -9: %s" % (self.name, kids))
        return rc

    def pause_all(self):
        """SIGSTOP of the node and of every process it started; returns the PIDs stopped (for resume_all)."""
        self.pause()
        kids = self.child_pids()
        for pid in kids:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        self._paused = kids
        return [self.pid] + kids

    def resume_all(self):
        """SIGCONT of the processes pause_all stopped."""
        for pid in getattr(self, "_paused", []):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self._paused = []
        self.resume()


# ---------------------------------------------------------------------------------------------------
# MQTT clients


class Received:
    __slots__ = ("t", "mono", "raw", "msg", "topic")

    def __init__(self, topic, raw):
        self.t = time.time()
        self.mono = time.monotonic()
        self.topic = topic
        self.raw = raw
        try:
            self.msg = json.loads(raw)
        except ValueError:
            self.msg = None

    @property
    def t_ms(self):
        return self.t * 1000.0

    def __repr__(self):
        return "<%s %.3f %r>" % (self.topic, self.t, self.raw[:200])


class MqttClient:
    def __init__(self, broker, client_id, username, clean_session=True, connect=True):
        self.broker = broker
        self.client_id = client_id
        self.username = username
        self.clean_session = clean_session
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.subscriptions = []  # (topic, qos)
        self._suback = {}
        self.subscribed_at = []  # time.time() whenever every subscription of a (re)connection was acknowledged
        self.client = None
        if connect:
            self.connect()

    def _new_client(self):
        c = mqtt.Client(client_id=self.client_id, clean_session=self.clean_session, protocol=mqtt.MQTTv311)
        c.username_pw_set(self.username, self.broker.passwords[self.username])
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(0.1, 1)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        if getattr(self.broker, "tls", None) is not None:
            self.broker.tls_set(c)
        return c

    def connect(self, timeout=10):
        self.connected.clear()
        self.client = self._new_client()
        self.client.connect("127.0.0.1", getattr(self.broker, "client_port", self.broker.port), keepalive=30)
        self.client.loop_start()
        wait_until(self.connected.is_set, timeout, msg="%s did not connect" % self.client_id)
        # on_connect subscribes; wait for every SUBACK
        wait_until(lambda: all(self._suback.get(t) for t, _ in self.subscriptions), timeout,
                   msg="%s: no SUBACK" % self.client_id)
        return self

    def disconnect(self):
        if self.client is None:
            return
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            self.client = None
            self.connected.clear()

    def _on_connect(self, client, userdata, flags, rc):
        if rc != 0:
            return
        self._suback = {}
        self._mids = {}
        for topic, qos in self.subscriptions:
            r, mid = client.subscribe(topic, qos)
            self._mids[mid] = topic
        self.connected.set()

    def _on_disconnect(self, client, userdata, rc):
        self.connected.clear()

    def _on_subscribe(self, client, userdata, mid, granted):
        t = getattr(self, "_mids", {}).get(mid)
        if t is not None:
            self._suback[t] = granted[0] != 128
            if all(self._suback.get(x) for x, _ in self.subscriptions):
                self.subscribed_at.append(time.time())

    def _on_message(self, client, userdata, message):
        raise NotImplementedError

    def publish(self, topic, payload, qos=1, timeout=10):
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload, separators=(",", ":"))
        info = self.client.publish(topic, payload, qos=qos)
        if qos > 0:
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise AssertionError("%s: publish to %s not acknowledged within %ss" % (self.client_id, topic,
                                                                                         timeout))
        return info


class Device(MqttClient):
    """A device as Duster firmware does it: client id = device id, clean session, subscribed to
    consumer/request/<id> (QoS 0 by default). Records every arrival; can auto-ack and complete later."""

    def __init__(self, broker, device_id, qos=0, auto_ack=False, ack_status=None, complete_after=None,
                 complete_status="COMPLETED", connect=True):
        self.device_id = device_id
        self.received = []
        self.auto_ack = auto_ack
        self.ack_status = ack_status
        self.complete_after = complete_after
        self.complete_status = complete_status
        self.acked = set()
        self.timers = []
        super().__init__(broker, device_id, "device", clean_session=True, connect=False)
        self.subscriptions = [("consumer/request/%s" % device_id, qos)]
        if connect:
            self.connect()

    @property
    def response_topic(self):
        return "consumer/response/%s" % self.device_id

    def _on_message(self, client, userdata, message):
        r = Received(message.topic, message.payload)
        with self.lock:
            self.received.append(r)
        if r.msg is None or not isinstance(r.msg, dict) or "id" not in r.msg:
            return
        mid = r.msg["id"]
        if self.auto_ack:
            body = {"id": mid}
            if self.ack_status:
                body["deliveryStatus"] = self.ack_status
            client.publish(self.response_topic, json.dumps(body, separators=(",", ":")), qos=1)
            self.acked.add(mid)
        if self.complete_after is not None:
            t = threading.Timer(self.complete_after, self._complete, args=(mid,))
            t.daemon = True
            self.timers.append(t)
            t.start()

    def _complete(self, mid):
        if self.client is not None:
            self.client.publish(self.response_topic,
                                json.dumps({"id": mid, "deliveryStatus": self.complete_status}), qos=1)

    def ack(self, mid, status=None, qos=1):
        body = {"id": mid}
        if status:
            body["deliveryStatus"] = status
        self.publish(self.response_topic, body, qos=qos)
        self.acked.add(mid)

    def send_raw(self, payload, topic=None, qos=1):
        """Publishes an arbitrary payload (bytes/str/dict) to consumer/response/<id> (or `topic`)."""
        self.publish(topic or self.response_topic, payload, qos=qos)

    # views
    def arrivals(self):
        with self.lock:
            return list(self.received)

    def ids(self):
        return [r.msg["id"] for r in self.arrivals() if isinstance(r.msg, dict) and "id" in r.msg]

    def first_ids(self):
        """Ids in order of their first arrival."""
        seen, out = set(), []
        for i in self.ids():
            if i not in seen:
                seen.add(i)
                out.append(i)
        return out

    def arrivals_of(self, mid):
        return [r for r in self.arrivals() if isinstance(r.msg, dict) and r.msg.get("id") == mid]

    def count(self, mid=None):
        return len(self.arrivals()) if mid is None else len(self.arrivals_of(mid))

    def wait_for(self, mid, timeout, n=1):
        """Waits until message `mid` arrived at least n times; returns its arrivals."""
        return wait_until(lambda: len(self.arrivals_of(mid)) >= n and self.arrivals_of(mid), timeout,
                          msg=lambda: "device %s: id %s arrived %d/%d times; got ids %s" % (
                              self.device_id, mid, len(self.arrivals_of(mid)), n, self.ids()))

    def wait_count(self, n, timeout):
        return wait_until(lambda: len(self.arrivals()) >= n and self.arrivals(), timeout,
                          msg=lambda: "device %s: %d/%d arrivals, ids %s" % (self.device_id, len(self.arrivals()),
                                                                            n, self.ids()))

    def wait_distinct(self, n, timeout):
        return wait_until(lambda: len(self.first_ids()) >= n and self.first_ids(), timeout,
                          msg=lambda: "device %s: %d/%d distinct ids, ids %s" % (
                              self.device_id, len(self.first_ids()), n, self.ids()))

    def disconnect(self):
        for t in self.timers:
            t.cancel()
        super().disconnect()


class Producer(MqttClient):
    """A Duster-style producer: publishes to producer/request/<dev> at QoS 1 and records notifications on
    producer/response/<pd> and producer/error/<pd>."""

    def __init__(self, broker, pd="0", client_id=None, topics=None, connect=True):
        self.pd = pd
        self.responses = []
        self.errors = []
        self.other = []
        self._tmp = random.randint(1000, 100000)
        super().__init__(broker, client_id or "producer-%s-%s" % (pd, secrets.token_hex(3)), "producer",
                         clean_session=True, connect=False)
        self.subscriptions = topics or [("producer/response/%s" % pd, 1), ("producer/error/%s" % pd, 1)]
        if connect:
            self.connect()

    def _on_message(self, client, userdata, message):
        r = Received(message.topic, message.payload)
        with self.lock:
            if message.topic.startswith("producer/response/"):
                self.responses.append(r)
            elif message.topic.startswith("producer/error/"):
                self.errors.append(r)
            else:
                self.other.append(r)

    def next_tmp(self):
        self._tmp += 1
        return self._tmp

    def body(self, guarantee="RECEIPT_CONFIRMATION", command="cmd", data=None, tmp_id=None, certificate=True,
             **extra):
        b = {}
        if guarantee is not None:
            b["believerGuarantee"] = guarantee
        if command is not None:
            b["command"] = command
        b["data"] = data
        if certificate:
            b["messageBirthCertificate"] = {"tmpId": tmp_id, "producerDeviseId": self.pd}
        b.update(extra)
        return b

    def send(self, device, guarantee="RECEIPT_CONFIRMATION", command="cmd", data=None, tmp_id=None,
             certificate=True, qos=1, **extra):
        """Publishes a message; returns its tmpId (None without a certificate)."""
        if certificate and tmp_id is None:
            tmp_id = self.next_tmp()
        b = self.body(guarantee, command, data, tmp_id, certificate, **extra)
        self.publish("producer/request/%s" % device, b, qos=qos)
        return tmp_id if certificate else None

    def send_raw(self, topic, payload, qos=1):
        self.publish(topic, payload, qos=qos)

    # views
    def notes(self):
        with self.lock:
            return [r for r in self.responses if isinstance(r.msg, dict)]

    def error_notes(self):
        with self.lock:
            return [r for r in self.errors if isinstance(r.msg, dict)]

    def for_tmp(self, tmp):
        return [r.msg for r in self.notes() if r.msg.get("tmpId") == tmp]

    def for_id(self, mid):
        return [r.msg for r in self.notes() if r.msg.get("id") == mid]

    def statuses(self, mid):
        return [m.get("deliveryStatus") for m in self.for_id(mid)]

    def receipt(self, tmp, timeout=10):
        """Waits for the first notification for tmpId; returns it (dict)."""
        return wait_until(lambda: (self.for_tmp(tmp) or [None])[0], timeout,
                          msg=lambda: "no receipt for tmpId %s; notifications: %s" % (
                              tmp, [r.msg for r in self.notes()][-10:]))

    def receipt_id(self, tmp, timeout=10):
        return self.receipt(tmp, timeout)["id"]

    def wait_status(self, mid, status, timeout):
        return wait_until(lambda: status in self.statuses(mid), timeout,
                          msg=lambda: "id %s never notified %s; got %s" % (mid, status, self.statuses(mid)))

    def wait_error(self, tmp, timeout):
        return wait_until(lambda: next((r.msg for r in self.error_notes() if r.msg.get("tmpId") == tmp), None),
                          timeout, msg=lambda: "no error notification for tmpId %s; errors: %s" % (
                              tmp, [r.raw for r in self.errors]))


# ---------------------------------------------------------------------------------------------------
# the stack


class Stack:
    """Fresh servers + Drover nodes in one temp dir. Collects problems that fail the test at close()."""

    def __init__(self, workdir, overrides=None, tls=None, nats_tls=True, mqtt_require_certificate=False):
        """tls (a TlsFiles): Mosquitto gets a TLS listener that every client and node uses, and (nats_tls) the
        nats-server accepts TLS only; nodes get the matching mqtt.tls_* / nats.tls_* settings.
        mqtt_require_certificate: the TLS listener demands client certificates (nodes get mqtt.tls_cert/key)."""
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.overrides = {k: str(v) for k, v in (overrides or {}).items()}
        self.tls = tls
        self.redis = RedisServer(self.dir)
        self.nats = NatsServer(self.dir, tls=tls if nats_tls else None)
        self.nats_cluster = None  # a NatsCluster after use_nats_cluster(); self.nats is then its first member
        self.mqtt = MosquittoServer(self.dir, tls=tls, require_certificate=mqtt_require_certificate)
        self.nodes = []
        self.clients = []
        self.problems = []
        self._r = None

    # servers -----------------------------------------------------------------------------------------
    def use_nats_cluster(self, n=3):
        """Replaces the single nats-server by an n-node cluster (call before start_servers). Nodes then get every
        member's URL in nats.url; self.nats is the first member, self.nats_servers all of them."""
        if self.nats.proc is not None or any(x.proc is not None for x in self.nodes):
            raise HarnessError("use_nats_cluster must come before the servers and nodes start")
        self.nats_cluster = NatsCluster(self.dir, n)
        self.nats = self.nats_cluster.servers[0]
        return self.nats_cluster

    @property
    def nats_servers(self):
        return self.nats_cluster.servers if self.nats_cluster else [self.nats]

    @property
    def nats_url(self):
        return self.nats_cluster.url if self.nats_cluster else self.nats.url

    def start_servers(self):
        self.redis.start()
        if self.nats_cluster:
            self.nats_cluster.start()
        else:
            self.nats.start()
        self.mqtt.start()
        return self

    @property
    def prefix(self):
        return self.overrides.get("redis.prefix", "dr:")

    def base_config(self, node_id):
        c = {
            "node.id": node_id,
            "redis.host": "127.0.0.1",
            "redis.port": str(self.redis.port),
            "redis.password": self.redis.password,
            "nats.url": self.nats_url,
            "nats.user": self.nats.user,
            "nats.password": self.nats.password,
            "mqtt.url": self.mqtt.url,
            "mqtt.username": "drover",
            "mqtt.password": self.mqtt.passwords["drover"],
        }
        if self.tls is not None:
            c["mqtt.tls_ca"] = self.tls.ca
            if self.mqtt.require_certificate:
                c["mqtt.tls_cert"] = self.tls.client
                c["mqtt.tls_key"] = self.tls.client_key
            if self.nats.tls is not None:
                c["nats.tls_ca"] = self.tls.ca
        c.update(TEST_DEFAULTS)
        c.update(self.overrides)
        return c

    # nodes -------------------------------------------------------------------------------------------
    def add_node(self, service, node_id=None, overrides=None, start=True):
        n = sum(1 for x in self.nodes if x.service == service) + 1
        node_id = node_id or "%s-%d" % (service, n)
        cfg = self.base_config(node_id)
        cfg.update({k: str(v) for k, v in (overrides or {}).items()})
        node = Node(self.dir, service, cfg)
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def add_ingress(self, **kw):
        return self.add_node("ingress", **kw)

    def add_dispatcher(self, **kw):
        return self.add_node("dispatcher", **kw)

    @property
    def ingress(self):
        return next(n for n in self.nodes if n.service == "ingress")

    @property
    def dispatcher(self):
        return next(n for n in self.nodes if n.service == "dispatcher")

    def start(self, ingress=1, dispatchers=1, ready=True):
        self.start_servers()
        for _ in range(ingress):
            self.add_ingress()
        for _ in range(dispatchers):
            self.add_dispatcher()
        if ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=40):
        """End-to-end probe: a message to a probe device must be accepted (receipt) and delivered.
        Leaves no pending work behind (the probe device completes it)."""
        for n in self.nodes:
            if not n.alive():
                raise HarnessError("%s is not running:\n%s" % (n.name, n.tail()))
        shards = int(self.overrides.get("cluster.shards", TEST_DEFAULTS["cluster.shards"]))
        disp = [n for n in self.nodes if n.service == "dispatcher" and n.alive()]
        if len(disp) == 1:
            # soft wait: the single dispatcher owns every shard (log line), then the end-to-end probe
            try:
                disp[0].wait_log(r"shards_owned count=%d of=%d" % (shards, shards), min(timeout, 15))
            except AssertionError:
                pass
        applied_before = self.metric("ack_applied")
        dev = Device(self.mqtt, "probe-%s" % secrets.token_hex(3), auto_ack=True, ack_status="COMPLETED")
        prod = Producer(self.mqtt, pd="probe-%s" % secrets.token_hex(3))
        try:
            deadline = time.monotonic() + timeout
            # A copy sent before the ingress subscribed is lost, so the probe is sent again until a
            # receipt comes; every copy carries the same tmpId and idempotency key, so a copy that was
            # only slow is answered as a repeat and never stores a second message (a test that counts
            # ids from here on must not see the probe's).
            tmp = prod.next_tmp()
            key = "probe-%s" % secrets.token_hex(6)
            while time.monotonic() < deadline:
                prod.send(dev.device_id, command="probe", tmp_id=tmp, idempotencyKey=key)
                try:
                    wait_until(lambda: prod.for_tmp(tmp), 3)
                    break
                except AssertionError:
                    continue
            rid = prod.receipt_id(tmp, timeout=1)
            dev.wait_for(rid, max(1, deadline - time.monotonic()))
            prod.wait_status(rid, "COMPLETED", max(1, deadline - time.monotonic()))
            # counters reach Redis every metrics.flush_ms: tests that compare counters must not see the
            # probe's own ack arrive later
            wait_until(lambda: self.metric("ack_applied") > applied_before, max(1, deadline - time.monotonic()),
                       msg="the probe's ack never showed up in the flushed counters")
        except AssertionError as e:
            raise HarnessError("stack not ready: %s\n%s" % (e, self.log_tails()))
        finally:
            dev.disconnect()
            prod.disconnect()

    # clients -----------------------------------------------------------------------------------------
    def device(self, device_id, **kw):
        d = Device(self.mqtt, device_id, **kw)
        self.clients.append(d)
        return d

    def producer(self, pd="0", **kw):
        p = Producer(self.mqtt, pd=pd, **kw)
        self.clients.append(p)
        return p

    def listener(self, topics):
        """A producer-user client subscribed to arbitrary topics, e.g. [('producer/response/#', 1)]."""
        p = Producer(self.mqtt, pd="listener", topics=topics)
        self.clients.append(p)
        return p

    # redis views -------------------------------------------------------------------------------------
    @property
    def r(self):
        if self._r is None:
            self._r = self.redis.client()
        return self._r

    def redis_call(self, fn, retries=50):
        """Runs fn(redis) retrying on connection errors (Redis restarts)."""
        for i in range(retries):
            try:
                return fn(self.r)
            except (redislib.exceptions.ConnectionError, redislib.exceptions.BusyLoadingError,
                    redislib.exceptions.TimeoutError):
                self._r = None
                if i == retries - 1:
                    raise
                time.sleep(0.1)

    # Layout 2 (common/lua/drover.lua): message ids carry their shard (id % cluster.shards), records
    # live in bucket hashes <prefix>{<shard>}m:<n div 64>, read through the library's "get" function.
    BUCKET = 64

    @property
    def shards(self):
        return int(self.overrides.get("cluster.shards", TEST_DEFAULTS["cluster.shards"]))

    def seq(self):
        """Ids handed out so far (the sum of the per-shard counters; no wrap-around in tests)."""
        # only the shards' counters: the operator registry keeps its own, <prefix>{reg}seq, which the
        # ingress's first start raises once its bcrypt hash is done, whenever that is
        shard_seq = re.compile(re.escape(self.prefix) + r"\{\d+\}seq$")

        def read(r):
            return sum(int(r.get(k) or 0) for k in r.scan_iter(match=self.prefix + "{*}seq", count=1000)
                       if shard_seq.match(k))
        return self.redis_call(read)

    def _fcall_get(self, ids):
        p = self.prefix
        keys = sorted({"%s{%d}" % (p, int(i) % self.shards) for i in ids}) or ["%s{0}" % p]
        return self.redis_call(lambda r: r.fcall("get", len(keys), *keys, p, self.shards, 3600, "test",
                                                 *[str(i) for i in ids]))

    @staticmethod
    def _msg_dict(o):
        if not o:
            return {}
        names = ["id", "dev", "g", "cmd", "data", "st", "ts", "chg", "att", "tmp", "pd", "ttl", "max", "nb", "ext",
                 "idk", "key", "sent", "due"]
        m = {n: v for n, v in zip(names, o[:19])}
        m["history"] = [{"event": o[19][i], "status": o[19][i + 1], "ts": int(o[19][i + 2]),
                         "attempt": int(o[19][i + 3])} for i in range(0, len(o[19]), 4)]
        return m

    def msg(self, mid):
        return self._msg_dict(self._fcall_get([mid])[0])

    def msgs(self, ids):
        """id -> message dict (as msg()) for every id that exists."""
        out = {}
        ids = list(ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for mid, o in zip(chunk, self._fcall_get(chunk)):
                if o:
                    out[int(mid)] = self._msg_dict(o)
        return out

    def status(self, mid):
        return self.msg(mid).get("st")

    def history(self, mid):
        return self.msg(mid).get("history", [])

    def message_ids(self):
        """Every message id that has a record."""
        p, S, B = self.prefix, self.shards, self.BUCKET

        def read(r):
            ids = set()
            for k in r.scan_iter(match=p + "{*}m:*", count=1000):
                sh = int(k[len(p) + 1:k.index("}", len(p))])
                b = int(k[k.rindex(":") + 1:])
                for f in r.hkeys(k):
                    if f != "#":
                        ids.add((b * B + int(f)) * S + sh)
            return ids
        return self.redis_call(read)

    def message_keys(self):
        return self.message_ids()

    def metrics(self):
        """Sum of every node's counters."""
        def read(r):
            total = {}
            for k in r.scan_iter(match=self.prefix + "metrics:*", count=100):
                if r.type(k) != "hash":
                    continue
                for f, v in r.hgetall(k).items():
                    try:
                        total[f] = total.get(f, 0) + int(v)
                    except ValueError:
                        pass
            return total
        return self.redis_call(read)

    def metric(self, name):
        return self.metrics().get(name, 0)

    def wait_metric(self, name, at_least, timeout=10):
        return wait_until(lambda: self.metric(name) >= at_least and self.metric(name), timeout,
                          msg=lambda: "metric %s = %s, expected >= %s (all: %s)" % (
                              name, self.metric(name), at_least, self.metrics()))

    def wait_status(self, mid, status, timeout):
        return wait_until(lambda: self.status(mid) == status, timeout,
                          msg=lambda: "id %s status %s, expected %s" % (mid, self.status(mid), status))

    # teardown ----------------------------------------------------------------------------------------
    def log_tails(self, lines=60):
        out = []
        for p in self.nodes + [self.redis] + self.nats_servers + [self.mqtt]:
            out.append("----- %s (%s) last %d lines -----\n%s" % (p.name, p.log_path, lines, p.tail(lines)))
        return "\n".join(out)

    def check_nodes(self):
        """Problems so far: crashed nodes, sanitizer reports, non-zero exits after SIGTERM."""
        problems = []
        for n in self.nodes:
            if not n.expected_dead and n.proc is not None and n.proc.poll() is not None:
                problems.append("%s died unexpectedly with exit code %s" % (n.name, n.proc.returncode))
            for how, rc in n.exit_codes:
                if how == "sigterm" and rc != 0:
                    problems.append("%s exited with %s after SIGTERM" % (n.name, rc))
                if how == "sigterm-timeout":
                    problems.append("%s did not exit within the SIGTERM grace period" % n.name)
            for m in n.sanitizer_findings():
                problems.append("%s log contains %r" % (n.name, m))
        return problems

    def close(self):
        for c in self.clients:
            try:
                c.disconnect()
            except Exception:
                pass
        problems = self.check_nodes()  # before our SIGTERMs: catches nodes that died by themselves
        # Stop dispatchers first, then ingress nodes, each with SIGTERM.
        for n in sorted(self.nodes, key=lambda x: 0 if x.service == "dispatcher" else 1):
            if n.alive():
                n.stop(timeout=15)
        problems += self.check_nodes()
        # dedupe while keeping order
        seen = set()
        self.problems = [p for p in problems if not (p in seen or seen.add(p))]
        for s in [self.mqtt] + self.nats_servers + [self.redis]:
            if s.alive():
                s.stop(timeout=10)
        if self._r is not None:
            try:
                self._r.close()
            except Exception:
                pass
        return self.problems
