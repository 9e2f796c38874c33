"""Thousands of simulated devices on one thread, for the reconnect-storm scenario (R27).

paho runs a thread per client, so the harness's Device cannot be had 10,000 times in one process. A Swarm is a
minimal MQTT 3.1.1 client for many connections on one `selectors` loop: each device connects with its own
client id (clean session, user "device", as Duster firmware does), subscribes to consumer/request/<id>,
answers every command at once with {"id": N} on consumer/response/<id> (QoS 1), and reconnects after losing
its connection with a random delay that doubles up to 4 s, as firmware behind a broker restart would.

Each SwarmDevice offers the view of harness.Device the history checker reads (device_id, arrivals(), ids(),
first_ids(), count()), so a checker.Workload can drive and check a subset of the swarm.
"""
import errno
import fcntl
import json
import random
import selectors
import socket
import struct
import threading
import time

import harness

FD_FLOOR = 2048  # the swarm's sockets get descriptors from here up (RLIMIT_NOFILE must allow FD_FLOOR + devices)


def _str(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(first, body):
    n = len(body)
    rl = bytearray()
    while True:
        d = n % 128
        n //= 128
        rl.append(d | (0x80 if n else 0))
        if not n:
            break
    return bytes([first]) + bytes(rl) + body


class SwarmDevice:
    __slots__ = ("device_id", "qos", "sock", "out", "inbuf", "state", "next_try", "backoff", "pid", "received",
                 "swarm", "connects", "last_sent")

    def __init__(self, swarm, device_id, qos):
        self.swarm = swarm
        self.device_id = device_id
        self.qos = qos
        self.sock = None
        self.out = bytearray()
        self.inbuf = bytearray()
        self.state = "idle"  # idle -> connecting -> connack -> up
        self.next_try = 0.0
        self.backoff = 0.1
        self.pid = 0
        self.received = []
        self.connects = 0
        self.last_sent = 0.0

    # the harness.Device view the checker uses
    def arrivals(self):
        with self.swarm.lock:
            return list(self.received)

    def ids(self):
        return [r.msg["id"] for r in self.arrivals() if isinstance(r.msg, dict) and "id" in r.msg]

    def first_ids(self):
        seen, out = set(), []
        for i in self.ids():
            if i not in seen:
                seen.add(i)
                out.append(i)
        return out

    def count(self, mid=None):
        if mid is None:
            return len(self.arrivals())
        return sum(1 for r in self.arrivals() if isinstance(r.msg, dict) and r.msg.get("id") == mid)


class Swarm(threading.Thread):
    def __init__(self, broker, ids, qos1_every=3, connect_window=400):
        super().__init__(daemon=True)
        self.host, self.port = "127.0.0.1", broker.port
        self.password = broker.passwords["device"]
        self.devices = [SwarmDevice(self, d, 1 if i % qos1_every == 0 else 0) for i, d in enumerate(ids)]
        self.by_id = {d.device_id: d for d in self.devices}
        self.window = connect_window
        self.lock = threading.Lock()
        self.sel = selectors.DefaultSelector()
        self.halt = threading.Event()
        self.up = 0  # devices connected and subscribed
        self.errors = 0

    # ---- public ------------------------------------------------------------------------------------
    def connected(self):
        return self.up

    def stop(self):
        self.halt.set()
        self.join(15)
        for d in self.devices:
            self._close(d, reconnect=False)

    # ---- loop --------------------------------------------------------------------------------------
    def run(self):
        last_ping = time.monotonic()
        while not self.halt.is_set():
            now = time.monotonic()
            if now - last_ping >= 1.0:
                last_ping = now
                for d in self.devices:  # PINGREQ after 30 s of silence (keepalive 60)
                    if d.state == "up" and now - d.last_sent >= 30:
                        try:
                            self._send(d, bytes([0xC0, 0]))
                        except OSError:
                            self._close(d)
            pending = sum(1 for d in self.devices if d.state in ("connecting", "connack"))
            for d in self.devices:
                if pending >= self.window:
                    break
                if d.state == "idle" and d.next_try <= now:
                    self._connect(d)
                    pending += 1
            for key, mask in self.sel.select(timeout=0.05):
                d = key.data
                try:
                    if mask & selectors.EVENT_WRITE:
                        self._writable(d)
                    if mask & selectors.EVENT_READ and d.sock is not None:
                        self._readable(d)
                except OSError:
                    self._close(d)

    def _connect(self, d):
        # paho (the producers, the harness's devices) waits with select(), which cannot watch a descriptor above
        # 1023: the swarm's sockets live at FD_FLOOR and above, so descriptors below stay free for paho
        tmp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            fd = fcntl.fcntl(tmp.fileno(), fcntl.F_DUPFD_CLOEXEC, FD_FLOOR)
        finally:
            tmp.close()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, fileno=fd)
        s.setblocking(False)
        d.sock, d.state, d.inbuf, d.out = s, "connecting", bytearray(), bytearray()
        rc = s.connect_ex((self.host, self.port))
        if rc not in (0, errno.EINPROGRESS):
            self._close(d)
            return
        body = (_str("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 60) + _str(d.device_id) + _str("device") +
                _str(self.password))
        d.out += _packet(0x10, body)
        self.sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, d)

    def _close(self, d, reconnect=True):
        if d.sock is not None:
            try:
                self.sel.unregister(d.sock)
            except (KeyError, ValueError):
                pass
            d.sock.close()
            d.sock = None
            if d.state == "up":
                self.up -= 1
        d.state = "idle"
        if reconnect:
            d.next_try = time.monotonic() + random.uniform(0.5, 1.0) * d.backoff
            d.backoff = min(4.0, d.backoff * 2)

    def _send(self, d, data):
        d.out += data
        d.last_sent = time.monotonic()
        self._writable(d)

    def _writable(self, d):
        if d.sock is None:
            return
        if d.state == "connecting":
            err = d.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, "connect")
            d.state = "connack"
        if d.out:
            try:
                n = d.sock.send(d.out)
                del d.out[:n]
            except BlockingIOError:
                pass
        self.sel.modify(d.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if d.out else 0), d)

    def _readable(self, d):
        try:
            data = d.sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            raise OSError("closed")
        d.inbuf += data
        while True:
            # fixed header: type byte + remaining length (1-4 bytes)
            if len(d.inbuf) < 2:
                return
            mult, n, i = 1, 0, 1
            while True:
                if i >= len(d.inbuf):
                    return
                b = d.inbuf[i]
                n += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            if len(d.inbuf) < i + n:
                return
            first, body = d.inbuf[0], bytes(d.inbuf[i:i + n])
            del d.inbuf[:i + n]
            self._packet_in(d, first, body)
            if d.sock is None:
                return

    def _packet_in(self, d, first, body):
        kind = first >> 4
        if kind == 2:  # CONNACK
            if body[1] != 0:
                raise OSError("connack rc %d" % body[1])
            topic = "consumer/request/%s" % d.device_id
            self._send(d, _packet(0x82, struct.pack("!H", 1) + _str(topic) + bytes([d.qos])))
        elif kind == 9:  # SUBACK
            d.state = "up"
            d.connects += 1
            d.backoff = 0.1
            self.up += 1
        elif kind == 3:  # PUBLISH
            qos = (first >> 1) & 3
            tl = struct.unpack_from("!H", body, 0)[0]
            topic = body[2:2 + tl].decode()
            off = 2 + tl
            if qos:
                pid = struct.unpack_from("!H", body, off)[0]
                off += 2
                self._send(d, _packet(0x40, struct.pack("!H", pid)))
            r = harness.Received(topic, body[off:])
            with self.lock:
                d.received.append(r)
            if isinstance(r.msg, dict) and "id" in r.msg:
                d.pid = d.pid % 65535 + 1
                payload = json.dumps({"id": r.msg["id"]}, separators=(",", ":")).encode()
                self._send(d, _packet(0x32, _str("consumer/response/%s" % d.device_id) + struct.pack("!H", d.pid) +
                                      payload))
        # PUBACK (4), PINGRESP (13): nothing to do
