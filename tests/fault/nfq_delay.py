"""A fixed packet delay for the fault suite: serves one NFQUEUE and accepts each packet `--delay-ms` after it
was queued, in arrival order. netns.Link.degrade() runs it inside a test namespace (`ip netns exec`), where
an iptables rule sends the link's outgoing packets to the queue; it stands in for `tc netem delay`, which
this kernel lacks (no sch_netem).

It speaks nfnetlink_queue directly over a netlink socket (no library): bind the queue, ask for packet
metadata only (NFQNL_COPY_META: the id is all a verdict needs), then answer NF_ACCEPT per id when its time
comes. A packet the kernel could not hand over (receive buffer full) is dropped by the kernel: counted as
loss, as netem would under overload. Prints "ready" once bound; on SIGTERM prints "packets=N" and exits.

Usage: nfq_delay.py --queue N --delay-ms MS
"""
import argparse
import collections
import signal
import socket
import struct
import sys
import threading
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_META = 1
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2


def attr(kind, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def message(msg_type, queue, attrs, flags=NLM_F_REQUEST, seq=0):
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, seq, 0) + body


class Delayer:
    def __init__(self, queue, delay_s):
        self.queue = queue
        self.delay = delay_s
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((0, 0))
        self.pending = collections.deque()  # (release time, packet id), in arrival order
        self.cond = threading.Condition()
        self.count = 0
        self.send_lock = threading.Lock()

    def configure(self, seq, attrs):
        self.sock.send(message(NFQNL_MSG_CONFIG, self.queue, attrs, NLM_F_REQUEST | NLM_F_ACK, seq))
        while True:
            data = self.sock.recv(65536)
            length, kind, _, rseq, _ = struct.unpack_from("=IHHII", data, 0)
            if kind == NLMSG_ERROR and rseq == seq:
                err = struct.unpack_from("=i", data, 16)[0]
                if err != 0:
                    raise OSError(-err, "nfqueue config %d failed" % seq)
                return

    def bind(self):
        self.configure(1, [attr(NFQA_CFG_CMD, struct.pack("=BBH", NFQNL_CFG_CMD_BIND, 0, 0))])
        self.configure(2, [attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))])
        self.configure(3, [attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 65536))])

    def verdict(self, pid):
        m = message(NFQNL_MSG_VERDICT, self.queue, [attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, pid))])
        with self.send_lock:
            self.sock.send(m)

    def release_loop(self):
        while True:
            with self.cond:
                while not self.pending:
                    self.cond.wait()
                due, pid = self.pending[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self.cond.wait(wait)
                    continue
                self.pending.popleft()
            try:
                self.verdict(pid)
            except OSError:
                pass

    def receive_loop(self):
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                continue  # ENOBUFS: the kernel dropped packets it could not queue to us
            now = time.monotonic()
            off = 0
            while off + 16 <= len(data):
                length, kind, _, _, _ = struct.unpack_from("=IHHII", data, off)
                if length < 16:
                    break
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    a = off + 20  # nlmsghdr + nfgenmsg
                    while a + 4 <= off + length:
                        alen, atype = struct.unpack_from("=HH", data, a)
                        if alen < 4:
                            break
                        if atype & 0x3FFF == NFQA_PACKET_HDR:
                            pid = struct.unpack_from("!I", data, a + 4)[0]
                            with self.cond:
                                self.pending.append((now + self.delay, pid))
                                self.count += 1
                                self.cond.notify()
                            break
                        a += (alen + 3) & ~3
                off += (length + 3) & ~3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--delay-ms", type=int, required=True)
    a = ap.parse_args()
    d = Delayer(a.queue, a.delay_ms / 1000.0)
    d.bind()

    def stop(signum, frame):
        print("packets=%d" % d.count, flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=d.release_loop, daemon=True).start()
    print("ready queue=%d delay_ms=%d" % (a.queue, a.delay_ms), flush=True)
    d.receive_loop()


if __name__ == "__main__":
    main()
