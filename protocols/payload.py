"""Deterministic, fast, seekable payload bytes: what protocol clients send and servers verify.

The stream of `size` bytes for a `seed` is a sequence of 64 KiB segments. Segment `s` is
8 bytes holding `s` XOR a seed-derived key (big endian), followed by a 65528-byte window
of a 1 MiB random block (drawn once from `random.Random(seed)`) that starts at a
segment-dependent position. Producing or checking any byte range is therefore slicing
and a memcmp (GB/s in CPython), any byte is addressable by its offset (so transfers can
be striped, resumed or retransmitted from the middle), and because every segment carries
its own index, reordered, duplicated or shifted data does not verify.

    gen = Payload(seed)
    data = gen.read(offset, n)            # bytes [offset, offset + n) of the stream
    v = PayloadVerifier(seed, offset=0)   # receiver: check without storing
    v.feed(piece) ...                     # False (and .mismatch_at) on the first bad byte

The byte stream is a pure function of (seed, offset): it is identical on every machine and
Python version >= 3.9 (it relies only on `random.Random(int).randbytes` / `getrandbits`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

SEGMENT = 1 << 16  # bytes per segment (each starts with its 8-byte index header)
_BLOCK = 1 << 20  # size of the random block the segment bodies are windows of
_HEADER = 8
_MULT = 0x9E3779B1  # golden-ratio multiplier: spreads segment windows over the block
_MASK64 = (1 << 64) - 1


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"payload seed must be an int, not {type(seed).__name__}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"payload seed must be in [0, 2**63), got {seed}")
    return seed


class Payload:
    """The deterministic byte stream for one seed (read any range with `read`)."""

    __slots__ = ("_block", "_key", "seed")

    def __init__(self, seed: int = 0):
        self.seed = _check_seed(seed)
        rng = random.Random(seed)
        self._block = rng.randbytes(_BLOCK + SEGMENT)
        self._key = rng.getrandbits(64)

    def _segment_parts(self, s: int, a: int, b: int) -> list[bytes]:
        """Bytes [a, b) of segment s (0 <= a < b <= SEGMENT), as one or two parts."""
        parts = []
        if a < _HEADER:
            parts.append(((s ^ self._key) & _MASK64).to_bytes(8, "big")[a : min(b, _HEADER)])
            a = _HEADER
        if b > a:
            w = (s * _MULT) % _BLOCK - _HEADER  # body byte i of the segment is block[w + i]
            parts.append(self._block[w + a : w + b])
        return parts

    def read(self, offset: int, n: int) -> bytes:
        """Bytes [offset, offset + n) of the stream."""
        if offset < 0 or n < 0:
            raise ValueError("offset and length must be >= 0")
        parts: list[bytes] = []
        end = offset + n
        pos = offset
        while pos < end:
            s, a = divmod(pos, SEGMENT)
            b = min(SEGMENT, a + (end - pos))
            parts.extend(self._segment_parts(s, a, b))
            pos += b - a
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def chunks(self, offset: int, size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        """Bytes [offset, offset + size) in pieces of at most `chunk` bytes."""
        end = offset + size
        while offset < end:
            n = min(chunk, end - offset)
            yield self.read(offset, n)
            offset += n


class ChunkChecker:
    """`check(offset, piece) -> bool` for pieces of a payload arriving chunk by chunk: the
    expected bytes of a chunk are generated once, then each piece is one slice compare."""

    __slots__ = ("_chunk", "_data", "_gen", "_size", "_start")

    def __init__(self, seed: int, chunk: int, size: int):
        self._gen = payload(seed)
        self._chunk = chunk
        self._size = size
        self._start = -1
        self._data = b""

    def __call__(self, offset: int, piece: bytes | memoryview) -> bool:
        n = len(piece)
        rel = offset - self._start
        if rel < 0 or rel + n > len(self._data):
            self._start = offset - offset % self._chunk
            self._data = self._gen.read(self._start, min(self._chunk, self._size - self._start))
            rel = offset - self._start
            if rel + n > len(self._data):  # a piece across chunks: not how qtp sends, but correct
                return self._gen.read(offset, n) == piece
        return self._data[rel : rel + n] == piece


_CACHE: dict[int, Payload] = {}


def payload(seed: int) -> Payload:
    """A cached `Payload` for `seed` (building one costs ~2 ms)."""
    p = _CACHE.get(seed)
    if p is None:
        if len(_CACHE) > 16:
            _CACHE.clear()
        p = _CACHE[seed] = Payload(seed)
    return p


def generate(seed: int, offset: int, n: int) -> bytes:
    """Bytes [offset, offset + n) of the payload stream of `seed`."""
    return payload(seed).read(offset, n)


def verify(seed: int, offset: int, data: bytes | bytearray | memoryview) -> bool:
    """True if `data` equals the payload stream of `seed` at `offset`."""
    return payload(seed).read(offset, len(data)) == data


class PayloadVerifier:
    """Checks a payload stream piece by piece at the receiver, without storing it.

    `feed(data)` checks `data` at the current position and advances; it returns False on
    the first mismatch (then `mismatch_at` is the absolute offset of the first bad byte and
    every later call returns False too). `seek(offset)` moves the position (retransmitted
    or striped ranges)."""

    __slots__ = ("_gen", "mismatch_at", "position", "verified")

    def __init__(self, seed: int, offset: int = 0):
        self._gen = payload(seed)
        self.position = offset
        self.verified = 0  # bytes that matched
        self.mismatch_at: int | None = None

    @property
    def ok(self) -> bool:
        return self.mismatch_at is None

    def seek(self, offset: int) -> None:
        self.position = offset

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        if self.mismatch_at is not None:
            return False
        n = len(data)
        expected = self._gen.read(self.position, n)
        if expected != data:
            got = bytes(data)
            i = next(i for i in range(n) if got[i] != expected[i])
            self.mismatch_at = self.position + i
            return False
        self.position += n
        self.verified += n
        return True
