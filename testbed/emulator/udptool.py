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


SO_TIMESTAMPING = 37
# software TX timestamps (taken in the veth's xmit), reported without the packet, numbered
TS_FLAGS = (1 << 1) | (1 << 4) | (1 << 7) | (1 << 11)  # TX_SOFTWARE | SOFTWARE | OPT_ID | OPT_TSONLY
SOCK_EE = struct.Struct("=IBBBBII")  # struct sock_extended_err: errno, origin, type, code, pad, info, data


def _drain_tx_stamps(s: socket.socket, stamps: dict[int, int]) -> None:
    """Collect the kernel's transmit timestamps (seq -> ns, CLOCK_REALTIME) from the error queue."""
    while True:
        try:
            _data, anc, _flags, _addr = s.recvmsg(1, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        ts = seq = None
        for level, kind, val in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING:
                sec, nsec = struct.unpack_from("qq", val)
                ts = sec * 1_000_000_000 + nsec
            elif len(val) >= SOCK_EE.size:  # IP_RECVERR: the OPT_ID counter in ee_data
                seq = SOCK_EE.unpack_from(val)[6]
        if ts and seq is not None:
            stamps[seq] = ts


def send(dst: str, port: int, count: int, size: int, pps: float) -> dict:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TS_FLAGS)
    stamps: dict[int, int] = {}
    pad = bytes(max(0, size - HEADER.size))
    gap = 1.0 / pps if pps > 0 else 0.0
    start = time.monotonic()
    for seq in range(count):
        if gap:
            wait = start + seq * gap - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        s.sendto(HEADER.pack(seq, time.time_ns()) + pad, (dst, port))
        if seq % 64 == 63:
            _drain_tx_stamps(s, stamps)
    time.sleep(0.05)
    _drain_tx_stamps(s, stamps)
    return {"sent": count, "duration_s": time.monotonic() - start, "tx_ns": stamps}


def _ipv4_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, frame_len: int, port: int = 9) -> bytes:
    """One Ethernet/IPv4/UDP frame of `frame_len` bytes (FCS excluded; at least 60)."""
    frame_len = max(60, frame_len)
    payload = bytes(frame_len - 14 - 20 - 8)
    udp = struct.pack("!HHHH", port, port, 8 + len(payload), 0) + payload  # checksum 0: none (IPv4)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                     socket.inet_aton(src_ip), socket.inet_aton(dst_ip))  # fmt: skip
    ip = ip[:10] + struct.pack("!H", _ipv4_checksum(ip)) + ip[12:]
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    return eth + ip + udp


def flood(ifname: str, dst_mac: str, src_ip: str, dst_ip: str, frame_len: int, seconds: float) -> dict:
    """Send one prebuilt frame as fast as a raw socket allows: an offered load above what the
    emulator forwards, to measure its packet rate."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    with open(f"/sys/class/net/{ifname}/address") as f:
        src_mac = f.read().strip()
    frame = udp_frame(src_mac, dst_mac, src_ip, dst_ip, frame_len)
    send = s.send
    sent = 0
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        for _ in range(256):
            send(frame)
        sent += 256
    return {"sent": sent, "duration_s": time.monotonic() - start}


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
    rx_stamps: list[int] = []
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
        rx_stamps.append(rx_ns)
    return {"received": len(seqs), "seqs": seqs, "owd_ms": owd_ms, "arrival_s": arrival_s, "rx_ns": rx_stamps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.emulator.udptool")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("send")
    a.add_argument("--dst", required=True)
    a.add_argument("--port", type=int, default=5999)
    a.add_argument("--count", type=int, default=1000)
    a.add_argument("--size", type=int, default=100, help="UDP payload bytes")
    a.add_argument("--pps", type=float, default=0, help="0: as fast as possible")
    f = sub.add_parser("flood")
    f.add_argument("--ifname", default="eth0")
    f.add_argument("--dst-mac", required=True)
    f.add_argument("--src-ip", required=True)
    f.add_argument("--dst-ip", required=True)
    f.add_argument("--frame-len", type=int, default=60, help="bytes without FCS")
    f.add_argument("--seconds", type=float, default=3)
    b = sub.add_parser("recv")
    b.add_argument("--port", type=int, default=5999)
    b.add_argument("--count", type=int, default=1000)
    b.add_argument("--timeout", type=float, default=30)
    b.add_argument("--idle", type=float, default=1.0, help="stop after this long without a datagram")
    b.add_argument("--ready-file")
    args = ap.parse_args(argv)
    if args.cmd == "send":
        out = send(args.dst, args.port, args.count, args.size, args.pps)
    elif args.cmd == "flood":
        out = flood(args.ifname, args.dst_mac, args.src_ip, args.dst_ip, args.frame_len, args.seconds)
    else:
        out = recv(args.port, args.count, args.timeout, args.idle, args.ready_file)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
