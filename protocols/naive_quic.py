"""Naive aioquic baseline: what a developer gets from aioquic's asyncio API out of the box.

    python -m protocols.naive_quic serve --port 4433 [--cc reno] --workdir DIR
    python -m protocols.naive_quic send --host 10.0.0.2 --port 4433 --size N --seed 1 \\
        --cc cubic --json stats.json

`aioquic.asyncio.serve`/`connect` with a default `QuicConfiguration` (1200-byte datagrams,
1 MiB connection and stream windows), one stream from `create_stream()`, data written with
`StreamWriter.write`, and qtp's sink framing on it. It is the reference for what qtp adds, so
it is deliberately not tuned. The one addition: the writer waits while more than 16 MiB is
buffered in the stream (aioquic's writer has no back-pressure, so writing a large payload
would otherwise hold all of it in memory) — a memory bound, not a speed-up.

cc: "reno", "cubic" (aioquic's own) and "bbr" (protocols.qtp.bbr). Sender statistics come
from the connection's recovery state (RTT, cwnd) and a count of lost packets.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
import sys
import time
from typing import Any

from aioquic.asyncio import connect, serve
from aioquic.quic.configuration import QuicConfiguration

from protocols.base import ProtocolDriver, TransferStats
from protocols.common import (
    SinkReceiver,
    SinkSender,
    add_send_args,
    add_serve_args,
    one_line,
    reject_unknown_options,
    run_client,
    stats_from_result,
)
from protocols.qtp import bbr  # registers "bbr" with aioquic
from protocols.qtp import messages as m

ALPN = "tb-naive-quic"
CCS = ("reno", "cubic", "bbr")
WRITE_BUFFER_LIMIT = 16 << 20
READ_SIZE = 65536


# ------------------------------------------------------------------------------- server


async def handle_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One sink exchange on one stream; errors end only this stream."""
    receiver = SinkReceiver(cpu_clock=time.process_time)
    reply = b""  # an ERROR frame, when the exchange fails
    try:
        while not receiver.done:
            data = await reader.read(READ_SIZE)
            if not data:
                receiver.eof()
            out = receiver.feed(data)
            if out:
                writer.write(out)
    except m.QtpError as exc:
        print(f"aioquic server: {exc}", file=sys.stderr)
        reply = m.encode(m.Error(exc.code, exc.message))
    except Exception as exc:
        print(f"aioquic server: {one_line(exc)}", file=sys.stderr)
    with contextlib.suppress(Exception):  # the connection may be gone already
        writer.write(reply)
        writer.write_eof()


def server_configuration(cc: str, workdir: str) -> QuicConfiguration:
    from protocols.qtp.certs import ensure_self_signed

    config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN], congestion_control_algorithm=cc)
    cert, key = ensure_self_signed(workdir)
    config.load_cert_chain(str(cert), str(key))
    return config


async def run_server(args: argparse.Namespace) -> None:
    tasks: set[asyncio.Task] = set()

    def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(handle_stream(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await serve(args.bind, args.port, configuration=server_configuration(args.cc, args.workdir),
                stream_handler=on_stream)
    print(f"aioquic server: listening on {args.bind}:{args.port} cc={args.cc}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


# ------------------------------------------------------------------------------- client


async def send(args: argparse.Namespace, stats: TransferStats) -> None:
    sender = SinkSender(args.size, args.seed, stats.start)
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], congestion_control_algorithm=args.cc,
                               verify_mode=ssl.CERT_NONE)
    async with contextlib.AsyncExitStack() as stack:
        # aioquic would retry the handshake until its 60 s idle timeout
        client = await asyncio.wait_for(
            stack.enter_async_context(connect(args.host, args.port, configuration=config)), args.timeout)
        reader, writer = await client.create_stream()
        quic = client._quic
        lost = count_lost_packets(quic)

        async def receive_until(done: Any) -> None:
            while not done():
                data = await asyncio.wait_for(reader.read(READ_SIZE), args.timeout)
                if not data:
                    raise ConnectionError("receiver closed the stream before answering")
                sender.feed(data)

        writer.write(sender.request())
        await receive_until(lambda: sender.response is not None)
        stream_id = writer.get_extra_info("stream_id")
        for header, data in sender.frames():
            writer.write(header)
            writer.write(data)
            await wait_buffer_below(quic, stream_id, WRITE_BUFFER_LIMIT)
        writer.write(sender.end())
        await receive_until(lambda: sender.result is not None)
        recovery = quic._loss
        stats.rtt_min_ms = recovery._rtt_min * 1e3 if recovery._rtt_initialized else None
        stats.rtt_smoothed_ms = recovery._rtt_smoothed * 1e3 if recovery._rtt_initialized else None
        stats.cwnd_bytes = recovery.congestion_window
        stats.packets_sent = quic._packet_number
        stats.packets_lost = stats.retransmits = lost[0]
        stats.bytes_sent = sum(path.bytes_sent for path in quic._network_paths)
        stats.extra.update({"max_datagram_size": config.max_datagram_size, "max_data": config.max_data,
                            "max_stream_data": config.max_stream_data})
        if isinstance(recovery._cc, bbr.BbrCongestionControl):
            stats.extra["bbr"] = recovery._cc.snapshot()
        writer.write_eof()
    stats_from_result(stats, sender.result, args.size)


def count_lost_packets(quic: Any) -> list[int]:
    """A counter (one-element list) of packets the sender declared lost: aioquic keeps none."""
    cc = quic._loss._cc
    counter = [0]
    on_lost = cc.on_packets_lost

    def counting(*, now: float, packets: Any) -> None:
        packets = list(packets)
        counter[0] += len(packets)
        on_lost(now=now, packets=packets)

    cc.on_packets_lost = counting
    return counter


async def wait_buffer_below(quic: Any, stream_id: int, limit: int) -> None:
    """Wait until at most `limit` bytes are buffered (unacknowledged) in the stream."""
    stream = quic._streams.get(stream_id)
    while stream is not None and stream.sender._buffer_stop - stream.sender._buffer_start > limit:
        await asyncio.sleep(0.002)


# ------------------------------------------------------------------------------- driver


class NaiveQuicDriver(ProtocolDriver):
    name = "aioquic"
    congestion_controls = CCS
    description = "aioquic's asyncio API used naively: defaults, one stream, StreamWriter"

    def server_argv(self, port: int, *, cc: str | None, workdir: str, options: dict[str, Any]) -> list[str]:
        reject_unknown_options(self.name, options, ())
        return [sys.executable, "-m", "protocols.naive_quic", "serve", "--port", str(port), "--cc",
                self.check_cc(cc), "--workdir", workdir]

    def client_argv(self, server_ip: str, port: int, *, size: int, seed: int, cc: str | None, stats_path: str,
                    workdir: str, options: dict[str, Any]) -> list[str]:
        reject_unknown_options(self.name, options, ())
        return [sys.executable, "-m", "protocols.naive_quic", "send", "--host", server_ip,
                "--port", str(port), "--size", str(size), "--seed", str(seed), "--cc", self.check_cc(cc),
                "--json", stats_path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protocols.naive_quic",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_args(sub.add_parser("serve"), CCS)
    add_send_args(sub.add_parser("send"), CCS)
    args = parser.parse_args(argv)
    if args.command == "serve":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            asyncio.run(run_server(args))
        except OSError as exc:
            print(f"aioquic server: {one_line(exc)}", file=sys.stderr)
            return 1
        return 0
    stats = TransferStats(protocol="aioquic", cc=args.cc, ok=True, start=time.time())

    def body(s: TransferStats) -> None:
        asyncio.run(send(args, s))

    return run_client(stats, args.json, body)


if __name__ == "__main__":
    sys.exit(main())
