"""UDP probe stream for one-way delay, IPDV, jitter and loss (runs inside emulated hosts).

All emulated hosts share the machine's clock, so `recv_time - send_time` is the exact one-way
delay. The sender puts a sequence number and its `time.time()` into each packet at a fixed rate;
the receiver logs `seq send_time recv_time` per arrival. Both stop on SIGTERM/SIGINT and flush.

    python probe.py recv --port 9000 --out recv.log
    python probe.py send --dst 10.0.0.2 --port 9000 --rate 100 --out send.log

Run it as a script (`python .../probe.py`), not with -m: it imports only the standard library,
so it starts in a few tens of milliseconds (the package would pull in pandas).
"""

from __future__ import annotations

import argparse
import signal
import socket
import struct
import sys
import time
from pathlib import Path

HEADER = struct.Struct("!Qd")  # sequence number, send time (unix seconds)


class _Flag:
    stop = False


def _on_signal(_signum, _frame):
    _Flag.stop = True  # a flag, not an exception: a second signal cannot interrupt the flush


def send(dst: str, port: int, rate_pps: float, size: int, out: Path, duration_s: float | None) -> int:
    """Send probes at `rate_pps` (absolute schedule, no drift) until stopped; log `seq send_time`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pad = b"\0" * max(0, size - HEADER.size)
    interval = 1.0 / rate_pps
    lines = []
    seq = 0
    start = time.time()
    print(f"probe sender started {start:.6f}", file=sys.stderr, flush=True)
    while not _Flag.stop and (duration_s is None or time.time() - start < duration_s):
        wait = start + seq * interval - time.time()
        if wait > 0:
            time.sleep(min(wait, 0.05))
            continue
        now = time.time()
        try:
            sock.sendto(HEADER.pack(seq, now) + pad, (dst, port))
            lines.append(f"{seq} {now:.6f}\n")
        except OSError as exc:  # e.g. link down: the packet counts as sent and lost
            lines.append(f"{seq} {now:.6f} {exc.errno}\n")
        seq += 1
    out.write_text("".join(lines))
    return 0


def recv(port: int, out: Path) -> int:
    """Log `seq send_time recv_time` for every probe until stopped."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(0.1)
    print(f"probe receiver started {time.time():.6f}", file=sys.stderr, flush=True)
    lines = []
    while not _Flag.stop:
        try:
            data = sock.recv(2048)
        except (TimeoutError, InterruptedError):
            continue
        now = time.time()
        if len(data) >= HEADER.size:
            seq, sent = HEADER.unpack_from(data)
            lines.append(f"{seq} {sent:.6f} {now:.6f}\n")
    out.write_text("".join(lines))
    return 0


def read_sent(path: Path) -> dict[int, float]:
    """seq -> send time, from a sender log."""
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                out[int(parts[0])] = float(parts[1])
    return out


def read_received(path: Path) -> dict[int, float]:
    """seq -> receive time (first arrival), from a receiver log."""
    out: dict[int, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                out.setdefault(int(parts[0]), float(parts[2]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="probe", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("--dst", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--rate", type=float, default=100.0)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--duration", type=float, default=None)
    s.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("recv")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.cmd == "send":
        return send(args.dst, args.port, args.rate, args.size, args.out, args.duration)
    return recv(args.port, args.out)


if __name__ == "__main__":
    sys.exit(main())
