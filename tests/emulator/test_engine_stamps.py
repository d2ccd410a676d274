"""Arrival times from the receive ring's kernel stamps (pure logic: an in-memory ring slot)."""
from __future__ import annotations

import itertools
import mmap
import time
from collections import deque
from types import SimpleNamespace

import pytest

from testbed.emulator import engine
from testbed.emulator.engine import TP2_HDR, TP_STATUS_USER, Engine
from testbed.emulator.model import DirectionModel
from testbed.emulator.udptool import udp_frame
from testbed.topology.model import LinkParams

DELAY_S = 0.010


def read_one(monkeypatch: pytest.MonkeyPatch, read_began: float, stamp_mono: float) -> float:
    """Put one frame stamped at `stamp_mono` (monotonic clock) in a ring slot, let the engine
    read it with the read having begun at `read_began`; return the arrival the model got."""
    offset = time.time() - time.monotonic()
    monkeypatch.setattr(engine, "realtime_offset", lambda: (read_began, offset))
    mm = mmap.mmap(-1, 4096)
    frame = udp_frame("02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2", 60)
    stamp = stamp_mono + offset
    sec = int(stamp)
    TP2_HDR.pack_into(mm, 0, TP_STATUS_USER, len(frame), len(frame), 64, 78, sec, int((stamp - sec) * 1e9))
    mm[64 : 64 + len(frame)] = frame
    ring = SimpleNamespace(mm=mm, frame_size=2048, frame_nr=2, index=0)
    model = DirectionModel(LinkParams(delay_ms=DELAY_S * 1e3), 1, 1500)
    d = SimpleNamespace(ring=ring, model=model, max_frame=1514, use_heap=False, queue=deque(),
                        csum_partial=0, oversize=0)  # fmt: skip
    assert Engine._read_ring(SimpleNamespace(seq=itertools.count()), d, read_began) == 1
    ((due, _frame),) = d.queue
    return due - DELAY_S


def test_a_frame_that_reached_the_ring_during_the_read_keeps_its_stamp(monkeypatch):
    """A softirq can put frames into the ring while the loop reads it: their stamps are after
    the read began and are true; bounding them by the read's start delivered them early."""
    now = time.monotonic()
    arrival = read_one(monkeypatch, read_began=now - 1e-3, stamp_mono=now - 0.5e-3)
    assert arrival == pytest.approx(now - 0.5e-3, abs=5e-6)


def test_a_stamp_after_the_read_is_bounded_by_the_read(monkeypatch):
    """A stamp later than the frame was read is a clock step: the read time bounds it."""
    now = time.monotonic()
    arrival = read_one(monkeypatch, read_began=now, stamp_mono=now + 5.0)
    assert now <= arrival <= time.monotonic()
