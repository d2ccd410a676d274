"""Kernel TCP and TCP+TLS baselines: the same sink exchange as qtp over a kernel TCP stream.

    python -m protocols.tcp serve --port 5201 [--cc cubic] [--tls --workdir DIR]
    python -m protocols.tcp send --host 10.0.0.2 --port 5201 --size 100000000 --seed 1 \\
        --cc bbr --json stats.json [--tls]

The congestion control is set per socket with TCP_CONGESTION (sender and receiver), socket
buffers are set big (8 MiB asked, the kernel doubles it; `--buffer 0` keeps autotuning). The
server runs one thread per connection, so a stalled, vanished or garbage-sending client costs
only its own thread, and `cpu_s` of a transfer is that thread's CPU time. TLS: TLS 1.3 with a
self-signed certificate made in the server's workdir; the client does not authenticate the
server (the baseline measures the cost of encryption, not of a PKI). Sender statistics come
from TCP_INFO read after the receiver's RESULT, i.e. once all data is acknowledged.
"""
from __future__ import annotations

import argparse
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.base import ProtocolDriver, TransferStats
from protocols.common import (
    CHUNK_SIZE,
    SinkReceiver,
    SinkSender,
    add_send_args,
    add_serve_args,
    one_line,
    reject_unknown_options,
    run_client,
    stats_from_result,
)
from protocols.qtp import messages as m

CCS = ("cubic", "bbr", "reno")
DEFAULT_BUFFER = 8 << 20
RECV_BUFFER = 1 << 20
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)
TCP_INFO = getattr(socket, "TCP_INFO", 11)
OPTIONS = ("buffer_bytes", "chunk_size")

# struct tcp_info (include/uapi/linux/tcp.h): (field, byte offset, struct format). Fields past
# the length the kernel returns are absent (older kernels return a shorter struct).
TCP_INFO_FIELDS = (
    ("state", 0, "B"),
    ("ca_state", 1, "B"),
    ("retransmits", 2, "B"),
    ("rto_us", 8, "I"),
    ("snd_mss", 16, "I"),
    ("rcv_mss", 20, "I"),
    ("unacked", 24, "I"),
    ("lost", 32, "I"),  # currently lost segments (not a total)
    ("retrans", 36, "I"),  # currently retransmitted, unacked segments
    ("pmtu", 60, "I"),
    ("rtt_us", 68, "I"),  # smoothed RTT
    ("rttvar_us", 72, "I"),
    ("snd_ssthresh", 76, "I"),
    ("snd_cwnd", 80, "I"),  # segments
    ("total_retrans", 100, "I"),  # segments retransmitted over the connection's life
    ("pacing_rate", 104, "Q"),  # bytes/s
    ("bytes_acked", 120, "Q"),
    ("segs_out", 136, "I"),  # all segments sent, incl. pure ACKs and retransmissions
    ("min_rtt_us", 148, "I"),
    ("data_segs_out", 156, "I"),
    ("delivery_rate", 160, "Q"),  # bytes/s, most recent sample
    ("bytes_sent", 200, "Q"),  # data bytes sent incl. retransmissions (kernel >= 4.19)
    ("bytes_retrans", 208, "Q"),
)
TCP_INFO_LEN = 232


def parse_tcp_info(raw: bytes) -> dict[str, int]:
    """The TCP_INFO fields we use, from the raw getsockopt bytes."""
    out = {}
    for name, offset, fmt in TCP_INFO_FIELDS:
        size = struct.calcsize(fmt)
        if offset + size <= len(raw):
            out[name] = struct.unpack_from("=" + fmt, raw, offset)[0]
    return out


def tcp_info(sock: socket.socket) -> dict[str, int]:
    return parse_tcp_info(sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, TCP_INFO_LEN))


def set_congestion(sock: socket.socket, cc: str) -> None:
    """Set TCP_CONGESTION; a clear error when the kernel does not offer `cc`."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, cc.encode())
    except OSError as exc:
        try:
            available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
        except OSError:
            available = []
        raise OSError(f"kernel refuses TCP congestion control {cc!r} ({exc.strerror}); "
                      f"available: {', '.join(available) or 'unknown'}") from None
    got = sock.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16).split(b"\0", 1)[0].decode()
    if got != cc:
        raise OSError(f"asked for TCP congestion control {cc!r}, socket uses {got!r}")


def set_buffers(sock: socket.socket, size: int) -> None:
    if size > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


# ------------------------------------------------------------------------------- server


@dataclass
class ServerConfig:
    port: int
    bind: str
    cc: str
    buffer: int
    tls: ssl.SSLContext | None
    idle_timeout: float = 120.0


def server_tls_context(workdir: str) -> ssl.SSLContext:
    from protocols.qtp.certs import ensure_self_signed

    cert, key = ensure_self_signed(workdir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def client_tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def handle_connection(conn: socket.socket, peer: Any, cfg: ServerConfig) -> None:
    """Receive one sink exchange; any failure closes only this connection."""
    receiver = SinkReceiver(cpu_clock=time.thread_time)
    try:
        conn.settimeout(cfg.idle_timeout)
        if cfg.tls is not None:
            conn = cfg.tls.wrap_socket(conn, server_side=True)
        buf = bytearray(RECV_BUFFER)
        view = memoryview(buf)
        while not receiver.done:
            n = conn.recv_into(buf)
            if n == 0:
                receiver.eof()
            reply = receiver.feed(view[:n])
            if reply:
                conn.sendall(reply)
        # Wait for the client to close, so our FIN does not race its reading of RESULT.
        conn.settimeout(10)
        while conn.recv(4096):
            pass
    except m.QtpError as exc:
        print(f"tcp server: {peer}: {exc}", file=sys.stderr)
        try:
            conn.sendall(m.encode(m.Error(exc.code, exc.message)))
        except (OSError, ValueError):
            pass
    except (OSError, ssl.SSLError, ValueError) as exc:
        print(f"tcp server: {peer}: {one_line(exc)}", file=sys.stderr)
    finally:
        conn.close()


def serve(cfg: ServerConfig) -> None:
    family = socket.AF_INET6 if ":" in cfg.bind else socket.AF_INET
    lsock = socket.socket(family, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    set_congestion(lsock, cfg.cc)  # inherited by accepted sockets
    set_buffers(lsock, cfg.buffer)
    lsock.bind((cfg.bind, cfg.port))
    lsock.listen(64)
    print(f"tcp server: listening on {cfg.bind}:{cfg.port} cc={cfg.cc} tls={cfg.tls is not None}",
          file=sys.stderr, flush=True)
    while True:
        conn, peer = lsock.accept()
        set_congestion(conn, cfg.cc)
        threading.Thread(target=handle_connection, args=(conn, peer, cfg), daemon=True).start()


# ------------------------------------------------------------------------------- client


def recv_until(sock: socket.socket, sender: SinkSender, done: Any) -> None:
    while not done():
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("receiver closed the connection before answering")
        sender.feed(data)


def send(args: argparse.Namespace, stats: TransferStats) -> None:
    sender = SinkSender(args.size, args.seed, stats.start, args.chunk_size)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock: socket.socket = socket.socket(family, socket.SOCK_STREAM)
    try:
        set_congestion(sock, args.cc)
        set_buffers(sock, args.buffer)
        sock.settimeout(args.timeout)
        sock.connect((args.host, args.port))
        if args.tls:
            sock = client_tls_context().wrap_socket(sock)
            stats.extra["tls"] = {"version": sock.version(), "cipher": sock.cipher()[0]}
        sock.sendall(sender.request())
        recv_until(sock, sender, lambda: sender.response is not None)
        for header, data in sender.frames():
            sock.sendall(header)
            sock.sendall(data)
        sock.sendall(sender.end())
        recv_until(sock, sender, lambda: sender.result is not None)
        info = tcp_info(sock)
    finally:
        sock.close()
    stats_from_result(stats, sender.result, args.size)
    mss = info.get("snd_mss", 0)
    stats.rtt_min_ms = info["min_rtt_us"] / 1e3 if "min_rtt_us" in info else None
    stats.rtt_smoothed_ms = info["rtt_us"] / 1e3 if "rtt_us" in info else None
    stats.cwnd_bytes = info.get("snd_cwnd", 0) * mss or None
    stats.packets_sent = info.get("data_segs_out")
    stats.retransmits = info.get("total_retrans")
    stats.bytes_sent = info.get("bytes_sent")
    stats.extra.update({"tcp_info": info, "buffer_bytes": args.buffer, "chunk_size": args.chunk_size})


# ------------------------------------------------------------------------------- drivers


class TcpDriver(ProtocolDriver):
    name = "tcp"
    congestion_controls = CCS
    description = "kernel TCP (TCP_CONGESTION per socket), qtp's sink framing"
    tls = False

    def _common(self, cc: str | None, options: dict[str, Any]) -> list[str]:
        reject_unknown_options(self.name, options, OPTIONS)
        argv = ["--cc", self.check_cc(cc)]
        if "buffer_bytes" in options:
            argv += ["--buffer", str(int(options["buffer_bytes"]))]
        if self.tls:
            argv.append("--tls")
        return argv

    def server_argv(self, port: int, *, cc: str | None, workdir: str, options: dict[str, Any]) -> list[str]:
        return [sys.executable, "-m", "protocols.tcp", "serve", "--port", str(port), "--workdir", workdir,
                *self._common(cc, options)]

    def client_argv(self, server_ip: str, port: int, *, size: int, seed: int, cc: str | None, stats_path: str,
                    workdir: str, options: dict[str, Any]) -> list[str]:
        argv = [sys.executable, "-m", "protocols.tcp", "send", "--host", server_ip, "--port", str(port),
                "--size", str(size), "--seed", str(seed), "--json", stats_path, *self._common(cc, options)]
        if "chunk_size" in options:
            argv += ["--chunk-size", str(int(options["chunk_size"]))]
        return argv


class TcpTlsDriver(TcpDriver):
    name = "tcp-tls"
    description = "kernel TCP + TLS 1.3 (Python ssl), qtp's sink framing"
    tls = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protocols.tcp", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, add in (("serve", add_serve_args), ("send", add_send_args)):
        p = sub.add_parser(name)
        add(p, CCS)
        p.add_argument("--tls", action="store_true", help="TLS 1.3 over the TCP connection")
        p.add_argument("--buffer", type=int, default=DEFAULT_BUFFER,
                       help="SO_SNDBUF/SO_RCVBUF bytes (0: autotune)")
    sub.choices["send"].add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
    args = parser.parse_args(argv)
    if args.command == "serve":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        tls = server_tls_context(args.workdir) if args.tls else None
        try:
            serve(ServerConfig(args.port, args.bind, args.cc, args.buffer, tls))
        except OSError as exc:
            print(f"tcp server: {one_line(exc)}", file=sys.stderr)
            return 1
        return 0
    protocol = "tcp-tls" if args.tls else "tcp"
    stats = TransferStats(protocol=protocol, cc=args.cc, ok=True, start=time.time())
    return run_client(stats, args.json, lambda s: send(args, s))


if __name__ == "__main__":
    sys.exit(main())
