"""Test-only hooks, switched on by environment variables (README "Testing hooks").

QTP_TEST_CORRUPT_CHUNKS=1,3  damage the first transmission of these chunk indexes in the data
                             this process sends (exercises verification and refetch)
QTP_TEST_THROTTLE_BPS=N      send get/gen (server) and put/send (client) data at most at N B/s
"""

from __future__ import annotations

import os

from .transfer import ChunkSource


def _indexes(raw: str) -> set[int]:
    return {int(x) for x in raw.split(",") if x.strip().isdigit()}


CORRUPT_ONCE: set[int] = _indexes(os.environ.get("QTP_TEST_CORRUPT_CHUNKS", ""))
THROTTLE_BPS = float(os.environ.get("QTP_TEST_THROTTLE_BPS", "0") or 0)


def corrupting(source: ChunkSource) -> ChunkSource:
    """Wrap a source so that the chunks in CORRUPT_ONCE are sent damaged, once each."""
    if not CORRUPT_ONCE:
        return source
    orig = source.next_frame

    def next_frame():
        fr = orig()
        if fr is None:
            return fr
        hdr, data = fr
        index = int.from_bytes(hdr[5:13], "big")
        if index in CORRUPT_ONCE and len(data):
            CORRUPT_ONCE.discard(index)
            bad = bytearray(data)
            bad[len(bad) // 2] ^= 0xFF
            data = bytes(bad)
        return hdr, data

    source.next_frame = next_frame
    return source


def throttle(handler, source: ChunkSource, budget: int, now: float) -> int:
    """The budget a producer may use now under THROTTLE_BPS (0: wait; a timer wakes it)."""
    t0 = handler.__dict__.setdefault("_throttle_t0", now)
    allowed = int(THROTTLE_BPS * (now - t0)) + source.layout.chunk_size - source.bytes_sent
    if allowed <= 0:
        handler.conn.loop.call_later(0.02, handler.conn.schedule_transmit)
        return 0
    return min(budget, allowed)
