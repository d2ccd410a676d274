"""qtp server: serves files under --root, receives uploads, sinks and generates payloads.

Security rules (see README): every path is resolved (symlinks included) and must stay
under the root; absolute paths and '..' are refused outright; sizes, concurrent transfers,
connections and idle/stalled transfers are limited; malformed input closes that
connection with BAD_REQUEST (400) and the server goes on serving the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import stat as stat_mod
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aioquic.quic.connection import QuicConnection

from .. import payload as payload_mod
from . import certs, config, io, testhooks
from . import messages as m
from .messages import ErrorCode, QtpError
from .transfer import (
    PART_SUFFIX,
    STATE_SUFFIX,
    ChunkLayout,
    ChunkReceiver,
    ChunkSet,
    ChunkSource,
    IntervalCounter,
    OrderedHasher,
    PartFile,
    PartFileBusy,
    file_sha256,
)

log = logging.getLogger("qtp.server")

INTERNAL_SUFFIXES = (PART_SUFFIX, STATE_SUFFIX, STATE_SUFFIX + ".tmp")
LISTING_BATCH = 1000
MAX_LIST_ENTRIES = 1_000_000


@dataclass
class ServerOptions:
    host: str = ""
    port: int = 4433
    root: str | None = None
    sink: bool = False  # uploads are verified, then discarded (nothing is written)
    read_only: bool = False  # refuse put and mkdir
    cert: str | None = None
    key: str | None = None
    state_dir: str | None = None
    cc: str = config.DEFAULT_CC
    mtu: int | None = None
    bdp: int | None = None
    socket_buffer: int | None = None  # SO_RCVBUF/SO_SNDBUF (default 16 MiB)
    max_connections: int = 64
    max_transfers: int = 128  # concurrent exchanges in this process
    max_transfers_per_connection: int = 32
    max_size: int = 1 << 40  # bytes of one transfer (put, sink, gen)
    idle_timeout: float = 30.0  # QUIC idle timeout
    stall_timeout: float = 60.0  # an exchange without progress for this long is ended
    retries: int = 3  # rounds of resending chunks that failed verification (put, sink)
    qlog_dir: str | None = None
    reuse_port: bool = False


class QtpServer:
    """The server logic of one process (one UDP socket, many connections)."""

    def __init__(self, options: ServerOptions):
        self.options = options
        self.root: Path | None = None
        if options.root is not None:
            root = Path(os.path.realpath(options.root))
            if not root.is_dir():
                raise NotADirectoryError(f"--root {options.root} is not a directory")
            self.root = root
        config.ensure_cc(options.cc)
        if options.cert:
            cert, key = options.cert, options.key
        else:
            names = [options.host] if options.host and options.host not in ("0.0.0.0", "::") else []
            cert, key = certs.ensure_self_signed(options.state_dir, names)
        self.cert_path = str(cert)
        self._template = config.base_configuration(
            is_client=False,
            cc=options.cc,
            max_datagram_size=1200,
            bdp=options.bdp,
            idle_timeout=options.idle_timeout,
            qlog_dir=options.qlog_dir,
        )
        self._template.load_cert_chain(cert, key)
        self.tickets = config.ServerTicketStore()
        self.endpoint: io.ServerEndpoint | None = None
        self.active: set[ServerStream] = set()
        self.uploads: dict[Path, ServerStream] = {}
        self.stats = {"connections": 0, "requests": 0, "errors": 0, "protocol_violations": 0}
        self._stall_task: asyncio.Task | None = None

    # -- connections
    def _datagram_size(self, addr: tuple) -> int:
        ip = addr[0]
        family = (
            socket.AF_INET if ("." in ip and ":" not in ip) or ip.startswith("::ffff:") else socket.AF_INET6
        )
        if self.options.mtu:
            return io.datagram_size_for(self.options.mtu, family, cap=None)
        if ip.startswith("::ffff:"):
            return io.datagram_size_for(io.path_mtu((ip[7:], addr[1]), socket.AF_INET), family)
        return io.datagram_size_for(io.path_mtu(addr, family), family)

    def make_connection(self, dcid: bytes, addr: tuple) -> QuicConnection | None:
        cfg = dataclasses.replace(self._template, max_datagram_size=self._datagram_size(addr))
        return QuicConnection(
            configuration=cfg,
            original_destination_connection_id=dcid,
            session_ticket_fetcher=self.tickets.pop,
            session_ticket_handler=self.tickets.add,
        )

    def new_stream(self, conn: io.Conn, stream_id: int) -> io.StreamHandler:
        return ServerStream(self, conn, stream_id)

    def on_connection(self, conn: io.Conn) -> None:
        self.stats["connections"] += 1
        conn.data["transfers"] = 0

    def start(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.endpoint = io.ServerEndpoint(
            loop,
            sock,
            self.make_connection,
            self.new_stream,
            max_connections=self.options.max_connections,
            on_connection=self.on_connection,
            buffer_size=self.options.socket_buffer,
        )
        self._stall_task = loop.create_task(self._stall_watch())

    def close(self) -> None:
        if self._stall_task is not None:
            self._stall_task.cancel()
        if self.endpoint is not None:
            self.endpoint.close()

    async def _stall_watch(self) -> None:
        limit = self.options.stall_timeout
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            now = time.monotonic()
            for h in list(self.active):
                if now - h.last_activity > limit and not h.busy:
                    h.fail(QtpError(ErrorCode.TIMEOUT, f"no progress for {limit:g} s"))
                    if not h.conn.is_closed:
                        h.conn.transmit()

    # -- paths
    def resolve(self, rel: str) -> Path:
        """The real path of `rel` under the root; FORBIDDEN if it leaves the root."""
        if self.root is None:
            raise QtpError(ErrorCode.UNSUPPORTED, "this server has no --root (sink/gen only)")
        rel = m.check_path(rel, allow_empty=True)
        cand = self.root / rel if rel else self.root
        real = Path(os.path.realpath(cand))
        if real != self.root and self.root not in real.parents:
            raise QtpError(ErrorCode.FORBIDDEN, f"{rel!r} resolves outside the served root")
        if real.name.endswith(INTERNAL_SUFFIXES) or cand.name.endswith(INTERNAL_SUFFIXES):
            raise QtpError(ErrorCode.FORBIDDEN, f"{rel!r} is an internal file")
        return real

    def resolve_for_write(self, rel: str) -> Path:
        if self.options.read_only:
            raise QtpError(ErrorCode.FORBIDDEN, "this server is read-only")
        real = self.resolve(rel)
        if real == self.root:
            raise QtpError(ErrorCode.FORBIDDEN, "cannot write the root itself")
        return real


def _stat_entry(st: os.stat_result) -> str | None:
    if stat_mod.S_ISREG(st.st_mode):
        return "file"
    if stat_mod.S_ISDIR(st.st_mode):
        return "dir"
    return None


def walk(root: Path, top: Path) -> list[m.Entry]:
    """Files and directories under `top` (symlinks followed only when they stay under
    `root` and point to files), as paths relative to `top`."""
    out: list[m.Entry] = []
    for dirpath, dirnames, filenames in os.walk(top):
        d = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            p = d / name
            if p.is_symlink():
                continue  # no directory symlinks: no loops, no escapes
            st = p.stat()
            out.append(m.Entry((p.relative_to(top)).as_posix(), "dir", 0, st.st_mtime_ns))
            keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.endswith(INTERNAL_SUFFIXES):
                continue
            p = d / name
            try:
                real = Path(os.path.realpath(p))
                if real != root and root not in real.parents:
                    continue
                st = real.stat()
            except OSError:
                continue
            if not stat_mod.S_ISREG(st.st_mode):
                continue
            out.append(m.Entry((p.relative_to(top)).as_posix(), "file", st.st_size, st.st_mtime_ns))
        if len(out) > MAX_LIST_ENTRIES:
            raise QtpError(ErrorCode.TOO_LARGE, f"more than {MAX_LIST_ENTRIES} entries")
    return out


class ServerStream(io.ChunkSink, io.StreamHandler):
    """The server side of one exchange: waits for the REQUEST, then runs the operation."""

    allowed = frozenset({m.REQUEST})

    def __init__(self, server: QtpServer, conn: io.Conn, stream_id: int):
        super().__init__(conn, stream_id)
        self.server = server
        self.request: m.Request | None = None
        self.counted = False
        self.busy = False  # waiting on a thread (hashing, listing): not stalled
        self.fd: int | None = None
        self.part: PartFile | None = None
        self.receiver: ChunkReceiver | None = None
        self.source: ChunkSource | None = None
        self.counter: IntervalCounter | None = None
        self.rounds = 0
        self.end: m.End | None = None
        self.cpu0 = 0.0
        self._loop_time = conn.loop.time
        self.closed = False
        self.upload_path: Path | None = None

    # -- bookkeeping
    def _admit(self) -> None:
        s = self.server
        if len(s.active) >= s.options.max_transfers:
            raise QtpError(ErrorCode.BUSY, "too many concurrent transfers on this server")
        if self.conn.data.get("transfers", 0) >= s.options.max_transfers_per_connection:
            raise QtpError(ErrorCode.BUSY, "too many concurrent transfers on this connection")
        self.conn.data["transfers"] = self.conn.data.get("transfers", 0) + 1
        self.counted = True
        s.active.add(self)

    def _release(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.counted:
            self.conn.data["transfers"] -= 1
            self.counted = False
        self.server.active.discard(self)
        if self.upload_path is not None and self.server.uploads.get(self.upload_path) is self:
            del self.server.uploads[self.upload_path]
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        if self.part is not None:
            with contextlib.suppress(OSError):
                self.part.close()  # an interrupted upload keeps its verified chunks for a resume
            self.part = None

    def done(self) -> None:
        self._release()
        self.complete()

    def on_failed(self, exc: QtpError) -> None:
        self.server.stats["errors"] += 1
        self._release()

    def on_close(self, exc: Exception) -> None:
        self._release()

    def on_data(self, data: bytes, end: bool) -> None:
        self.last_activity = time.monotonic()
        super().on_data(data, end)

    def on_eof(self) -> None:
        if self.request is None:
            raise m.ProtocolViolation("stream ended before a REQUEST")
        if self.request.op in ("put", "sink") and not self.finished:
            # the client gave up on its upload
            self.fail(QtpError(ErrorCode.BAD_REQUEST, "upload ended early"), send=False)

    # -- frames
    def on_message(self, msg: Any) -> None:
        if self.request is None:
            self.request = msg
            self.server.stats["requests"] += 1
            self.begin(msg)
        elif isinstance(msg, m.End):
            self.on_end(msg)
        elif isinstance(msg, m.Error):
            self.fail(msg.exception(), send=False)
        else:
            raise m.ProtocolViolation(f"unexpected {type(msg).__name__}")

    # -- operations
    def begin(self, req: m.Request) -> None:
        op = req.op
        if req.cc is not None and op in ("get", "gen"):
            try:
                config.switch_cc(self.conn.quic, req.cc)
            except QtpError as exc:
                raise QtpError(ErrorCode.UNSUPPORTED, str(exc.message)) from None
        if op == "stat":
            self.op_stat(req)
        elif op == "mkdir":
            self.op_mkdir(req)
        else:
            self._admit()
            getattr(self, f"op_{op}")(req)

    def reply_and_end(self, resp: m.Response) -> None:
        self.send_msg(resp, end=True)
        self.done()

    def op_stat(self, req: m.Request) -> None:
        real = self.server.resolve(req.path)
        try:
            st = real.stat()
        except FileNotFoundError:
            raise QtpError(ErrorCode.NOT_FOUND, f"{req.path!r} not found") from None
        kind = _stat_entry(st)
        if kind is None:
            raise QtpError(ErrorCode.FORBIDDEN, f"{req.path!r} is not a regular file or directory")
        self.reply_and_end(
            m.Response(type=kind, size=st.st_size if kind == "file" else 0, mtime_ns=st.st_mtime_ns)
        )

    def op_mkdir(self, req: m.Request) -> None:
        if self.server.options.sink:
            self.reply_and_end(m.Response())
            return
        real = self.server.resolve_for_write(req.path)
        try:
            real.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise QtpError(ErrorCode.FORBIDDEN, f"{req.path!r} exists and is not a directory") from None
        except OSError as exc:
            raise QtpError(ErrorCode.INTERNAL, f"mkdir {req.path!r}: {exc.strerror}") from None
        self.reply_and_end(m.Response())

    def _open_file(self, req: m.Request) -> tuple[int, os.stat_result]:
        real = self.server.resolve(req.path)
        try:
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise QtpError(ErrorCode.NOT_FOUND, f"{req.path!r} not found") from None
        except OSError as exc:
            raise QtpError(ErrorCode.FORBIDDEN, f"{req.path!r}: {exc.strerror}") from None
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            os.close(fd)
            raise QtpError(ErrorCode.FORBIDDEN, f"{req.path!r} is not a regular file")
        return fd, st

    def op_get(self, req: m.Request) -> None:
        self.fd, st = self._open_file(req)
        if req.expect is not None and (
            req.expect["size"] != st.st_size or req.expect["mtime_ns"] != st.st_mtime_ns
        ):
            raise QtpError(ErrorCode.CHANGED, f"{req.path!r} changed since the transfer started")
        layout = ChunkLayout(st.st_size, req.chunk_size)
        chunks = req.chunks
        if chunks is not None and chunks and chunks[-1][1] > layout.nchunks:
            raise QtpError(ErrorCode.BAD_REQUEST, "requested chunks beyond the end of the file")
        fd = self.fd

        def read(offset: int, n: int) -> bytes:
            return os.pread(fd, n, offset)

        self.source = testhooks.corrupting(ChunkSource(layout, chunks, read, digests=True))
        self.send_msg(
            m.Response(
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                chunk_size=req.chunk_size,
                chunks=chunks if chunks is not None else layout.all(),
            )
        )
        self.decoder.allow(set())
        self.conn.add_producer(self)

    def op_gen(self, req: m.Request) -> None:
        if req.size > self.server.options.max_size:
            raise QtpError(
                ErrorCode.TOO_LARGE, f"size {req.size} exceeds the limit {self.server.options.max_size}"
            )
        layout = ChunkLayout(req.size, req.chunk_size)
        self.source = testhooks.corrupting(
            ChunkSource(layout, req.chunks, payload_mod.payload(req.seed).read, digests=False)
        )
        self.send_msg(m.Response(size=req.size, chunk_size=req.chunk_size))
        self.decoder.allow(set())
        self.conn.add_producer(self)

    def produce(self, budget: int) -> bool:
        src = self.source
        if self.send_frames(src, budget)[1]:
            return True
        self.send_msg(m.End(sha256=src.sha256, bytes=src.bytes_sent), end=True)
        self.done()
        return False

    def op_put(self, req: m.Request) -> None:
        opts = self.server.options
        if req.size > opts.max_size:
            raise QtpError(ErrorCode.TOO_LARGE, f"size {req.size} exceeds the limit {opts.max_size}")
        layout = ChunkLayout(req.size, req.chunk_size)
        have: list = []
        if opts.sink:
            self.receiver = ChunkReceiver(layout, ChunkSet.full(layout.nchunks), hasher=OrderedHasher())
        else:
            real = self.server.resolve_for_write(req.path)
            if real.is_dir():
                raise QtpError(ErrorCode.FORBIDDEN, f"{req.path!r} is a directory")
            try:
                real.parent.mkdir(parents=True, exist_ok=True)
                vfs = os.statvfs(real.parent)
            except OSError as exc:
                raise QtpError(ErrorCode.FORBIDDEN, f"cannot write {req.path!r}: {exc.strerror}") from None
            if vfs.f_bavail * vfs.f_frsize < req.size:
                raise QtpError(ErrorCode.NO_SPACE, f"not enough space for {req.size} bytes")
            source = f"put:{req.size}:{req.mtime_ns or 0}"
            older = self.server.uploads.get(real)
            if older is not None and older is not self:
                # a resumed upload: its predecessor (maybe on a dead connection) gives way
                older.fail(QtpError(ErrorCode.CHANGED, "superseded by a newer upload of the same file"))
            self.part = PartFile(real, source, layout, req.mtime_ns or 0)
            try:
                self.part.open(resume=True)
            except PartFileBusy:
                self.part = None
                raise QtpError(
                    ErrorCode.BUSY, f"{req.path!r} is being uploaded by another connection"
                ) from None
            except OSError as exc:
                raise QtpError(ErrorCode.FORBIDDEN, f"cannot write {req.path!r}: {exc.strerror}") from None
            self.upload_path = real
            self.server.uploads[real] = self
            have = self.part.verified.ranges()
            wanted = ChunkSet(layout.nchunks, self.part.verified.missing())
            self.receiver = ChunkReceiver(
                layout,
                wanted,
                verified=self.part.verified,
                commit=self.part.write,
                hasher=OrderedHasher() if not have else None,
                on_verified=self.part.mark,
            )
        self.send_msg(m.Response(have=have))
        self.decoder.allow({m.CHUNK, m.END, m.ERROR})
        self.rounds = 1

    def op_sink(self, req: m.Request) -> None:
        if req.size > self.server.options.max_size:
            raise QtpError(
                ErrorCode.TOO_LARGE, f"size {req.size} exceeds the limit {self.server.options.max_size}"
            )
        layout = ChunkLayout(req.size, req.chunk_size)
        check = payload_mod.ChunkChecker(req.seed, req.chunk_size, req.size)
        wanted = ChunkSet(layout.nchunks, req.chunks if req.chunks is not None else layout.all())
        self.receiver = ChunkReceiver(layout, wanted, check=check, require_digest=False)
        self.counter = IntervalCounter(req.start if req.start is not None else time.time())
        self.cpu0 = time.process_time()
        self.send_msg(m.Response())
        self.decoder.allow({m.CHUNK, m.END, m.ERROR})
        self.rounds = 1

    def on_end(self, end: m.End) -> None:
        req = self.request
        if req.op not in ("put", "sink") or self.receiver is None:
            raise m.ProtocolViolation("unexpected END")
        rc = self.receiver
        if rc.in_chunk:
            raise m.ProtocolViolation("END inside a chunk")
        if req.op == "put" and end.sha256 is None:
            raise m.ProtocolViolation("put END without the file's sha256")
        self.end = end
        missing = sorted(set(rc.failed) | set(rc.wanted))
        if missing:
            if self.rounds > self.server.options.retries:
                raise QtpError(ErrorCode.INTEGRITY, f"chunks failed verification {self.rounds} times")
            self.rounds += 1
            ranges = ChunkSet(rc.layout.nchunks, [(i, i + 1) for i in missing]).ranges()
            rc.wanted = ChunkSet(rc.layout.nchunks, ranges)
            rc.failed.clear()
            self.send_msg(m.Result(ok=False, missing=ranges))
            return
        if req.op == "sink":
            self.finish_sink()
        else:
            self.finish_put(end)

    def finish_sink(self) -> None:
        c = self.counter
        i0, bins = c.bins()
        res = m.Result(
            ok=True,
            bytes=self.receiver.bytes_verified,
            first_byte=c.first,
            last_byte=c.last,
            i0=i0,
            bins=bins,
            cpu_s=round(time.process_time() - self.cpu0, 4),
        )
        self.decoder.allow(set())
        self.send_msg(res, end=True)
        self.done()

    def finish_put(self, end: m.End) -> None:
        rc = self.receiver
        size = rc.layout.size
        hasher = rc.hasher
        self.decoder.allow(set())
        if hasher is not None and hasher.pos == size:
            self._put_digest_checked(end, hasher.finish(size))
            return
        if self.part is None:  # --sink: nothing stored to re-read; chunks were verified one by one
            self._put_digest_checked(end, end.sha256)
            return
        self.busy = True
        part = self.part
        fut = asyncio.get_running_loop().run_in_executor(None, part.sha256)

        def hashed(f: asyncio.Future) -> None:
            self.busy = False
            if self.closed or self.conn.is_closed:
                return
            try:
                digest = f.result()
            except OSError as exc:
                self.fail(QtpError(ErrorCode.INTERNAL, f"cannot read back the upload: {exc}"))
            else:
                self._put_digest_checked(end, digest)
            self.conn.transmit()

        fut.add_done_callback(hashed)

    def _put_digest_checked(self, end: m.End, digest: str) -> None:
        if digest != end.sha256:
            if self.part is not None:
                self.part.discard()
                self.part = None
            self.fail(QtpError(ErrorCode.INTEGRITY, "SHA-256 of the whole upload differs; discarded"))
            return
        if self.part is not None:
            self.part.finish(self.request.mtime_ns)
            self.part = None
        self.send_msg(m.Result(ok=True, bytes=self.receiver.bytes_verified), end=True)
        self.done()

    def op_list(self, req: m.Request) -> None:
        real = self.server.resolve(req.path)
        if not real.is_dir():
            raise QtpError(ErrorCode.NOT_FOUND, f"{req.path!r} is not a directory")
        self._in_thread(lambda: walk(self.server.root, real), self._listed)

    def _listed(self, entries: list[m.Entry]) -> None:
        self.send_msg(m.Response())
        for i in range(0, len(entries), LISTING_BATCH):
            self.send_msg(m.Listing(entries[i : i + LISTING_BATCH]))
        self.send_msg(m.End(count=len(entries)), end=True)
        self.done()

    def op_digest(self, req: m.Request) -> None:
        fd, st = self._open_file(req)
        os.close(fd)
        real = self.server.resolve(req.path)
        self._in_thread(
            lambda: file_sha256(real),
            lambda d: self.reply_and_end(m.Response(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=d)),
        )

    def _in_thread(self, work, then) -> None:
        self.busy = True
        fut = asyncio.get_running_loop().run_in_executor(None, work)

        def finished(f: asyncio.Future) -> None:
            self.busy = False
            if self.closed or self.conn.is_closed:
                return
            try:
                then(f.result())
            except QtpError as exc:
                self.fail(exc)
            except OSError as exc:
                self.fail(QtpError(ErrorCode.INTERNAL, f"{exc.strerror or exc}"))
            self.conn.transmit()

        fut.add_done_callback(finished)


# ---------------------------------------------------------------------------- running


async def serve(
    options: ServerOptions,
    *,
    sock: socket.socket | None = None,
    ready=None,
    stop: asyncio.Event | None = None,
) -> QtpServer:
    """Run a server until `stop` is set (or SIGTERM/SIGINT)."""
    loop = asyncio.get_running_loop()
    server = QtpServer(options)
    if sock is None:
        sock = io.make_server_socket(options.host, options.port, reuse_port=options.reuse_port)
    server.start(loop, sock)
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(server, sock.getsockname())
    try:
        await stop.wait()
    finally:
        server.close()
        await asyncio.sleep(0.05)  # let CONNECTION_CLOSE frames go out
    return server
