"""A dispatcher that reaches Redis but not the broker gives its shards up within seconds, so another
dispatcher delivers them; and sends it could not publish do not count as attempts.

The partition is a TCP relay between one dispatcher and Mosquitto that the test cuts: the dispatcher
keeps its Redis connection, the broker and every other client are untouched.
"""
import socket
import threading

import harness
from harness import wait_until


class Relay(threading.Thread):
    """Forwards 127.0.0.1:<port> to the broker until cut; once cut, drops connections and refuses new ones
    (accepts and closes at once) until healed."""

    def __init__(self, target_port):
        super().__init__(daemon=True)
        self.target = target_port
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.cut = False
        self.conns = []
        self.lock = threading.Lock()

    def run(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            if self.cut:
                c.close()
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    def pump(self, a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data or self.cut:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def partition(self):
        self.cut = True
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns = []

    def heal(self):
        self.cut = False


def owners(stack):
    def read(r):
        out = {}
        for sh in range(stack.shards):
            v = r.get("%s{%d}lease" % (stack.prefix, sh))
            out[sh] = v.split(" ")[0] if v else None
        return out
    return stack.redis_call(read)


def test_dispatcher_without_broker_gives_up_its_shards(stack_factory):
    stack = stack_factory({"lease.ttl_ms": 30000, "lease.renew_ms": 1000}, dispatchers=0, start=False)
    stack.start_servers()
    stack.add_ingress()
    relay = Relay(stack.mqtt.port)
    relay.start()
    cut_off = stack.add_dispatcher(node_id="cut-off", overrides={"mqtt.url": "tcp://127.0.0.1:%d" % relay.port})
    cut_off.wait_log(r"shards_owned count=%d of=%d" % (stack.shards, stack.shards), 20)
    healthy = stack.add_dispatcher(node_id="healthy")
    wait_until(lambda: set(owners(stack).values()) == {"cut-off", "healthy"}, 30,
               msg=lambda: "shards not shared: %s" % owners(stack))
    devs = [stack.device("dev-part-%d" % i, auto_ack=True) for i in range(8)]
    prod = stack.producer("part")

    relay.partition()
    # within seconds (not the 30 s lease TTL) the cut-off node has given everything up
    wait_until(lambda: "cut-off" not in owners(stack).values(), 12,
               msg=lambda: "the cut-off dispatcher still holds %d shards" %
               list(owners(stack).values()).count("cut-off"))
    wait_until(lambda: set(owners(stack).values()) == {"healthy"}, 15, msg=lambda: "%s" % owners(stack))
    tmps = [prod.send(d.device_id, command="during-partition") for d in devs]
    ids = [prod.receipt_id(t, timeout=15) for t in tmps]
    for d, mid in zip(devs, ids):
        d.wait_for(mid, 15)
        prod.wait_status(mid, "DELIVERED", 15)
        assert d.count(mid) == 1, "re-sent although acknowledged: %s" % d.arrivals()
        h = stack.history(mid)
        assert [e["attempt"] for e in h if e["event"] in ("sent", "resent")] == [1], h
    relay.heal()
    # back on the broker it takes a share again
    wait_until(lambda: "cut-off" in owners(stack).values(), 30, msg=lambda: "%s" % owners(stack))
