"""Transfer state, sans network I/O: chunk layout, verification, resume records, striping.

A transfer moves `size` bytes cut into chunks of `chunk_size` (the last may be shorter).
Every chunk travels in one CHUNK frame with its SHA-256; the receiver keeps a chunk only
when its digest (and, for generated payloads, its content) checks out, records it as
verified, and asks again for those that failed. The whole content's SHA-256 is checked at
the end. Resume records (`<dest>.qtp-state`, next to the partial file `<dest>.qtp-part`)
list the verified chunks, so an interrupted transfer fetches only the rest.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import messages as m
from .messages import ProtocolViolation

PART_SUFFIX = ".qtp-part"
STATE_SUFFIX = ".qtp-state"

Ranges = list[tuple[int, int]]


# ---------------------------------------------------------------------------- ranges


def to_ranges(indexes: Iterable[int]) -> Ranges:
    """Sorted disjoint [start, stop) ranges covering the given integers."""
    out: Ranges = []
    for i in sorted(set(indexes)):
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def iter_ranges(ranges: Iterable[tuple[int, int]]) -> Iterator[int]:
    for a, b in ranges:
        yield from range(a, b)


def count_ranges(ranges: Iterable[tuple[int, int]]) -> int:
    return sum(b - a for a, b in ranges)


# ---------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class ChunkLayout:
    """How `size` bytes are cut into chunks."""

    size: int
    chunk_size: int = m.DEFAULT_CHUNK

    def __post_init__(self) -> None:
        if self.size < 0 or not m.MIN_CHUNK <= self.chunk_size <= m.MAX_CHUNK:
            raise ValueError(f"bad layout: size {self.size}, chunk_size {self.chunk_size}")

    @property
    def nchunks(self) -> int:
        return m.nchunks(self.size, self.chunk_size)

    def offset(self, index: int) -> int:
        return index * self.chunk_size

    def length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def all(self) -> Ranges:
        return [(0, self.nchunks)] if self.nchunks else []

    def bytes_in(self, ranges: Iterable[tuple[int, int]]) -> int:
        total = 0
        for a, b in ranges:
            total += min(b * self.chunk_size, self.size) - a * self.chunk_size
        return total

    def stripe(self, n: int) -> list[Ranges]:
        """Split the chunks into at most `n` contiguous byte ranges of nearly equal size
        (one per connection); empty stripes are left out."""
        if n < 1:
            raise ValueError("need at least one stripe")
        total = self.nchunks
        out = []
        for k in range(n):
            a, b = total * k // n, total * (k + 1) // n
            if b > a:
                out.append([(a, b)])
        return out


class ChunkSet:
    """A set of chunk indexes in [0, nchunks) (a bitmap)."""

    __slots__ = ("_bits", "count", "nchunks")

    def __init__(self, nchunks: int, ranges: Iterable[tuple[int, int]] = ()):
        self.nchunks = nchunks
        self._bits = bytearray(nchunks)
        self.count = 0
        for a, b in ranges:
            if not 0 <= a < b <= nchunks:
                raise ValueError(f"range [{a}, {b}) outside [0, {nchunks})")
            self._bits[a:b] = b"\x01" * (b - a)
        self.count = self._bits.count(1)

    @classmethod
    def full(cls, nchunks: int) -> ChunkSet:
        return cls(nchunks, [(0, nchunks)] if nchunks else [])

    def add(self, i: int) -> None:
        if not self._bits[i]:
            self._bits[i] = 1
            self.count += 1

    def discard(self, i: int) -> None:
        if 0 <= i < self.nchunks and self._bits[i]:
            self._bits[i] = 0
            self.count -= 1

    def __contains__(self, i: int) -> bool:
        return 0 <= i < self.nchunks and self._bits[i] == 1

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        return (i for i, b in enumerate(self._bits) if b)

    @property
    def complete(self) -> bool:
        return self.count == self.nchunks

    def ranges(self) -> Ranges:
        return self._runs(1)

    def missing(self) -> Ranges:
        return self._runs(0)

    def _runs(self, value: int) -> Ranges:
        out: Ranges = []
        bits = self._bits
        i, n = 0, self.nchunks
        target = bytes([value])
        while i < n:
            j = bits.find(target, i)
            if j < 0:
                break
            k = bits.find(bytes([1 - value]), j)
            if k < 0:
                k = n
            out.append((j, k))
            i = k
        return out


# ---------------------------------------------------------------------------- hashing


class OrderedHasher:
    """SHA-256 of a whole content, fed with verified chunks as long as they come in order;
    `finish` reads whatever could not be fed (after a gap) back from storage."""

    __slots__ = ("_h", "pos")

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.pos = 0

    def offer(self, offset: int, pieces: Iterable[bytes | memoryview]) -> bool:
        if offset != self.pos:
            return False
        for p in pieces:
            self._h.update(p)
            self.pos += len(p)
        return True

    def finish(self, size: int, read: Callable[[int, int], bytes] | None = None) -> str:
        while self.pos < size:
            if read is None:
                raise RuntimeError("content not hashed in order and no way to read it back")
            data = read(self.pos, min(8 << 20, size - self.pos))
            if not data:
                raise OSError(f"short read at {self.pos} while hashing")
            self._h.update(data)
            self.pos += len(data)
        return self._h.hexdigest()


def file_sha256(path: str | os.PathLike, size: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            data = f.read(8 << 20)
            if not data:
                break
            h.update(data)
    return h.hexdigest()


# ---------------------------------------------------------------------------- receiving


class ChunkReceiver:
    """Receiving side of CHUNK frames for one content.

    `wanted`: chunks the peer may send in this round (anything else is a protocol
    violation). Each chunk must arrive with the offset and length the layout gives it and,
    if `require_digest`, with its SHA-256. `check(offset, piece) -> bool` optionally checks
    content (generated payloads). `commit(offset, pieces)` stores a chunk once it verified
    (None: discard, as a sink does). Failed chunks go to `failed`; verified ones to
    `verified` and `on_verified(index)`."""

    def __init__(
        self,
        layout: ChunkLayout,
        wanted: ChunkSet,
        *,
        verified: ChunkSet | None = None,
        require_digest: bool = True,
        check: Callable[[int, bytes | memoryview], bool] | None = None,
        commit: Callable[[int, list], None] | None = None,
        hasher: OrderedHasher | None = None,
        on_verified: Callable[[int], None] | None = None,
    ):
        self.layout = layout
        self.wanted = wanted
        self.verified = verified if verified is not None else ChunkSet(layout.nchunks)
        self.failed: set[int] = set()
        self.require_digest = require_digest
        self._check = check
        self._commit = commit
        self.hasher = hasher
        self._on_verified = on_verified
        self._index: int | None = None
        self._offset = 0
        self._pos = 0
        self._digest: bytes | None = None
        self._sha = None
        self._pieces: list = []
        self._content_ok = True
        self.bytes_verified = 0  # payload bytes of chunks that verified
        self.bytes_received = 0  # payload bytes that arrived (good or bad)

    @property
    def in_chunk(self) -> bool:
        return self._index is not None

    def start(self, index: int, offset: int, length: int, digest: bytes | None) -> None:
        if self._index is not None:
            raise ProtocolViolation("CHUNK started inside another chunk")
        if index >= self.layout.nchunks or index not in self.wanted:
            raise ProtocolViolation(f"chunk {index} was not requested")
        if offset != self.layout.offset(index) or length != self.layout.length(index):
            raise ProtocolViolation(
                f"chunk {index} has offset/length {offset}/{length}, expected "
                f"{self.layout.offset(index)}/{self.layout.length(index)}"
            )
        if digest is None and self.require_digest:
            raise ProtocolViolation(f"chunk {index} arrived without its SHA-256")
        self.wanted.discard(index)
        self._index = index
        self._offset = offset
        self._pos = offset
        self._digest = digest
        self._sha = hashlib.sha256() if digest is not None else None
        self._pieces = []
        self._content_ok = True

    def data(self, piece: bytes | memoryview) -> None:
        n = len(piece)
        if self._sha is not None:
            self._sha.update(piece)
        if self._check is not None and self._content_ok:
            self._content_ok = self._check(self._pos, piece)
        if self._commit is not None or self.hasher is not None:
            self._pieces.append(piece)
        self._pos += n
        self.bytes_received += n

    def end(self) -> bool:
        """The chunk is complete: verify, commit and record it. True if it verified."""
        index = self._index
        assert index is not None
        self._index = None
        ok = self._content_ok and (self._sha is None or self._sha.digest() == self._digest)
        pieces, self._pieces = self._pieces, []
        if not ok:
            self.failed.add(index)
            return False
        if self._commit is not None:
            self._commit(self._offset, pieces)
        if self.hasher is not None:
            self.hasher.offer(self._offset, pieces)
        self.failed.discard(index)
        self.verified.add(index)
        self.bytes_verified += self._pos - self._offset
        if self._on_verified is not None:
            self._on_verified(index)
        return True


# ---------------------------------------------------------------------------- sending


class ChunkSource:
    """Sending side: produces the CHUNK frames for the chunks in `ranges`, reading data
    with `read(offset, n)`. If the ranges cover the whole content (in order), `sha256`
    holds the content's digest once all frames were produced."""

    def __init__(
        self,
        layout: ChunkLayout,
        ranges: Ranges | None,
        read: Callable[[int, int], bytes],
        *,
        digests: bool = True,
    ):
        self.layout = layout
        self.ranges = list(ranges) if ranges is not None else layout.all()
        self._read = read
        self._digests = digests
        self._iter = iter_ranges(self.ranges)
        complete = self.ranges == layout.all()
        self._file_hash = hashlib.sha256() if complete else None
        self.sha256: str | None = hashlib.sha256(b"").hexdigest() if layout.size == 0 else None
        self.bytes_sent = 0
        self.done = False

    def resend(self, ranges: Ranges) -> None:
        """Queue chunks again (the receiver reported them missing)."""
        self._iter = iter_ranges(list(ranges))
        self.done = False

    def next_frame(self) -> tuple[bytes, bytes] | None:
        """(header, data) of the next CHUNK frame, or None when all were produced."""
        index = next(self._iter, None)
        if index is None:
            if not self.done and self._file_hash is not None:
                self.sha256 = self._file_hash.hexdigest()
                self._file_hash = None
            self.done = True
            return None
        offset, length = self.layout.offset(index), self.layout.length(index)
        data = self._read(offset, length)
        if len(data) != length:
            raise OSError(f"short read: chunk {index} has {len(data)} of {length} bytes")
        if self._file_hash is not None:
            self._file_hash.update(data)
        digest = hashlib.sha256(data).digest() if self._digests else None
        self.bytes_sent += length
        return m.encode_chunk_header(index, offset, length, digest), data


# ---------------------------------------------------------------------------- resume


@dataclass
class ResumeRecord:
    """What `<dest>.qtp-state` holds: which chunks of `<dest>.qtp-part` are verified, and
    the identity of the source they came from (size, mtime, chunk size)."""

    source: str
    size: int
    mtime_ns: int
    chunk_size: int
    verified: Ranges = field(default_factory=list)
    version: int = 1

    def matches(self, source: str, size: int, mtime_ns: int, chunk_size: int) -> bool:
        return (self.source, self.size, self.mtime_ns, self.chunk_size) == (
            source,
            size,
            mtime_ns,
            chunk_size,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "source": self.source,
                "size": self.size,
                "mtime_ns": self.mtime_ns,
                "chunk_size": self.chunk_size,
                "verified": [list(r) for r in self.verified],
            }
        )

    def save(self, path: str | os.PathLike) -> None:
        """Atomically (a reader or a crash never sees half a record)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(self.to_json())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ResumeRecord | None:
        """The record, or None if missing, unreadable or invalid (then start afresh)."""
        try:
            obj = json.loads(Path(path).read_text())
            if not isinstance(obj, dict) or obj.get("version") != 1:
                return None
            size = m.get_int(obj, "size", 0, m.MAX_SIZE)
            chunk_size = m.get_int(obj, "chunk_size", m.MIN_CHUNK, m.MAX_CHUNK)
            rec = cls(
                source=m.get_str(obj, "source", 10000),
                size=size,
                mtime_ns=m.get_int(obj, "mtime_ns", 0, 2**63),
                chunk_size=chunk_size,
                verified=m.check_ranges(obj.get("verified", []), m.nchunks(size, chunk_size)),
            )
        except (OSError, ValueError, m.QtpError):
            return None
        return rec


def part_path(dest: str | os.PathLike) -> Path:
    return Path(str(dest) + PART_SUFFIX)


def state_path(dest: str | os.PathLike) -> Path:
    return Path(str(dest) + STATE_SUFFIX)


class PartFileBusy(OSError):
    """The partial file is locked by another transfer."""


class PartFile:
    """`<dest>.qtp-part` plus its resume record `<dest>.qtp-state`.

    `open()` reuses a partial file whose record matches the source, otherwise starts a new
    one; `verified` then holds the chunks already present. `mark(index)` records a
    verified chunk (the record is saved at most every `save_interval` seconds, and by
    `flush`). `finish(sha256)` checks the whole file and renames it to `dest`."""

    def __init__(
        self,
        dest: str | os.PathLike,
        source: str,
        layout: ChunkLayout,
        mtime_ns: int,
        *,
        save_interval: float = 0.25,
        clock: Callable[[], float] | None = None,
    ):
        import time

        self.dest = Path(dest)
        self.part = part_path(dest)
        self.state = state_path(dest)
        self.source = source
        self.layout = layout
        self.mtime_ns = mtime_ns
        self.verified = ChunkSet(layout.nchunks)
        self.resumed_chunks = 0
        self.fd: int | None = None
        self._dirty = False
        self._last_save = 0.0
        self._interval = save_interval
        self._clock = clock or time.monotonic

    def open(self, resume: bool = True, lock: bool = True) -> None:
        """Open (or create) the partial file, locked exclusively (`flock`) so that two
        transfers never write one file; PartFileBusy if another one holds it."""
        if self.part.is_symlink():
            self.part.unlink()
        fd = os.open(self.part, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            if lock:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise PartFileBusy(f"another transfer is writing {self.part}") from None
            rec = ResumeRecord.load(self.state) if resume else None
            if (
                rec is not None
                and rec.matches(self.source, self.layout.size, self.mtime_ns, self.layout.chunk_size)
                and os.fstat(fd).st_size == self.layout.size
            ):
                self.verified = ChunkSet(self.layout.nchunks, rec.verified)
                self.resumed_chunks = self.verified.count
            else:
                self.verified = ChunkSet(self.layout.nchunks)
                self.resumed_chunks = 0
                self.state.unlink(missing_ok=True)  # never let an old record describe new content
                os.ftruncate(fd, 0)
                os.ftruncate(fd, self.layout.size)
                self._dirty = True
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        # The record is first written after `save_interval` (or by close): a file that
        # completes sooner never needs one; one interrupted sooner starts afresh.
        self._last_save = self._clock()

    def write(self, offset: int, pieces: list) -> None:
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def read(self, offset: int, n: int) -> bytes:
        return os.pread(self.fd, n, offset)

    def mark(self, index: int) -> None:
        self.verified.add(index)
        self._dirty = True
        now = self._clock()
        if now - self._last_save >= self._interval:
            self.flush()

    def unmark(self, indexes: Iterable[int]) -> None:
        for i in indexes:
            self.verified.discard(i)
        self._dirty = True
        self.flush()

    def flush(self) -> None:
        if self._dirty:
            ResumeRecord(
                self.source, self.layout.size, self.mtime_ns, self.layout.chunk_size, self.verified.ranges()
            ).save(self.state)
            self._dirty = False
            self._last_save = self._clock()

    def sha256(self) -> str:
        h = OrderedHasher()
        return h.finish(self.layout.size, self.read)

    def finish(self, mtime_ns: int | None = None) -> Path:
        """Rename the (verified) partial file to its destination and drop the record."""
        if mtime_ns:
            os.utime(self.part, ns=(mtime_ns, mtime_ns))
        os.replace(self.part, self.dest)
        try:
            self.state.unlink()
        except FileNotFoundError:
            pass
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None
        return self.dest

    def close(self) -> None:
        """Stop (interrupted): keep the partial file and save the record for a resume."""
        if self.fd is not None:
            self.flush()
            os.close(self.fd)
            self.fd = None

    def discard(self) -> None:
        self.close()
        for p in (self.part, self.state):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


# ---------------------------------------------------------------------------- measurements


class IntervalCounter:
    """Bytes per `width`-second bin, bins counted from `start` (unix time)."""

    __slots__ = ("_bins", "first", "last", "start", "total", "width")

    def __init__(self, start: float, width: float = 0.1):
        self.start = start
        self.width = width
        self._bins: dict[int, int] = {}
        self.first: float | None = None
        self.last: float | None = None
        self.total = 0

    def add(self, t: float, n: int) -> None:
        if self.first is None:
            self.first = t
        self.last = t
        self.total += n
        i = int((t - self.start) // self.width)
        self._bins[i] = self._bins.get(i, 0) + n

    def bins(self) -> tuple[int, list[int]]:
        """(index of the first bin, bytes per bin) with empty bins filled in."""
        if not self._bins:
            return 0, []
        lo, hi = min(self._bins), max(self._bins)
        return lo, [self._bins.get(i, 0) for i in range(lo, hi + 1)]

    def merge(self, i0: int, bins: list[int]) -> None:
        for k, n in enumerate(bins):
            if n:
                self._bins[i0 + k] = self._bins.get(i0 + k, 0) + n
                self.total += n

    def intervals(self) -> list[list[float]]:
        """[[t - start, bytes], ...] for TransferStats (t = start of the bin)."""
        i0, bins = self.bins()
        return [[round((i0 + k) * self.width, 6), n] for k, n in enumerate(bins)]
