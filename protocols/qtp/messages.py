"""qtp wire format: frames on a QUIC stream, control messages, strict validation (sans I/O).

Every request uses one client-initiated bidirectional QUIC stream. Both directions carry a
sequence of frames:

    frame   = type:u8 length:u32be body[length]
    CHUNK   body = index:u64be offset:u64be flags:u8 [sha256:32 if flags & 1] data
    others  body = one JSON object (UTF-8), at most MAX_CONTROL bytes

See protocols/qtp/README.md for the exchange of each operation. Anything malformed raises
`ProtocolViolation` (a `QtpError` with code BAD_REQUEST): the I/O layer closes *that*
connection with the code; the server keeps serving the others.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

ALPN = "qtp/1"
VERSION = 1

# frame types
REQUEST = 0x01  # client -> server, exactly once, first on the stream
RESPONSE = 0x02  # server -> client: request accepted (+ metadata)
ERROR = 0x03  # either direction: the exchange failed; last frame on the stream
LISTING = 0x04  # server -> client: directory entries (any number, then END)
END = 0x05  # data sender: no more chunks in this round (+ whole-file digest)
RESULT = 0x06  # data receiver: verdict on a round (ok, or missing chunks to resend)
CHUNK = 0x10  # one chunk of data, with its SHA-256

FRAME_NAMES = {
    REQUEST: "REQUEST",
    RESPONSE: "RESPONSE",
    ERROR: "ERROR",
    LISTING: "LISTING",
    END: "END",
    RESULT: "RESULT",
    CHUNK: "CHUNK",
}
CONTROL_TYPES = frozenset({REQUEST, RESPONSE, ERROR, LISTING, END, RESULT})

FLAG_DIGEST = 0x01

FRAME_HEADER = struct.Struct(">BI")
CHUNK_HEADER = struct.Struct(">QQB")
DIGEST_SIZE = 32

MAX_CONTROL = 1 << 20  # bytes of JSON in one control frame
MIN_CHUNK = 4096
MAX_CHUNK = 16 << 20
DEFAULT_CHUNK = 1 << 20
MAX_CHUNK_FRAME = CHUNK_HEADER.size + DIGEST_SIZE + MAX_CHUNK
MAX_SIZE = 1 << 50  # 1 PiB: anything larger is not a plausible transfer
MAX_PATH = 4096
MAX_RANGES = 100_000  # [start, stop) pairs in one message
MAX_ENTRIES = 10_000  # directory entries in one LISTING frame
MAX_INTERVALS = 200_000
MAX_SEED = 2**63 - 1


class ErrorCode(IntEnum):
    """Application error codes: ERROR frames, RESET_STREAM and CONNECTION_CLOSE (HTTP-like)."""

    OK = 0
    BAD_REQUEST = 400  # malformed/invalid message: the connection is closed with this code
    FORBIDDEN = 403  # path outside the root (.., absolute, symlink leaving it) or not allowed
    NOT_FOUND = 404
    TIMEOUT = 408  # idle or stalled transfer
    CHANGED = 409  # resume precondition failed: the source changed
    TOO_LARGE = 413  # over the server's transfer size limit
    INTEGRITY = 422  # a chunk failed verification too many times, or the file digest differs
    BUSY = 429  # too many concurrent transfers
    INTERNAL = 500
    UNSUPPORTED = 501  # operation not offered by this server (e.g. no --root)
    NO_SPACE = 507


class QtpError(Exception):
    """An error with an application error code (sent to the peer as an ERROR frame)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = int(code)
        self.message = message

    def __str__(self) -> str:
        try:
            name = ErrorCode(self.code).name
        except ValueError:
            name = str(self.code)
        return f"{name}: {self.message}"


class ProtocolViolation(QtpError):
    """Hostile or malformed input: the connection it came from is closed with BAD_REQUEST."""

    def __init__(self, message: str):
        super().__init__(ErrorCode.BAD_REQUEST, message)


# ---------------------------------------------------------------------------- validation


def _fail(what: str) -> ProtocolViolation:
    return ProtocolViolation(what)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def get_int(obj: dict, key: str, lo: int, hi: int, default: Any = ...) -> Any:
    if key not in obj:
        if default is ...:
            raise _fail(f"missing field {key!r}")
        return default
    v = obj[key]
    if not _is_int(v) or not lo <= v <= hi:
        raise _fail(f"field {key!r} must be an integer in [{lo}, {hi}]")
    return v


def get_float(obj: dict, key: str, lo: float, hi: float, default: Any = ...) -> Any:
    if key not in obj:
        if default is ...:
            raise _fail(f"missing field {key!r}")
        return default
    v = obj[key]
    if not (_is_int(v) or isinstance(v, float)) or not lo <= v <= hi:
        raise _fail(f"field {key!r} must be a number in [{lo}, {hi}]")
    return float(v)


def get_bool(obj: dict, key: str, default: Any = ...) -> Any:
    if key not in obj:
        if default is ...:
            raise _fail(f"missing field {key!r}")
        return default
    v = obj[key]
    if not isinstance(v, bool):
        raise _fail(f"field {key!r} must be a boolean")
    return v


def get_str(obj: dict, key: str, maxlen: int, default: Any = ..., choices: tuple = ()) -> Any:
    if key not in obj:
        if default is ...:
            raise _fail(f"missing field {key!r}")
        return default
    v = obj[key]
    if not isinstance(v, str) or len(v.encode("utf-8", "surrogatepass")) > maxlen:
        raise _fail(f"field {key!r} must be a string of at most {maxlen} bytes")
    if choices and v not in choices:
        raise _fail(f"field {key!r} must be one of {', '.join(choices)}")
    return v


def check_path(p: str, *, allow_empty: bool = False) -> str:
    """A relative path as sent on the wire: '/'-separated, no NUL, no '..', not absolute.

    Only the syntax is checked here; the server also resolves it under its root."""
    if not isinstance(p, str):
        raise _fail("path must be a string")
    if "\x00" in p or "\\" in p:
        raise QtpError(ErrorCode.FORBIDDEN, "path contains NUL or backslash")
    if p.startswith("/"):
        raise QtpError(ErrorCode.FORBIDDEN, f"absolute path refused: {p!r}")
    parts = [c for c in p.split("/") if c not in ("", ".")]
    if any(c == ".." for c in parts):
        raise QtpError(ErrorCode.FORBIDDEN, f"path with '..' refused: {p!r}")
    if not parts and not allow_empty:
        raise _fail("empty path")
    try:
        p.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail("path is not valid UTF-8") from None
    return "/".join(parts)


def get_path(obj: dict, key: str = "path", *, allow_empty: bool = False) -> str:
    return check_path(get_str(obj, key, MAX_PATH), allow_empty=allow_empty)


def check_ranges(v: Any, limit: int) -> list[tuple[int, int]]:
    """[[start, stop), ...]: sorted, disjoint, non-empty, not adjacent, within [0, limit]."""
    if not isinstance(v, list) or len(v) > MAX_RANGES:
        raise _fail(f"ranges must be a list of at most {MAX_RANGES} pairs")
    out: list[tuple[int, int]] = []
    prev = -1
    for r in v:
        if not (isinstance(r, list) and len(r) == 2 and _is_int(r[0]) and _is_int(r[1])):
            raise _fail("each range must be a pair of integers [start, stop]")
        a, b = r
        if not (0 <= a < b <= limit) or a <= prev:
            raise _fail(f"range [{a}, {b}] is empty, unsorted, overlapping or beyond {limit}")
        out.append((a, b))
        prev = b
    return out


def get_ranges(obj: dict, key: str, limit: int, default: Any = ...) -> Any:
    if key not in obj or obj[key] is None:
        if default is ...:
            raise _fail(f"missing field {key!r}")
        return default
    return check_ranges(obj[key], limit)


def check_keys(obj: dict, allowed: set[str], what: str) -> None:
    extra = set(obj) - allowed
    if extra:
        raise _fail(f"unknown field(s) in {what}: {', '.join(sorted(map(str, extra)))}")


def check_digest(v: Any, key: str = "sha256") -> str:
    if not (isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)):
        raise _fail(f"{key} must be 64 lowercase hex digits")
    return v


def nchunks(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


# ---------------------------------------------------------------------------- messages

OPS = ("get", "put", "sink", "gen", "list", "stat", "mkdir", "digest")
CC_NAMES = ("reno", "cubic", "bbr")


@dataclass
class Request:
    """The first frame of every exchange. Fields by op (others must be absent):

    get    path, chunk_size, [chunks], [expect {size, mtime_ns}]     server sends chunks
    put    path, size, chunk_size, [mtime_ns]                       client sends chunks
    sink   size, seed, chunk_size, [chunks], [start]                client sends generated data
    gen    size, seed, chunk_size, [chunks]                         server sends generated data
    list   path ("" = root)                                         LISTING frames, END
    stat   path                                                     RESPONSE {type, size, mtime_ns}
    mkdir  path                                                     RESPONSE {}
    digest path                                                     RESPONSE {size, mtime_ns, sha256}
    any    [cc]: congestion control the server should use when it is the data sender
    """

    op: str
    path: str | None = None
    size: int | None = None
    seed: int | None = None
    chunk_size: int | None = None
    chunks: list[tuple[int, int]] | None = None
    expect: dict | None = None
    mtime_ns: int | None = None
    start: float | None = None
    cc: str | None = None

    def to_obj(self) -> dict:
        obj: dict[str, Any] = {"v": VERSION, "op": self.op}
        for k in ("path", "size", "seed", "chunk_size", "expect", "mtime_ns", "start", "cc"):
            v = getattr(self, k)
            if v is not None:
                obj[k] = v
        if self.chunks is not None:
            obj["chunks"] = [list(r) for r in self.chunks]
        return obj

    @classmethod
    def from_obj(cls, obj: dict) -> Request:
        v = get_int(obj, "v", 0, 2**31)
        if v != VERSION:
            raise QtpError(ErrorCode.UNSUPPORTED, f"protocol version {v} not supported (want {VERSION})")
        op = get_str(obj, "op", 16, choices=OPS)
        cc = get_str(obj, "cc", 16, None, choices=CC_NAMES)
        base = {"v", "op", "cc"}
        r = cls(op=op, cc=cc)
        if op in ("list",):
            check_keys(obj, base | {"path"}, op)
            r.path = get_path(obj, allow_empty=True)
        elif op in ("stat", "mkdir", "digest"):
            check_keys(obj, base | {"path"}, op)
            r.path = get_path(obj, allow_empty=op == "stat")
        elif op == "get":
            check_keys(obj, base | {"path", "chunk_size", "chunks", "expect"}, op)
            r.path = get_path(obj)
            r.chunk_size = get_int(obj, "chunk_size", MIN_CHUNK, MAX_CHUNK)
            r.chunks = get_ranges(obj, "chunks", MAX_SIZE // MIN_CHUNK, None)
            if obj.get("expect") is not None:
                e = obj["expect"]
                if not isinstance(e, dict):
                    raise _fail("expect must be an object")
                check_keys(e, {"size", "mtime_ns"}, "expect")
                r.expect = {
                    "size": get_int(e, "size", 0, MAX_SIZE),
                    "mtime_ns": get_int(e, "mtime_ns", 0, 2**63),
                }
        elif op == "put":
            check_keys(obj, base | {"path", "size", "chunk_size", "mtime_ns"}, op)
            r.path = get_path(obj)
            r.size = get_int(obj, "size", 0, MAX_SIZE)
            r.chunk_size = get_int(obj, "chunk_size", MIN_CHUNK, MAX_CHUNK)
            r.mtime_ns = get_int(obj, "mtime_ns", 0, 2**63, None)
        elif op in ("sink", "gen"):
            check_keys(obj, base | {"size", "seed", "chunk_size", "chunks", "start"}, op)
            r.size = get_int(obj, "size", 0, MAX_SIZE)
            r.seed = get_int(obj, "seed", 0, MAX_SEED)
            r.chunk_size = get_int(obj, "chunk_size", MIN_CHUNK, MAX_CHUNK)
            r.chunks = get_ranges(obj, "chunks", nchunks(r.size, r.chunk_size), None)
            r.start = get_float(obj, "start", 0.0, 1e11, None) if op == "sink" else None
            if op == "gen" and "start" in obj:
                raise _fail("unknown field(s) in gen: start")
        return r


@dataclass
class Response:
    """Request accepted. get: size, mtime_ns, chunk_size, chunks; put: have (verified chunks
    of an earlier interrupted upload); stat: type, size, mtime_ns; digest: size, mtime_ns,
    sha256; sink/gen/mkdir/list: nothing."""

    type: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    chunk_size: int | None = None
    chunks: list[tuple[int, int]] | None = None
    have: list[tuple[int, int]] | None = None
    sha256: str | None = None

    def to_obj(self) -> dict:
        obj: dict[str, Any] = {}
        for k in ("type", "size", "mtime_ns", "chunk_size", "sha256"):
            v = getattr(self, k)
            if v is not None:
                obj[k] = v
        for k in ("chunks", "have"):
            v = getattr(self, k)
            if v is not None:
                obj[k] = [list(r) for r in v]
        return obj

    @classmethod
    def from_obj(cls, obj: dict) -> Response:
        check_keys(obj, {"type", "size", "mtime_ns", "chunk_size", "chunks", "have", "sha256"}, "RESPONSE")
        r = cls(
            type=get_str(obj, "type", 8, None, choices=("file", "dir")),
            size=get_int(obj, "size", 0, MAX_SIZE, None),
            mtime_ns=get_int(obj, "mtime_ns", 0, 2**63, None),
            chunk_size=get_int(obj, "chunk_size", MIN_CHUNK, MAX_CHUNK, None),
        )
        limit = (
            nchunks(r.size, r.chunk_size) if r.size is not None and r.chunk_size else MAX_SIZE // MIN_CHUNK
        )
        r.chunks = get_ranges(obj, "chunks", limit, None)
        r.have = get_ranges(obj, "have", limit, None)
        if obj.get("sha256") is not None:
            r.sha256 = check_digest(obj["sha256"])
        return r


@dataclass
class Error:
    code: int
    message: str = ""

    def to_obj(self) -> dict:
        return {"code": int(self.code), "message": self.message[:1000]}

    @classmethod
    def from_obj(cls, obj: dict) -> Error:
        check_keys(obj, {"code", "message"}, "ERROR")
        return cls(code=get_int(obj, "code", 0, 2**62), message=get_str(obj, "message", 4000, ""))

    def exception(self) -> QtpError:
        return QtpError(self.code, self.message)


@dataclass
class Entry:
    path: str  # relative to the listed directory, '/'-separated
    type: str  # "file" | "dir"
    size: int = 0
    mtime_ns: int = 0


@dataclass
class Listing:
    entries: list[Entry] = field(default_factory=list)

    def to_obj(self) -> dict:
        return {"entries": [[e.path, e.type, e.size, e.mtime_ns] for e in self.entries]}

    @classmethod
    def from_obj(cls, obj: dict) -> Listing:
        check_keys(obj, {"entries"}, "LISTING")
        raw = obj.get("entries")
        if not isinstance(raw, list) or len(raw) > MAX_ENTRIES:
            raise _fail(f"entries must be a list of at most {MAX_ENTRIES}")
        out = []
        for e in raw:
            if not (isinstance(e, list) and len(e) == 4):
                raise _fail("each entry must be [path, type, size, mtime_ns]")
            p, t, s, m = e
            if t not in ("file", "dir"):
                raise _fail("entry type must be 'file' or 'dir'")
            if not (_is_int(s) and 0 <= s <= MAX_SIZE and _is_int(m) and 0 <= m <= 2**63):
                raise _fail("entry size/mtime_ns out of range")
            if not isinstance(p, str) or len(p) > MAX_PATH:
                raise _fail("entry path must be a string")
            try:
                path = check_path(p)
            except QtpError as exc:  # a server naming ../x is hostile, not just refused
                raise _fail(f"bad entry path {p!r}: {exc.message}") from None
            out.append(Entry(path, t, s, m))
        return cls(out)


@dataclass
class End:
    """No more chunks in this round. sha256: of the whole content (when the sender knows
    it); bytes: payload bytes sent in this round; count: LISTING entries sent."""

    sha256: str | None = None
    bytes: int | None = None
    count: int | None = None

    def to_obj(self) -> dict:
        return {
            k: v
            for k, v in (("sha256", self.sha256), ("bytes", self.bytes), ("count", self.count))
            if v is not None
        }

    @classmethod
    def from_obj(cls, obj: dict) -> End:
        check_keys(obj, {"sha256", "bytes", "count"}, "END")
        e = cls(bytes=get_int(obj, "bytes", 0, MAX_SIZE, None), count=get_int(obj, "count", 0, 2**40, None))
        if obj.get("sha256") is not None:
            e.sha256 = check_digest(obj["sha256"])
        return e


@dataclass
class Result:
    """The data receiver's verdict after END: ok, or `missing` chunks the sender must send
    again (failed verification). For sink it reports receiver-side measurements: bytes,
    first_byte/last_byte (unix time), intervals (bytes per 100 ms bin from bin `i0`, bins
    counted from the request's `start`), cpu_s (server process CPU during the transfer)."""

    ok: bool
    missing: list[tuple[int, int]] | None = None
    bytes: int | None = None
    first_byte: float | None = None
    last_byte: float | None = None
    i0: int | None = None
    bins: list[int] | None = None
    cpu_s: float | None = None

    def to_obj(self) -> dict:
        obj: dict[str, Any] = {"ok": self.ok}
        for k in ("bytes", "first_byte", "last_byte", "i0", "bins", "cpu_s"):
            v = getattr(self, k)
            if v is not None:
                obj[k] = v
        if self.missing is not None:
            obj["missing"] = [list(r) for r in self.missing]
        return obj

    @classmethod
    def from_obj(cls, obj: dict) -> Result:
        check_keys(
            obj, {"ok", "missing", "bytes", "first_byte", "last_byte", "i0", "bins", "cpu_s"}, "RESULT"
        )
        r = cls(
            ok=get_bool(obj, "ok"),
            missing=get_ranges(obj, "missing", MAX_SIZE // MIN_CHUNK, None),
            bytes=get_int(obj, "bytes", 0, MAX_SIZE, None),
            first_byte=get_float(obj, "first_byte", 0.0, 1e11, None),
            last_byte=get_float(obj, "last_byte", 0.0, 1e11, None),
            i0=get_int(obj, "i0", -(2**40), 2**40, None),
            cpu_s=get_float(obj, "cpu_s", 0.0, 1e9, None),
        )
        if obj.get("bins") is not None:
            b = obj["bins"]
            if (
                not isinstance(b, list)
                or len(b) > MAX_INTERVALS
                or not all(_is_int(x) and 0 <= x <= MAX_SIZE for x in b)
            ):
                raise _fail(f"bins must be a list of at most {MAX_INTERVALS} byte counts")
            r.bins = b
        return r


_PARSERS: dict[int, Callable[[dict], Any]] = {
    REQUEST: Request.from_obj,
    RESPONSE: Response.from_obj,
    ERROR: Error.from_obj,
    LISTING: Listing.from_obj,
    END: End.from_obj,
    RESULT: Result.from_obj,
}
_TYPES = {Request: REQUEST, Response: RESPONSE, Error: ERROR, Listing: LISTING, End: END, Result: RESULT}


def _no_dupes(pairs: list[tuple[str, Any]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise ValueError("duplicate key")
    return d


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def decode_control(ftype: int, body: bytes | bytearray | memoryview) -> Any:
    """Parse and validate one control frame body into its message object."""
    try:
        obj = json.loads(
            bytes(body).decode("utf-8"), object_pairs_hook=_no_dupes, parse_constant=_no_constants
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _fail(f"{FRAME_NAMES.get(ftype, ftype)} body is not valid JSON: {str(exc)[:80]}") from None
    if not isinstance(obj, dict):
        raise _fail(f"{FRAME_NAMES.get(ftype, ftype)} body must be a JSON object")
    return _PARSERS[ftype](obj)


def encode(msg: Any) -> bytes:
    """One control frame (header + JSON body) for a message object."""
    body = json.dumps(msg.to_obj(), separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(body) > MAX_CONTROL:
        raise ValueError(f"control message of {len(body)} bytes exceeds {MAX_CONTROL}")
    return FRAME_HEADER.pack(_TYPES[type(msg)], len(body)) + body


def encode_chunk_header(index: int, offset: int, length: int, digest: bytes | None) -> bytes:
    """Frame header + chunk header of a CHUNK frame; the `length` data bytes follow."""
    if digest is None:
        return FRAME_HEADER.pack(CHUNK, CHUNK_HEADER.size + length) + CHUNK_HEADER.pack(index, offset, 0)
    return (
        FRAME_HEADER.pack(CHUNK, CHUNK_HEADER.size + DIGEST_SIZE + length)
        + CHUNK_HEADER.pack(index, offset, FLAG_DIGEST)
        + digest
    )


# ---------------------------------------------------------------------------- decoder

_S_FRAME, _S_CONTROL, _S_CHUNK_HDR, _S_DIGEST, _S_DATA = range(5)


class FrameHandler:
    """What `FrameDecoder` calls (subclass and override)."""

    def on_message(self, msg: Any) -> None:  # a validated control message object
        raise NotImplementedError

    def on_chunk_start(self, index: int, offset: int, length: int, digest: bytes | None) -> None:
        raise NotImplementedError

    def on_chunk_data(self, data: bytes | memoryview) -> None:  # in order; `length` bytes in all
        raise NotImplementedError

    def on_chunk_end(self) -> None:
        raise NotImplementedError


class FrameDecoder:
    """Incremental frame parser for one direction of one stream.

    `feed(data)` may be called with any split of the byte stream. Control frames are
    buffered (at most MAX_CONTROL) and delivered parsed; chunk data is passed through
    in pieces without copying. `allowed` restricts the frame types accepted."""

    __slots__ = (
        "_allowed",
        "_buf",
        "_chunk_index",
        "_handler",
        "_max_chunk",
        "_need",
        "_remaining",
        "_state",
        "_type",
        "frames",
    )

    def __init__(self, handler: FrameHandler, allowed: frozenset[int] | set[int], max_chunk: int = MAX_CHUNK):
        self._handler = handler
        self._allowed = frozenset(allowed)
        self._max_chunk = max_chunk
        self._state = _S_FRAME
        self._need = FRAME_HEADER.size
        self._buf = bytearray()
        self._type = 0
        self._remaining = 0  # data bytes left in the current chunk
        self._chunk_index = (0, 0)
        self.frames = 0

    def allow(self, allowed: frozenset[int] | set[int]) -> None:
        self._allowed = frozenset(allowed)

    @property
    def idle(self) -> bool:
        """True between frames (a clean place for the stream to end)."""
        return self._state == _S_FRAME and not self._buf

    def feed(self, data: bytes | memoryview) -> None:
        pos = 0
        n = len(data)
        handler = self._handler
        while pos < n:
            if self._state == _S_DATA:
                take = self._remaining if self._remaining < n - pos else n - pos
                if pos == 0 and take == n:
                    handler.on_chunk_data(data)
                else:
                    handler.on_chunk_data(memoryview(data)[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _S_FRAME
                    self._need = FRAME_HEADER.size
                    handler.on_chunk_end()
                continue
            # accumulate the bytes of a header or control body
            want = self._need - len(self._buf)
            if not self._buf and n - pos >= self._need:
                piece = data[pos : pos + self._need]
                pos += self._need
            else:
                piece = None
                take = want if want < n - pos else n - pos
                self._buf += data[pos : pos + take]
                pos += take
                if len(self._buf) < self._need:
                    continue
            if piece is None:
                piece = bytes(self._buf)
                self._buf.clear()
            self._advance(piece)

    def _advance(self, piece: bytes) -> None:
        state = self._state
        if state == _S_FRAME:
            ftype, length = FRAME_HEADER.unpack(piece)
            if ftype not in self._allowed:
                name = FRAME_NAMES.get(ftype)
                raise _fail(f"unexpected frame type {name or hex(ftype)} here")
            self._type = ftype
            self.frames += 1
            if ftype == CHUNK:
                if not CHUNK_HEADER.size < length <= CHUNK_HEADER.size + DIGEST_SIZE + self._max_chunk:
                    raise _fail(f"CHUNK frame length {length} out of range")
                self._remaining = length
                self._state = _S_CHUNK_HDR
                self._need = CHUNK_HEADER.size
            else:
                if length > MAX_CONTROL:
                    raise _fail(f"control frame of {length} bytes exceeds {MAX_CONTROL}")
                self._state = _S_CONTROL
                self._need = length
                if length == 0:
                    self._control(b"")
        elif state == _S_CONTROL:
            self._control(piece)
        elif state == _S_CHUNK_HDR:
            index, offset, flags = CHUNK_HEADER.unpack(piece)
            self._remaining -= CHUNK_HEADER.size
            if flags & ~FLAG_DIGEST:
                raise _fail(f"unknown CHUNK flags {flags:#x}")
            self._chunk_index = (index, offset)
            if flags & FLAG_DIGEST:
                if self._remaining <= DIGEST_SIZE:
                    raise _fail("CHUNK frame too short for its digest")
                self._state = _S_DIGEST
                self._need = DIGEST_SIZE
            else:
                self._start_chunk(None)
        elif state == _S_DIGEST:
            self._remaining -= DIGEST_SIZE
            self._start_chunk(piece)

    def _start_chunk(self, digest: bytes | None) -> None:
        index, offset = self._chunk_index
        if self._remaining > self._max_chunk:
            raise _fail("CHUNK data longer than the maximum chunk size")
        self._state = _S_DATA
        self._handler.on_chunk_start(index, offset, self._remaining, digest)

    def _control(self, body: bytes) -> None:
        self._state = _S_FRAME
        self._need = FRAME_HEADER.size
        self._handler.on_message(decode_control(self._type, body))

    def eof(self) -> None:
        """The stream ended: raises if it ended in the middle of a frame."""
        if not self.idle:
            raise _fail("stream ended in the middle of a frame")
