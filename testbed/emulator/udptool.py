"""Sequence-numbered, timestamped UDP sender and receiver for the emulator's tests and benchmark.

Run inside namespaces: `python -m testbed.emulator.udptool recv --port P --count N` prints one
JSON object (received sequence numbers and one-way delays); `... send --dst IP --port P
--count N` sends them. The delay uses the kernel's receive timestamp (SO_TIMESTAMPNS) against
the sender's CLOCK_REALTIME, one clock for every namespace of the machine.
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time

HEADER = struct.Struct("!IQ")  # sequence number, send time (ns, CLOCK_REALTIME)
SO_TIMESTAMPNS = 35


def send(dst: str, port: int, count: int, size: int, pps: float) -> dict:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    pad = bytes(max(0, size - HEADER.size))
    gap = 1.0 / pps if pps > 0 else 0.0
    start = time.monotonic()
    for seq in range(count):
        if gap:
            wait = start + seq * gap - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        s.sendto(HEADER.pack(seq, time.time_ns()) + pad, (dst, port))
    return {"sent": count, "duration_s": time.monotonic() - start}


def recv(port: int, count: int, timeout: float, idle: float, ready_file: str | None) -> dict:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind(("0.0.0.0", port))
    if ready_file:
        open(ready_file, "w").close()
    seqs: list[int] = []
    owd_ms: list[float] = []
    arrival_s: list[float] = []
    deadline = time.monotonic() + timeout
    while len(seqs) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(min(left, idle) if seqs else left)
        try:
            data, anc, _flags, _addr = s.recvmsg(65536, 64)
        except TimeoutError:
            break
        seq, sent_ns = HEADER.unpack_from(data)
        rx_ns = time.time_ns()
        for level, kind, val in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", val[:16])
                rx_ns = sec * 1_000_000_000 + nsec
        seqs.append(seq)
        owd_ms.append((rx_ns - sent_ns) / 1e6)
        arrival_s.append(rx_ns / 1e9)
    return {"received": len(seqs), "seqs": seqs, "owd_ms": owd_ms, "arrival_s": arrival_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.emulator.udptool")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("send")
    a.add_argument("--dst", required=True)
    a.add_argument("--port", type=int, default=5999)
    a.add_argument("--count", type=int, default=1000)
    a.add_argument("--size", type=int, default=100, help="UDP payload bytes")
    a.add_argument("--pps", type=float, default=0, help="0: as fast as possible")
    b = sub.add_parser("recv")
    b.add_argument("--port", type=int, default=5999)
    b.add_argument("--count", type=int, default=1000)
    b.add_argument("--timeout", type=float, default=30)
    b.add_argument("--idle", type=float, default=1.0, help="stop after this long without a datagram")
    b.add_argument("--ready-file")
    args = ap.parse_args(argv)
    if args.cmd == "send":
        out = send(args.dst, args.port, args.count, args.size, args.pps)
    else:
        out = recv(args.port, args.count, args.timeout, args.idle, args.ready_file)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
