"""Network namespaces, veth links and partitions for the fault suite (test_fault_net.py).

A `NetLab` makes what a scenario needs and removes all of it afterwards, also when the scenario fails:

- a network namespace (`ip netns add`) with its own loopback;
- veth links from it to the root namespace, each a /30 of 10.200.0.0/16 that no interface here uses yet
  (root end .1, namespace end .2). Nothing is routed beyond these links: the namespace has no default
  route and the root namespace forwards nothing to it, so traffic stays between the two ends;
- the servers of a harness Stack made reachable from the namespace: Redis and Mosquitto also listen on
  the root end of a link (their configs get one more bind address / listener before they start),
  nats-server, which listens on one address only, through a small userspace relay on that address;
- Drover nodes started inside the namespace (`ip netns exec <ns> <binary>`: ip execs the binary, so the
  PID the harness holds is the node's own);
- faults on a link: `down()`/`up()` (`ip link set down` on the root end: the namespace end loses its
  carrier), `blackhole()`/`heal()` (iptables DROP of everything on the link inside the namespace, in and
  out: packets vanish as behind a dead router, nothing is refused), and `degrade()` (every packet leaving
  the namespace delayed by a fixed time through an NFQUEUE delayer, nfq_delay.py, and a share of the
  packets dropped in each direction with the iptables `statistic` match). This kernel has no sch_netem,
  so delay and loss are made with netfilter instead of `tc netem`; the effect on TCP is the same.

Every command runs as root; every process started here is ended by its PID.
"""
import os
import random
import socket
import subprocess
import sys
import threading

import harness
from harness import wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
IPTABLES = "iptables"


def sh(*argv, check=True, timeout=20):
    """Runs one command (argv list, no shell); returns its stdout. Raises with stderr on failure."""
    out = subprocess.run(list(argv), capture_output=True, timeout=timeout)
    if check and out.returncode != 0:
        raise harness.HarnessError("%s: exit %d: %s" % (" ".join(argv), out.returncode, out.stderr.decode().strip()))
    return out.stdout.decode()


def used_10_200():
    """Third octets of the 10.200.x.y addresses already on an interface of the root namespace."""
    used = set()
    for line in sh("ip", "-o", "-4", "addr", "show").splitlines():
        for word in line.split():
            if word.startswith("10.200."):
                used.add(int(word.split(".")[2]))
    return used


class Link:
    """One veth pair between the root namespace (`root_if`, address `host`) and a namespace (`ns_if`,
    address `peer`), on its own /30."""

    def __init__(self, ns, key, octet, index):
        self.ns = ns
        self.key = key
        tag = "%d%s" % (os.getpid() % 10000000, key)
        self.root_if = "drf%sr" % tag
        self.ns_if = "drf%sn" % tag
        base = 4 * index
        self.host = "10.200.%d.%d" % (octet, base + 1)  # root end: where the servers listen
        self.peer = "10.200.%d.%d" % (octet, base + 2)  # namespace end: the node's address
        self.cut = None  # None, "down" or "blackhole"
        self.degraded = None
        self.delayer = None

    def create(self):
        sh("ip", "link", "add", self.root_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.ns.name)
        sh("ip", "addr", "add", self.host + "/30", "dev", self.root_if)
        sh("ip", "link", "set", self.root_if, "up")
        self.ns.run("ip", "addr", "add", self.peer + "/30", "dev", self.ns_if)
        self.ns.run("ip", "link", "set", self.ns_if, "up")
        wait_until(self._reachable, 10, interval=0.1, msg="link %s not up" % self.root_if)

    def _reachable(self):
        """True once the namespace end answers: a TCP connect from the namespace to the root end is refused
        (RST) instead of timing out."""
        code = ("import socket,sys\ns=socket.socket();s.settimeout(0.5)\n"
                "try:\n s.connect((%r,9))\nexcept ConnectionRefusedError:\n sys.exit(0)\n"
                "except OSError:\n sys.exit(1)\nsys.exit(0)\n" % self.host)
        return subprocess.run(["ip", "netns", "exec", self.ns.name, sys.executable, "-c", code],
                              capture_output=True, timeout=10).returncode == 0

    # ---- faults ---------------------------------------------------------------------------------------
    def down(self):
        """`ip link set down` on the root end: nothing passes in either direction."""
        sh("ip", "link", "set", self.root_if, "down")
        self.cut = "down"

    def up(self):
        sh("ip", "link", "set", self.root_if, "up")
        self.cut = None

    def blackhole(self):
        """Drops every packet on the link inside the namespace, both directions, without an answer."""
        self.ns.run(IPTABLES, "-I", "INPUT", "-i", self.ns_if, "-j", "DROP")
        self.ns.run(IPTABLES, "-I", "OUTPUT", "-o", self.ns_if, "-j", "DROP")
        self.cut = "blackhole"

    def heal(self):
        """Undoes down() or blackhole()."""
        if self.cut == "down":
            self.up()
        elif self.cut == "blackhole":
            self.ns.run(IPTABLES, "-D", "INPUT", "-i", self.ns_if, "-j", "DROP", check=False)
            self.ns.run(IPTABLES, "-D", "OUTPUT", "-o", self.ns_if, "-j", "DROP", check=False)
            self.cut = None

    def degrade(self, delay_ms, loss_pct, queue):
        """Delays every packet leaving the namespace on this link by delay_ms (NFQUEUE `queue`, served by
        nfq_delay.py in the namespace) and drops loss_pct % of the packets in each direction."""
        self.delayer = self.ns.popen(sys.executable, os.path.join(HERE, "nfq_delay.py"), "--queue", str(queue),
                                     "--delay-ms", str(delay_ms))
        line = self.delayer.stdout.readline().decode().strip()
        if not line.startswith("ready"):
            self.delayer.kill()
            raise harness.HarnessError("nfq_delay.py did not start: %r %s" % (line, self.delayer.stderr.read()))
        p = "%.4f" % (loss_pct / 100.0)
        self.rules = [
            ("INPUT", "-i", self.ns_if, "-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP"),
            ("OUTPUT", "-o", self.ns_if, "-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP"),
            ("OUTPUT", "-o", self.ns_if, "-j", "NFQUEUE", "--queue-num", str(queue)),
        ]
        for r in self.rules:
            self.ns.run(IPTABLES, "-A", *r)
        self.degraded = (delay_ms, loss_pct)

    def restore(self):
        """Undoes degrade(); returns the delayer's packet count (None if it did not report)."""
        for r in getattr(self, "rules", []):
            self.ns.run(IPTABLES, "-D", *r, check=False)
        self.rules = []
        self.degraded = None
        count = None
        if self.delayer is not None:
            if self.delayer.poll() is None:
                self.delayer.terminate()
            try:
                out, _ = self.delayer.communicate(timeout=10)
                for line in out.decode().splitlines():
                    if line.startswith("packets="):
                        count = int(line.split("=")[1].split()[0])
            except subprocess.TimeoutExpired:
                self.delayer.kill()
                self.delayer.wait(5)
            self.delayer = None
        return count

    def clear(self):
        """Removes every fault (used by the teardown)."""
        try:
            self.restore()
        finally:
            self.heal()

    def delete(self):
        sh("ip", "link", "del", self.root_if, check=False)


class Namespace:
    def __init__(self, lab, name, octet):
        self.lab = lab
        self.name = name
        self.octet = octet
        self.links = {}

    def run(self, *argv, check=True):
        return sh("ip", "netns", "exec", self.name, *argv, check=check)

    def popen(self, *argv):
        return subprocess.Popen(["ip", "netns", "exec", self.name] + list(argv), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def link(self, key):
        lk = Link(self, key, self.octet, len(self.links))
        self.links[key] = lk
        self.lab.links.append(lk)
        lk.create()
        return lk

    def connect_ms(self, host, port):
        """Time of one TCP connect from inside the namespace (ms; -1 when it failed), for checking a fault."""
        code = ("import socket,time\nt=time.monotonic()\ntry:\n s=socket.create_connection((%r,%d),timeout=10)\n"
                " print(int(1000*(time.monotonic()-t)))\nexcept OSError:\n print(-1)\n" % (host, port))
        return int(self.run(sys.executable, "-c", code).strip() or -1)


class Relay(threading.Thread):
    """Forwards listen_host:port to 127.0.0.1:target_port (root namespace), byte for byte, both ways."""

    def __init__(self, listen_host, target_port):
        super().__init__(daemon=True)
        self.target = target_port
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind((listen_host, 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        self.stopped = False

    def run(self):
        while not self.stopped:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.stopped = True
        try:
            self.srv.close()
        except OSError:
            pass
        with self.lock:
            for s in self.conns:
                try:
                    s.close()
                except OSError:
                    pass
            self.conns = []


class NsNode(harness.Node):
    """A Drover node run inside a namespace: `ip netns exec <ns> drover-<service> -c <conf>`."""

    def __init__(self, workdir, service, config, ns):
        self.ns = ns
        super().__init__(workdir, service, config)

    def argv(self):
        return ["ip", "netns", "exec", self.ns.name] + super().argv()


class NetLab:
    """Owns every namespace, link, relay and node a scenario creates here; close() removes them all."""

    def __init__(self):
        self.namespaces = []
        self.links = []
        self.relays = []
        self.nodes = []  # (stack, NsNode)
        self.exposed = {}  # id(stack) -> {link key: (redis host, mqtt host, nats relay)}

    def namespace(self):
        used = used_10_200()
        free = [o for o in range(256) if o not in used]
        if not free:
            raise harness.HarnessError("no free 10.200.x.0/24 for the test links")
        octet = random.choice(free)
        name = "drf-%d-%d" % (os.getpid(), len(self.namespaces))
        sh("ip", "netns", "add", name)
        ns = Namespace(self, name, octet)
        self.namespaces.append(ns)
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    def expose(self, stack, redis_link, mqtt_link, nats_link=None):
        """Before stack.start_servers(): Redis also listens on redis_link.host, Mosquitto on mqtt_link.host
        (same ports); nats-server is reached through a relay on nats_link.host (default redis_link).
        Returns the config keys a node in the namespace needs (redis.host, mqtt.url, nats.url)."""
        nats_link = nats_link or redis_link
        with open(stack.redis.conf) as f:
            conf = f.read()
        conf = conf.replace("bind 127.0.0.1\n", "bind 127.0.0.1 %s\n" % redis_link.host, 1)
        with open(stack.redis.conf, "w") as f:
            f.write(conf)
        with open(stack.mqtt.conf, "a") as f:
            f.write("listener %d %s\n" % (stack.mqtt.port, mqtt_link.host))
        return {"redis.host": redis_link.host, "mqtt.url": "tcp://%s:%d" % (mqtt_link.host, stack.mqtt.port),
                "_nats_link": nats_link}

    def node_config(self, stack, exposed):
        """Config overrides for a node in the namespace; starts the NATS relay on first use (after the
        servers started, since the relay connects to nats-server per connection)."""
        key = (id(stack), exposed["_nats_link"].key)
        relay = self.exposed.get(key)
        if relay is None:
            relay = Relay(exposed["_nats_link"].host, stack.nats.port)
            relay.start()
            self.relays.append(relay)
            self.exposed[key] = relay
        return {"redis.host": exposed["redis.host"], "mqtt.url": exposed["mqtt.url"],
                "nats.url": "nats://%s:%d" % (exposed["_nats_link"].host, relay.port)}

    def add_node(self, stack, ns, exposed, service, node_id, overrides=None, start=True):
        """A Drover node inside ns, registered with the stack (its teardown checks exit codes and sanitizer
        reports as for every node)."""
        cfg = stack.base_config(node_id)
        cfg.update(self.node_config(stack, exposed))
        cfg.update({k: str(v) for k, v in (overrides or {}).items()})
        node = NsNode(stack.dir, service, cfg, ns)
        stack.nodes.append(node)
        self.nodes.append((stack, node))
        if start:
            node.start()
        return node

    def clear_faults(self):
        for lk in self.links:
            try:
                lk.clear()
            except Exception as e:  # noqa: BLE001  (teardown goes on; reported by close())
                print("netns: clearing %s failed: %s" % (lk.root_if, e))

    def close(self):
        """Removes every fault, stops the nodes in the namespaces (SIGTERM, so the stack still checks their
        exit codes), the relays, the links and the namespaces. Problems are returned, not raised."""
        problems = []
        self.clear_faults()
        for stack, node in self.nodes:
            if node.alive():
                node.stop(timeout=15)
        for r in self.relays:
            r.stop()
        for lk in self.links:
            lk.delete()
        for ns in self.namespaces:
            # a process still inside would keep the namespace alive after the name is gone: none may be left
            left = [p for p in sh("ip", "netns", "pids", ns.name, check=False).split()]
            for pid in left:
                problems.append("process %s still in namespace %s" % (pid, ns.name))
            sh("ip", "netns", "del", ns.name, check=False)
        for ns in self.namespaces:
            if ns.name in sh("ip", "netns", "list", check=False).split():
                problems.append("namespace %s not removed" % ns.name)
        for lk in self.links:
            if os.path.exists("/sys/class/net/%s" % lk.root_if):
                problems.append("link %s not removed" % lk.root_if)
        return problems
