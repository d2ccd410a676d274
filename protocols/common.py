"""Shared parts of the baseline protocols (kernel TCP, TCP+TLS, naive aioquic).

The baselines speak qtp's own framing (`protocols.qtp.messages`) for the `sink` exchange, so
they carry the same bytes of application framing as qtp:

    client: REQUEST{op: sink, size, seed, chunk_size, start}
    server: RESPONSE{}
    client: CHUNK(index, offset, data)* END{bytes}
    server: RESULT{ok, bytes, first_byte, last_byte, i0, bins, cpu_s}

`SinkReceiver` (server) and `SinkSender` (client) are sans I/O: the TCP and QUIC modules only
move bytes. The payload is `protocols.payload` (a pure function of seed and offset), verified
at the receiver. Receiver bins count bytes per 100 ms from the client's `start`, the same
clock (all emulated hosts run on one machine).
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from protocols import payload as payload_mod
from protocols.base import INTERVAL_S, TransferStats
from protocols.qtp import messages as m
from protocols.qtp.transfer import IntervalCounter

CHUNK_SIZE = m.DEFAULT_CHUNK  # 1 MiB, as qtp


class SinkReceiver(m.FrameHandler):
    """Server side of one sink exchange: `feed(bytes)` returns bytes to send back.

    Raises `QtpError` (a `ProtocolViolation` for malformed input) on anything but a clean
    exchange; `done` is True once RESULT has been produced. `cpu_clock` measures the CPU spent
    on this transfer (thread time for a thread per connection, process time for asyncio)."""

    def __init__(self, cpu_clock: Callable[[], float] = time.process_time) -> None:
        self._decoder = m.FrameDecoder(self, {m.REQUEST})
        self._cpu_clock = cpu_clock
        self._out: list[bytes] = []
        self.request: m.Request | None = None
        self.done = False
        self._verifier: payload_mod.PayloadVerifier | None = None
        self._counter: IntervalCounter | None = None
        self._chunk_left = 0
        self._cpu0 = 0.0

    @property
    def bytes(self) -> int:
        return self._verifier.verified if self._verifier else 0

    def feed(self, data: bytes | memoryview) -> bytes:
        self._decoder.feed(data)
        out = b"".join(self._out)
        self._out.clear()
        return out

    def eof(self) -> None:
        """The peer closed its side: an error unless the exchange has finished."""
        if not self.done:
            raise m.ProtocolViolation(f"stream ended after {self.bytes} payload bytes, before END")

    def on_message(self, msg: Any) -> None:
        if isinstance(msg, m.Request):
            if msg.op != "sink" or msg.chunks is not None:
                raise m.QtpError(m.ErrorCode.UNSUPPORTED, f"only whole-payload sinks, not {msg.op!r}")
            self.request = msg
            self._cpu0 = self._cpu_clock()
            self._verifier = payload_mod.PayloadVerifier(msg.seed)
            self._counter = IntervalCounter(msg.start if msg.start is not None else time.time(), INTERVAL_S)
            self._decoder.allow({m.CHUNK, m.END})
            self._out.append(m.encode(m.Response()))
        elif isinstance(msg, m.End):
            self._finish()

    def on_chunk_start(self, index: int, offset: int, length: int, digest: bytes | None) -> None:
        req = self.request
        assert req is not None and self._verifier is not None
        if offset != self._verifier.position or index * req.chunk_size != offset:
            expected = self._verifier.position
            raise m.ProtocolViolation(f"chunk {index} at offset {offset}: expected offset {expected}")
        if length > req.chunk_size or offset + length > req.size:
            raise m.ProtocolViolation(f"chunk {index} of {length} bytes exceeds the chunk size or payload")
        self._chunk_left = length

    def on_chunk_data(self, data: bytes | memoryview) -> None:
        assert self._verifier is not None and self._counter is not None
        if not self._verifier.feed(data):
            where = self._verifier.mismatch_at
            raise m.QtpError(m.ErrorCode.INTEGRITY, f"payload mismatch at offset {where}")
        self._counter.add(time.time(), len(data))

    def on_chunk_end(self) -> None:
        pass

    def _finish(self) -> None:
        req, counter = self.request, self._counter
        assert req is not None and counter is not None
        if self.bytes != req.size:
            raise m.ProtocolViolation(f"END after {self.bytes} of {req.size} payload bytes")
        i0, bins = counter.bins()
        result = m.Result(ok=True, bytes=self.bytes, first_byte=counter.first, last_byte=counter.last,
                          i0=i0, bins=bins, cpu_s=round(self._cpu_clock() - self._cpu0, 4))
        self._decoder.allow(set())
        self._out.append(m.encode(result))
        self.done = True


class SinkSender(m.FrameHandler):
    """Client side of one sink exchange: what to send, and the server's answers."""

    def __init__(self, size: int, seed: int, start: float, chunk_size: int = CHUNK_SIZE) -> None:
        self.size, self.seed, self.start, self.chunk_size = size, seed, start, chunk_size
        self._decoder = m.FrameDecoder(self, {m.RESPONSE, m.ERROR})
        self.response: m.Response | None = None
        self.result: m.Result | None = None

    def request(self) -> bytes:
        return m.encode(m.Request(op="sink", size=self.size, seed=self.seed, chunk_size=self.chunk_size,
                                  start=self.start))

    def frames(self) -> Iterator[tuple[bytes, bytes]]:
        """(CHUNK header, data) for the whole payload, in order."""
        gen = payload_mod.payload(self.seed)
        for index, offset in enumerate(range(0, self.size, self.chunk_size)):
            n = min(self.chunk_size, self.size - offset)
            yield m.encode_chunk_header(index, offset, n, None), gen.read(offset, n)

    def end(self) -> bytes:
        return m.encode(m.End(bytes=self.size))

    def feed(self, data: bytes | memoryview) -> None:
        """Bytes from the server; raises QtpError when the server reports an error."""
        self._decoder.feed(data)

    def on_message(self, msg: Any) -> None:
        if isinstance(msg, m.Error):
            raise msg.exception()
        if isinstance(msg, m.Response):
            self.response = msg
            self._decoder.allow({m.RESULT, m.ERROR})
        elif isinstance(msg, m.Result):
            self.result = msg
            self._decoder.allow(set())

    def on_chunk_start(self, index: int, offset: int, length: int, digest: bytes | None) -> None:
        raise m.ProtocolViolation("unexpected CHUNK from the server")

    def on_chunk_data(self, data: bytes | memoryview) -> None:  # pragma: no cover - never reached
        pass

    def on_chunk_end(self) -> None:  # pragma: no cover - never reached
        pass


def stats_from_result(
    stats: TransferStats, result: m.Result | None, size: int
) -> TransferStats:
    """Fill the receiver-side fields of `stats` from the server's RESULT; ok only if complete."""
    if result is None:
        stats.ok = False
        stats.error = stats.error or "no result from the receiver"
        return stats
    stats.bytes = result.bytes or 0
    stats.first_byte = result.first_byte
    stats.end = result.last_byte or stats.end
    stats.duration_s = max(stats.end - stats.start, 0.0)
    if stats.duration_s > 0:
        stats.goodput_mbps = stats.bytes * 8 / stats.duration_s / 1e6
    bins = result.bins or []
    i0 = result.i0 or 0
    stats.intervals = [[round((i0 + k) * INTERVAL_S, 6), n] for k, n in enumerate(bins)]
    stats.cpu_s_server = result.cpu_s
    if not result.ok or stats.bytes != size:
        stats.ok = False
        stats.error = stats.error or f"receiver verified {stats.bytes} of {size} bytes"
    return stats


def one_line(exc: BaseException) -> str:
    """An exception as one line for TransferStats.error."""
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def add_send_args(p: argparse.ArgumentParser, ccs: tuple[str, ...]) -> None:
    p.add_argument("--host", required=True, help="receiver address")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--size", type=int, required=True, help="payload bytes to send")
    p.add_argument("--seed", type=int, default=0, help="payload seed")
    p.add_argument("--cc", choices=ccs, default=ccs[0], help="congestion control")
    p.add_argument("--json", required=True, help="where to write TransferStats (JSON)")
    p.add_argument(
        "--timeout", type=float, default=120.0, help="give up when nothing arrives for this long (s)",
    )


def add_serve_args(p: argparse.ArgumentParser, ccs: tuple[str, ...]) -> None:
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bind", default="0.0.0.0", help="address to listen on")
    p.add_argument("--cc", choices=ccs, default=ccs[0], help="congestion control")
    p.add_argument("--workdir", default=".", help="scratch directory (certificates)")


def run_client(stats: TransferStats, path: str, body: Callable[[TransferStats], None]) -> int:
    """Run a transfer, always write `stats` to `path`; exit status 0 only if it succeeded."""
    cpu0 = time.process_time()
    try:
        body(stats)
    except (Exception, KeyboardInterrupt) as exc:  # the stats file must say why
        stats.ok = False
        stats.error = one_line(exc)
        if not isinstance(exc, (OSError, m.QtpError, TimeoutError, KeyboardInterrupt)):
            traceback.print_exc()
    stats.cpu_s_client = round(time.process_time() - cpu0, 4)
    if not stats.end:
        stats.end = time.time()
    stats.write(path)
    if not stats.ok:
        print(f"{stats.protocol}: transfer failed: {stats.error}", file=sys.stderr)
    return 0 if stats.ok else 1


def reject_unknown_options(protocol: str, options: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """Driver options are per protocol: a typo must not silently change nothing."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(allowed) or "none"
        raise ValueError(f"protocol {protocol} has no option(s) {', '.join(unknown)} (allowed: {known})")


# ------------------------------------------------------------------- local runs (tests, bench)


READY_MARKERS = (b"listening", b"serving")  # what the baselines' and qtp's servers print when ready


def wait_server_ready(proc: subprocess.Popen, log_path: str | Path, timeout: float = 20.0) -> None:
    """Wait until the server writing `log_path` says it listens; RuntimeError if it exits or
    stays silent for `timeout` seconds."""
    log_path = Path(log_path)
    deadline = time.monotonic() + timeout
    while True:
        log = log_path.read_bytes() if log_path.exists() else b""
        if any(marker in log for marker in READY_MARKERS):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.decode(errors="replace")[-300:]
            raise RuntimeError(f"server did not start: {tail}")
        time.sleep(0.05)


class LocalServer:
    """A driver's server command run as a local process, ready once its log says so.

    For tests and benchmarks on one host; experiments start servers in emulated hosts."""

    def __init__(self, argv: list[str], log_path: str, ready_timeout: float = 20.0) -> None:
        self.argv, self.log_path, self.ready_timeout = argv, log_path, ready_timeout
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LocalServer:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_server_ready(self.proc, self.log_path, self.ready_timeout)
        except RuntimeError:
            self.__exit__()
            raise
        return self

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on all local addresses now (TCP or UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]
