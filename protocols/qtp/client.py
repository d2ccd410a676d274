"""qtp client: connect, and the client side of each operation (asyncio, one connection).

`Client` holds one QUIC connection; its methods run one exchange each on a new stream
and may run concurrently (directory transfers keep several files in flight).
High-level helpers (`get_path`, `put_path`, `send_generated`, ...) add resume, refetch of
chunks that failed verification, and the whole-file digest check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat as stat_mod
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioquic.quic.packet import QuicErrorCode

from .. import payload as payload_mod
from . import certs, config, io, testhooks
from . import messages as m
from .messages import QtpError
from .transfer import (
    ChunkLayout,
    ChunkReceiver,
    ChunkSet,
    ChunkSource,
    IntervalCounter,
    OrderedHasher,
    PartFile,
    PartFileBusy,
    ResumeRecord,
    count_ranges,
    state_path,
)


def unix_now() -> float:
    return time.time()


class HandshakeFailed(QtpError):
    def __init__(self, message: str):
        super().__init__(m.ErrorCode.INTERNAL, message)


class TransferTimeout(QtpError):
    def __init__(self, message: str):
        super().__init__(m.ErrorCode.TIMEOUT, message)


class LocalError(QtpError):
    """A problem on this side (local file missing, not writable, ...)."""

    def __init__(self, message: str):
        super().__init__(m.ErrorCode.INTERNAL, message)


@dataclass
class ClientOptions:
    cc: str = config.DEFAULT_CC
    mtu: int | None = None  # None: discover (IP_MTU of the route), capped at jumbo
    insecure: bool = False
    ca: str | None = None
    server_name: str | None = None
    state_dir: str | None = None
    chunk_size: int = m.DEFAULT_CHUNK
    bdp: int | None = None  # bytes; sizes the flow-control windows
    socket_buffer: int | None = None  # SO_RCVBUF/SO_SNDBUF (default 16 MiB)
    idle_timeout: float = 30.0
    handshake_timeout: float = 10.0
    qlog_dir: str | None = None
    session_tickets: bool = True
    early_data: bool = True  # send read-only requests as 0-RTT when a ticket allows it
    parallel_files: int = 8  # files in flight in directory transfers
    retries: int = 3  # rounds of refetching chunks that failed verification
    resume: bool = True
    server_cc: str | None = None  # ask the server to use this cc when it sends (get)
    progress: Callable[[int], None] | None = None  # called with bytes verified/sent

    def state(self) -> Path:
        return Path(self.state_dir) if self.state_dir else certs.default_state_dir()


# ---------------------------------------------------------------------------- connection


class Client:
    """One qtp connection to a server."""

    def __init__(self, conn: io.Conn, udp: io.UdpSocket, options: ClientOptions, host: str, port: int):
        self.conn = conn
        self.udp = udp
        self.options = options
        self.host, self.port = host, port
        self.started = unix_now()

    # -- lifecycle
    @classmethod
    async def connect(
        cls, host: str, port: int, options: ClientOptions | None = None, *, wait_handshake: bool = True
    ) -> Client:
        options = options or ClientOptions()
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise HandshakeFailed(f"cannot resolve {host}: {exc}") from None
        family, addr = infos[0][0], infos[0][4]
        if options.mtu:
            mds = io.datagram_size_for(options.mtu, family, cap=None)
        else:
            mds = io.datagram_size_for(io.path_mtu(addr, family), family)
        cfg = config.base_configuration(
            is_client=True,
            cc=options.cc,
            max_datagram_size=mds,
            bdp=options.bdp,
            idle_timeout=options.idle_timeout,
            qlog_dir=options.qlog_dir,
        )
        certs.configure_client(
            cfg, host, ca=options.ca, insecure=options.insecure, server_name=options.server_name
        )
        handler = None
        if options.session_tickets:
            store = config.TicketStore(options.state())
            cfg.session_ticket = store.load(host, port, cfg.server_name)
            handler = store.saver(host, port, cfg.server_name)
        try:
            conn, udp = await io.open_client(
                addr[0], port, cfg, session_ticket_handler=handler, buffer_size=options.socket_buffer
            )
        except OSError as exc:
            raise HandshakeFailed(f"cannot reach {host}:{port}: {exc}") from None
        client = cls(conn, udp, options, host, port)
        conn.data["early"] = cfg.session_ticket is not None and options.early_data
        client._watchdog = loop.call_later(options.handshake_timeout, client._handshake_timeout)
        conn.handshake.add_done_callback(lambda f: client._watchdog.cancel())
        if wait_handshake or not conn.data["early"]:
            await client.wait_handshake()
        return client

    def _handshake_timeout(self) -> None:
        if not self.conn.handshake.done():
            self.conn.data["handshake_timeout"] = True
            self.conn.close(QuicErrorCode.NO_ERROR, "handshake timeout")
            # the peer may never answer: end locally
            self.conn._terminated(_Terminated(QuicErrorCode.INTERNAL_ERROR, "handshake timeout", 0))

    async def wait_handshake(self) -> None:
        try:
            await asyncio.shield(self.conn.handshake)
        except io.ConnectionClosed as exc:
            raise self.translate(exc) from None

    def translate(self, exc: Exception) -> Exception:
        """Turn a connection-level failure into the error the user should see."""
        if not isinstance(exc, io.ConnectionClosed):
            return exc
        if self.conn.data.get("handshake_timeout"):
            return HandshakeFailed(
                f"no QUIC handshake with {self.host}:{self.port} within {self.options.handshake_timeout:g} s"
            )
        ev = self.conn.close_event
        if not self.conn.handshake.done() or self.conn.handshake.exception() is not None:
            if ev is not None and ev.error_code == QuicErrorCode.APPLICATION_ERROR:
                return QtpError(m.ErrorCode.BUSY, "connection refused by the server (busy)")
            reason = ev.reason_phrase if ev is not None else str(exc)
            return HandshakeFailed(f"QUIC handshake with {self.host}:{self.port} failed: {reason or exc}")
        if ev is not None and "idle timeout" in (ev.reason_phrase or "").lower():
            return TransferTimeout(f"connection to {self.host}:{self.port} timed out (idle)")
        return exc

    @property
    def handshake_info(self) -> dict:
        ev = self.conn.handshake_event
        if ev is None:
            return {}
        return {
            "session_resumed": ev.session_resumed,
            "early_data_accepted": ev.early_data_accepted,
            "alpn": ev.alpn_protocol,
        }

    async def close(self, timeout: float = 2.0) -> None:
        conn = self.conn
        if not conn.is_closed:
            conn.close(0, "")
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(conn.terminated), timeout)
        self.udp.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- exchanges
    async def _run(self, future: asyncio.Future) -> Any:
        try:
            return await future
        except io.ConnectionClosed as exc:
            raise self.translate(exc) from None

    async def stat(self, path: str) -> m.Response:
        return await self._run(SimpleRequest(self, m.Request(op="stat", path=path)).begin())

    async def mkdir(self, path: str) -> m.Response:
        return await self._run(SimpleRequest(self, m.Request(op="mkdir", path=path)).begin())

    async def digest(self, path: str) -> m.Response:
        return await self._run(SimpleRequest(self, m.Request(op="digest", path=path)).begin())

    async def list(self, path: str) -> list[m.Entry]:
        return await self._run(ListRequest(self, m.Request(op="list", path=path)).begin())

    # -- files
    async def get_file(
        self,
        remote: str,
        local: str | os.PathLike,
        *,
        size: int | None = None,
        mtime_ns: int | None = None,
        chunks: list[tuple[int, int]] | None = None,
        part: PartFile | None = None,
        finish: bool = True,
        counter: IntervalCounter | None = None,
        resume: bool | None = None,
    ) -> FileResult:
        """Download one file to `local` (resuming from `<local>.qtp-state` when it matches).

        With `chunks` (striping) only those chunks are fetched into `part` (prepared by
        the caller) and nothing is finished or digest-checked here."""
        opts = self.options
        t0 = unix_now()
        if size is None or mtime_ns is None:
            st = await self.stat(remote)
            if st.type != "file":
                raise QtpError(m.ErrorCode.BAD_REQUEST, f"{remote} is not a file")
            size, mtime_ns = st.size, st.mtime_ns
        layout = ChunkLayout(size, opts.chunk_size)
        own_part = part is None
        if own_part:
            part = PartFile(local, self.source_id(remote), layout, mtime_ns)
            try:
                part.open(resume=opts.resume if resume is None else resume)
            except PartFileBusy as exc:
                raise LocalError(str(exc)) from None
            except OSError as exc:
                raise LocalError(f"cannot write {part.part}: {exc.strerror or exc}") from None
        result = FileResult(path=str(local), size=size, resumed_bytes=layout.bytes_in(part.verified.ranges()))
        try:
            wanted = ChunkSet(layout.nchunks, chunks) if chunks is not None else ChunkSet.full(layout.nchunks)
            for i in list(wanted):
                if i in part.verified:
                    wanted.discard(i)
            whole = wanted.count == layout.nchunks  # a fresh full download: digest on the fly
            hasher = OrderedHasher() if whole else None
            server_sha: str | None = None
            rounds = 0
            while wanted.count:
                if rounds > opts.retries:
                    raise QtpError(
                        m.ErrorCode.INTEGRITY,
                        f"{remote}: chunks {wanted.ranges()} failed verification {rounds} times",
                    )
                req = m.Request(
                    op="get",
                    path=remote,
                    chunk_size=layout.chunk_size,
                    chunks=wanted.ranges(),
                    expect={"size": size, "mtime_ns": mtime_ns},
                    cc=opts.server_cc,
                )
                recv = ChunkReceiver(
                    layout,
                    ChunkSet(layout.nchunks, wanted.ranges()),
                    verified=None,
                    commit=part.write,
                    hasher=hasher,
                    on_verified=self._verified_cb(part, layout, result),
                )
                h = GetRequest(self, req, recv, counter=counter)
                end: m.End = await self._run(h.begin())
                result.rounds += 1
                if end.sha256:
                    server_sha = end.sha256
                result.bytes_received += recv.bytes_received
                result.bad_chunks += len(recv.failed)
                wanted = ChunkSet(layout.nchunks, sorted((a, a + 1) for a in recv.failed))
                rounds += 1
                if recv.failed:
                    hasher = None  # the in-order digest has a gap now
            part.flush()
            if not finish:
                return result
            # whole-file digest
            if server_sha is None or hasher is None or hasher.pos != size:
                if server_sha is None:  # a partial request: ask the server for the digest
                    server_sha = (await self.digest(remote)).sha256
                local_sha = await asyncio.get_running_loop().run_in_executor(None, part.sha256)
            else:
                local_sha = hasher.finish(size)
            if local_sha != server_sha and own_part and result.resumed_bytes:
                # chunks kept from an earlier session no longer match: fetch everything again
                part.discard()
                fresh = await self.get_file(
                    remote, local, size=size, mtime_ns=mtime_ns, counter=counter, resume=False
                )
                fresh.extra["restarted"] = True
                return fresh
            if local_sha != server_sha:
                part.discard()
                raise QtpError(
                    m.ErrorCode.INTEGRITY,
                    f"{remote}: SHA-256 of the whole file differs ({local_sha[:16]}... vs "
                    f"{server_sha[:16]}...); partial file discarded",
                )
            result.sha256 = local_sha
            part.finish(mtime_ns)
            result.duration_s = unix_now() - t0
            return result
        except BaseException:
            if own_part:
                part.close()  # keep what verified for a resume
            raise

    def _verified_cb(self, part: PartFile, layout: ChunkLayout, result: FileResult):
        progress = self.options.progress

        def on_verified(index: int) -> None:
            part.mark(index)
            n = layout.length(index)
            result.bytes_verified += n
            if progress is not None:
                progress(n)

        return on_verified

    def source_id(self, remote: str) -> str:
        return f"qtp://{self.host}:{self.port}/{remote}"

    async def put_file(self, local: str | os.PathLike, remote: str) -> FileResult:
        """Upload one file; the server keeps it under a temporary name until it verified."""
        opts = self.options
        t0 = unix_now()
        try:
            fd = os.open(local, os.O_RDONLY)
        except OSError as exc:
            raise LocalError(f"cannot read {local}: {exc}") from None
        try:
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                raise LocalError(f"{local} is not a regular file")
            layout = ChunkLayout(st.st_size, opts.chunk_size)
            req = m.Request(
                op="put", path=remote, size=st.st_size, chunk_size=layout.chunk_size, mtime_ns=st.st_mtime_ns
            )

            def read(offset: int, n: int) -> bytes:
                return os.pread(fd, n, offset)

            h = PutRequest(self, req, layout, read, digests=True)
            res: m.Result = await self._run(h.begin())
            return FileResult(
                path=str(local),
                size=st.st_size,
                bytes_sent=h.bytes_sent,
                rounds=h.rounds,
                resumed_bytes=h.resumed_bytes,
                duration_s=unix_now() - t0,
                result=res,
            )
        finally:
            os.close(fd)

    async def put_generated(self, size: int, seed: int, remote: str) -> FileResult:
        """Upload `size` generated bytes (seed) to a file on the server."""
        t0 = unix_now()
        layout = ChunkLayout(size, self.options.chunk_size)
        gen = payload_mod.payload(seed)
        req = m.Request(op="put", path=remote, size=size, chunk_size=layout.chunk_size)
        h = PutRequest(self, req, layout, gen.read, digests=True)
        res = await self._run(h.begin())
        return FileResult(
            path=f"gen:{size}:{seed}",
            size=size,
            bytes_sent=h.bytes_sent,
            rounds=h.rounds,
            duration_s=unix_now() - t0,
            result=res,
        )

    async def send_generated(
        self,
        size: int,
        seed: int,
        *,
        chunks: list[tuple[int, int]] | None = None,
        start: float | None = None,
        digests: bool = False,
    ) -> m.Result:
        """Send generated bytes to the server's sink; it verifies them against the seed and
        reports its receiver-side measurements (m.Result)."""
        layout = ChunkLayout(size, self.options.chunk_size)
        req = m.Request(
            op="sink",
            size=size,
            seed=seed,
            chunk_size=layout.chunk_size,
            chunks=chunks,
            start=start if start is not None else self.started,
        )
        h = PutRequest(self, req, layout, payload_mod.payload(seed).read, digests=digests, ranges=chunks)
        res = await self._run(h.begin())
        res._sent = h.bytes_sent  # type: ignore[attr-defined]
        res._rounds = h.rounds  # type: ignore[attr-defined]
        return res

    async def get_generated(
        self,
        size: int,
        seed: int,
        *,
        chunks: list[tuple[int, int]] | None = None,
        counter: IntervalCounter | None = None,
    ) -> FileResult:
        """Have the server generate bytes and send them; verified here without storing."""
        opts = self.options
        t0 = unix_now()
        layout = ChunkLayout(size, opts.chunk_size)
        result = FileResult(path=f"gen:{size}:{seed}", size=size)
        wanted = ChunkSet(layout.nchunks, chunks) if chunks is not None else ChunkSet.full(layout.nchunks)
        progress = opts.progress

        check = payload_mod.ChunkChecker(seed, layout.chunk_size, size)

        def on_verified(index: int) -> None:
            n = layout.length(index)
            result.bytes_verified += n
            if progress is not None:
                progress(n)

        rounds = 0
        while wanted.count:
            if rounds > opts.retries:
                raise QtpError(m.ErrorCode.INTEGRITY, f"chunks {wanted.ranges()} failed verification")
            req = m.Request(
                op="gen",
                size=size,
                seed=seed,
                chunk_size=layout.chunk_size,
                chunks=wanted.ranges(),
                cc=opts.server_cc,
            )
            recv = ChunkReceiver(
                layout,
                ChunkSet(layout.nchunks, wanted.ranges()),
                check=check,
                require_digest=False,
                on_verified=on_verified,
            )
            h = GetRequest(self, req, recv, counter=counter)
            await self._run(h.begin())
            result.bytes_received += recv.bytes_received
            result.bad_chunks += len(recv.failed)
            wanted = ChunkSet(layout.nchunks, sorted((a, a + 1) for a in recv.failed))
            rounds += 1
        result.rounds = rounds
        result.duration_s = unix_now() - t0
        return result

    # -- paths (file or directory)
    async def get_path(
        self, remote: str, local: str | os.PathLike, counter: IntervalCounter | None = None
    ) -> list[FileResult]:
        """Download a file or a whole directory (several files in flight)."""
        st = await self.stat(remote)
        local = Path(local)
        if st.type == "file":
            if local.is_dir():
                local = local / Path(remote).name
            return [await self.get_file(remote, local, size=st.size, mtime_ns=st.mtime_ns, counter=counter)]
        entries = await self.list(remote)
        local.mkdir(parents=True, exist_ok=True)
        for e in entries:
            if e.type == "dir":
                (local / e.path).mkdir(parents=True, exist_ok=True)
        files = [e for e in entries if e.type == "file"]
        base = remote.rstrip("/")
        return await self._parallel(
            [
                lambda e=e: self.get_file(
                    f"{base}/{e.path}" if base else e.path,
                    local / e.path,
                    size=e.size,
                    mtime_ns=e.mtime_ns,
                    counter=counter,
                )
                for e in files
            ]
        )

    async def put_path(self, local: str | os.PathLike, remote: str) -> list[FileResult]:
        """Upload a file or a whole directory (several files in flight)."""
        local = Path(local)
        if local.is_file():
            return [await self.put_file(local, remote)]
        if not local.is_dir():
            raise LocalError(f"{local} is neither a file nor a directory")
        await self.mkdir(remote)
        dirs, files = [], []
        for dirpath, dirnames, filenames in os.walk(local):
            rel = Path(dirpath).relative_to(local)
            dirnames.sort()
            for d in dirnames:
                if not (Path(dirpath) / d).is_symlink():
                    dirs.append((rel / d).as_posix())
            for f in sorted(filenames):
                p = Path(dirpath) / f
                if p.is_file() and not f.endswith((".qtp-part", ".qtp-state")):
                    files.append((p, (rel / f).as_posix()))
            dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
        for d in dirs:
            await self.mkdir(f"{remote}/{d}")
        return await self._parallel([lambda p=p, r=r: self.put_file(p, f"{remote}/{r}") for p, r in files])

    async def _parallel(self, jobs: list[Callable]) -> list:
        sem = asyncio.Semaphore(max(1, self.options.parallel_files))

        async def run(job):
            async with sem:
                return await job()

        tasks = [asyncio.ensure_future(run(j)) for j in jobs]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise


class _Terminated:
    def __init__(self, error_code: int, reason_phrase: str, frame_type: int | None):
        self.error_code, self.reason_phrase, self.frame_type = error_code, reason_phrase, frame_type


@dataclass
class FileResult:
    path: str
    size: int
    bytes_verified: int = 0  # (get) bytes of chunks verified in this session
    bytes_received: int = 0  # (get) payload bytes that arrived, including bad chunks
    bytes_sent: int = 0  # (put) payload bytes sent, including resent chunks
    resumed_bytes: int = 0  # already present from an interrupted transfer
    bad_chunks: int = 0
    rounds: int = 0
    sha256: str | None = None
    duration_s: float = 0.0
    result: Any = None
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- exchanges


class RequestHandler(io.StreamHandler):
    """Client side of one exchange on a new stream; `future` resolves with its outcome."""

    allowed = frozenset({m.RESPONSE, m.ERROR})
    end_after_request = True

    def __init__(self, client: Client, request: m.Request):
        conn = client.conn
        sid = conn.quic.get_next_available_stream_id()
        super().__init__(conn, sid)
        self.client = client
        self.request = request
        self.future: asyncio.Future = conn.loop.create_future()
        self.response: m.Response | None = None
        conn.streams[sid] = self

    def begin(self) -> asyncio.Future:
        if self.conn.is_closed:
            ev = self.conn.close_event
            self.future.set_exception(io.ConnectionClosed(ev.error_code, ev.reason_phrase, ev.frame_type))
        else:
            self.send_msg(self.request, end=self.end_after_request)
        return self.future

    def on_message(self, msg: Any) -> None:
        if isinstance(msg, m.Error):
            self.fail(msg.exception(), send=False)
        elif isinstance(msg, m.Response) and self.response is None:
            self.response = msg
            self.on_response(msg)
        else:
            raise m.ProtocolViolation(f"unexpected {type(msg).__name__}")

    def on_response(self, msg: m.Response) -> None:
        self.resolve(msg)

    def on_chunk_start(self, index, offset, length, digest):  # pragma: no cover - decoder forbids
        raise m.ProtocolViolation("unexpected CHUNK")

    def resolve(self, value: Any) -> None:
        if not self.future.done():
            self.future.set_result(value)
        if self.finished or self.end_after_request:
            self.complete()

    def on_failed(self, exc: QtpError) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def on_close(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def on_eof(self) -> None:
        if not self.future.done():
            raise m.ProtocolViolation("the server ended the stream without an answer")


class SimpleRequest(RequestHandler):
    """stat, mkdir, digest: REQUEST -> RESPONSE."""

    def on_response(self, msg: m.Response) -> None:
        op = self.request.op
        if op == "stat" and (msg.type is None or msg.size is None or msg.mtime_ns is None):
            raise m.ProtocolViolation("stat response lacks type/size/mtime_ns")
        if op == "digest" and msg.sha256 is None:
            raise m.ProtocolViolation("digest response lacks sha256")
        self.resolve(msg)


class ListRequest(RequestHandler):
    """REQUEST -> RESPONSE, LISTING*, END."""

    MAX_TOTAL = 1_000_000

    def __init__(self, client: Client, request: m.Request):
        super().__init__(client, request)
        self.entries: list[m.Entry] = []

    def on_response(self, msg: m.Response) -> None:
        self.decoder.allow({m.LISTING, m.END, m.ERROR})

    def on_message(self, msg: Any) -> None:
        if isinstance(msg, m.Listing) and self.response is not None:
            self.entries.extend(msg.entries)
            if len(self.entries) > self.MAX_TOTAL:
                raise m.ProtocolViolation("directory listing too long")
        elif isinstance(msg, m.End) and self.response is not None:
            if msg.count is not None and msg.count != len(self.entries):
                raise m.ProtocolViolation("listing count mismatch")
            self.decoder.allow(set())
            self.resolve(self.entries)
        else:
            super().on_message(msg)


class GetRequest(io.ChunkSink, RequestHandler):
    """get / gen: REQUEST -> RESPONSE, CHUNK*, END; chunks go to a ChunkReceiver."""

    def __init__(
        self,
        client: Client,
        request: m.Request,
        receiver: ChunkReceiver,
        counter: IntervalCounter | None = None,
    ):
        super().__init__(client, request)
        self.receiver = receiver
        self.counter = counter
        self.end: m.End | None = None
        self._loop_time = client.conn.loop.time

    def on_response(self, msg: m.Response) -> None:
        r = self.request
        if r.op == "get":
            lay = self.receiver.layout
            if msg.size != lay.size or msg.chunk_size != lay.chunk_size:
                raise m.ProtocolViolation("get response does not match the request")
        self.decoder.allow({m.CHUNK, m.END, m.ERROR})

    def on_message(self, msg: Any) -> None:
        if isinstance(msg, m.End) and self.response is not None:
            if self.receiver.in_chunk:
                raise m.ProtocolViolation("END inside a chunk")
            if self.receiver.wanted.count:
                raise m.ProtocolViolation(f"server skipped chunks {self.receiver.wanted.ranges()[:4]}")
            self.end = msg
            self.decoder.allow(set())
            self.resolve(msg)
        else:
            super().on_message(msg)


class PutRequest(RequestHandler):
    """put / sink: REQUEST -> RESPONSE(have); CHUNK*, END -> RESULT (ok, or resend missing)."""

    end_after_request = False

    def __init__(
        self,
        client: Client,
        request: m.Request,
        layout: ChunkLayout,
        read: Callable[[int, int], bytes],
        *,
        digests: bool,
        ranges=None,
    ):
        super().__init__(client, request)
        self.layout = layout
        self.read = read
        self.digests = digests
        self.ranges = ranges
        self.source: ChunkSource | None = None
        self.rounds = 0
        self.bytes_sent = 0
        self.resumed_bytes = 0
        self._progress = client.options.progress
        self._retries = client.options.retries
        self._digest: asyncio.Future | None = None

    def on_response(self, msg: m.Response) -> None:
        ranges = self.ranges if self.ranges is not None else self.layout.all()
        if msg.have:
            have = ChunkSet(self.layout.nchunks, msg.have)
            todo = ChunkSet(self.layout.nchunks, ranges)
            for i in have:
                todo.discard(i)
            self.resumed_bytes = self.layout.bytes_in(msg.have)
            ranges = todo.ranges()
        self.source = testhooks.corrupting(ChunkSource(self.layout, ranges, self.read, digests=self.digests))
        self.decoder.allow({m.RESULT, m.ERROR})
        self.rounds = 1
        if self.request.op == "put" and self.source.sha256 is None and ranges != self.layout.all():
            # a resumed upload: the whole content's digest needs the chunks not sent too
            self._digest = self.conn.loop.run_in_executor(None, self._whole_digest)
            self._digest.add_done_callback(lambda f: self.conn.schedule_transmit())
        self.conn.add_producer(self)

    def _digest_ready(self, fut: asyncio.Future) -> None:
        if not self.finished and not self.future.done() and not self.conn.is_closed:
            self.conn.add_producer(self)

    def _whole_digest(self) -> str:
        h = OrderedHasher()
        return h.finish(self.layout.size, self.read)

    def _end_digest(self) -> tuple[bool, str | None]:
        """(ready, sha256 of the whole content) for END."""
        if self.source.sha256 is not None or self._digest is None:
            return True, self.source.sha256
        if not self._digest.done():
            return False, None
        return True, self._digest.result()

    def produce(self, budget: int) -> bool:
        src = self.source
        sent, more = self.send_frames(src, budget)
        self.bytes_sent += sent
        if sent and self._progress is not None:
            self._progress(sent)
        if more:
            return True
        ready, sha = self._end_digest()
        if not ready:  # the digest thread calls schedule_transmit when done
            self._digest.add_done_callback(self._digest_ready)
            return False
        self.send_msg(m.End(sha256=sha, bytes=src.bytes_sent))
        return False

    def on_message(self, msg: Any) -> None:
        if isinstance(msg, m.Result) and self.source is not None:
            if msg.ok:
                self.send(b"", end=True)
                self.resolve(msg)
                return
            if not msg.missing:
                raise m.ProtocolViolation("RESULT not ok but nothing missing")
            if self.rounds > self._retries:
                self.fail(
                    QtpError(
                        m.ErrorCode.INTEGRITY,
                        f"chunks {msg.missing[:4]} failed verification {self.rounds} times",
                    )
                )
                return
            self.rounds += 1
            self.source.resend(msg.missing)
            self.conn.add_producer(self)
        else:
            super().on_message(msg)

    def on_eof(self) -> None:
        if not self.future.done():
            raise m.ProtocolViolation("the server ended the stream before its RESULT")


def chunk_count(ranges) -> int:
    return count_ranges(ranges)


__all__ = [
    "Client",
    "ClientOptions",
    "FileResult",
    "HandshakeFailed",
    "LocalError",
    "ResumeRecord",
    "TransferTimeout",
    "state_path",
]
