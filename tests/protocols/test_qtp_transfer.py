"""qtp transfer state (sans I/O): layout, verification, resume records, striping."""

from __future__ import annotations

import functools
import hashlib
import operator
import os
import random

import pytest

from protocols import payload
from protocols.qtp import messages as m
from protocols.qtp.commands import parse_gen, parse_size
from protocols.qtp.messages import ProtocolViolation
from protocols.qtp.parallel import split_items, split_ranges
from protocols.qtp.transfer import (
    ChunkLayout,
    ChunkReceiver,
    ChunkSet,
    ChunkSource,
    IntervalCounter,
    OrderedHasher,
    PartFile,
    ResumeRecord,
    count_ranges,
    iter_ranges,
    to_ranges,
)


def test_layout():
    lay = ChunkLayout(10_000, 4096)
    assert lay.nchunks == 3
    assert [lay.length(i) for i in range(3)] == [4096, 4096, 10_000 - 8192]
    assert lay.offset(2) == 8192
    assert lay.all() == [(0, 3)]
    assert lay.bytes_in([(1, 3)]) == 10_000 - 4096
    assert ChunkLayout(0, 4096).nchunks == 0 and ChunkLayout(0, 4096).all() == []
    with pytest.raises(ValueError):
        ChunkLayout(10, 100)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100])
def test_stripes_cover_everything_once_and_balance(n):
    lay = ChunkLayout(50 * 4096 + 7, 4096)
    stripes = lay.stripe(n)
    covered = [i for s in stripes for i in iter_ranges(s)]
    assert covered == list(range(lay.nchunks))
    sizes = [count_ranges(s) for s in stripes]
    assert max(sizes) - min(sizes) <= 1
    assert len(stripes) == min(n, lay.nchunks)


def test_ranges_helpers():
    assert to_ranges([5, 1, 2, 3, 9, 10]) == [(1, 4), (5, 6), (9, 11)]
    assert list(iter_ranges([(1, 3), (7, 8)])) == [1, 2, 7]
    s = ChunkSet(10, [(2, 5)])
    s.add(7)
    assert s.ranges() == [(2, 5), (7, 8)]
    assert s.missing() == [(0, 2), (5, 7), (8, 10)]
    assert 3 in s and 6 not in s and 99 not in s and len(s) == 4
    s.discard(3)
    assert s.ranges() == [(2, 3), (4, 5), (7, 8)]
    assert ChunkSet.full(4).complete and ChunkSet.full(0).complete


@pytest.mark.parametrize("seed", range(5))
def test_split_ranges_keeps_order_and_balance(seed):
    rng = random.Random(seed)
    s = ChunkSet(200, [])
    for i in rng.sample(range(200), 120):
        s.add(i)
    ranges = s.ranges()
    groups = split_ranges(ranges, 4)
    flat = [i for g in groups for i in iter_ranges(g)]
    assert flat == list(iter_ranges(ranges))
    counts = [count_ranges(g) for g in groups]
    assert max(counts) - min(counts) <= 1
    assert split_ranges([], 3) == []
    assert len(split_ranges([(0, 2)], 5)) == 2


def test_split_items():
    items = [("a", 100), ("b", 1), ("c", 60), ("d", 50)]
    groups = split_items(items, 2, weight=lambda x: x[1])
    assert sorted(functools.reduce(operator.iadd, (g for g in groups), [])) == sorted(items)
    loads = sorted(sum(x[1] for x in g) for g in groups)
    assert loads == [100, 111] or loads == [101, 110]


def source_frames(layout, ranges, data, digests=True):
    src = ChunkSource(layout, ranges, lambda o, n: data[o : o + n], digests=digests)
    frames = []
    while (fr := src.next_frame()) is not None:
        frames.append(fr)
    return src, frames


class Feed(m.FrameHandler):
    def __init__(self, receiver):
        self.r = receiver
        self.results = []

    def on_message(self, msg):
        raise AssertionError(msg)

    def on_chunk_start(self, *a):
        self.r.start(*a)

    def on_chunk_data(self, d):
        self.r.data(d)

    def on_chunk_end(self):
        self.results.append(self.r.end())


def deliver(receiver, frames, corrupt=()):
    h = Feed(receiver)
    d = m.FrameDecoder(h, {m.CHUNK})
    for k, (hdr, data) in enumerate(frames):
        if k in corrupt:
            data = bytearray(data)
            data[0] ^= 1
            data = bytes(data)
        d.feed(hdr)
        for i in range(0, len(data), 1400):
            d.feed(data[i : i + 1400])
    return h.results


def test_chunks_verify_commit_and_whole_digest():
    data = os.urandom(30_000)
    lay = ChunkLayout(len(data), 4096)
    src, frames = source_frames(lay, None, data)
    assert src.sha256 == hashlib.sha256(data).hexdigest()
    out = bytearray(len(data))
    verified = []

    def commit(off, pieces):
        b = b"".join(bytes(p) for p in pieces)
        out[off : off + len(b)] = b

    hasher = OrderedHasher()
    rc = ChunkReceiver(
        lay, ChunkSet.full(lay.nchunks), commit=commit, hasher=hasher, on_verified=verified.append
    )
    assert all(deliver(rc, frames))
    assert bytes(out) == data and verified == list(range(lay.nchunks))
    assert rc.verified.complete and rc.bytes_verified == len(data)
    assert hasher.finish(len(data)) == hashlib.sha256(data).hexdigest()


def test_corrupted_chunk_is_not_committed_and_is_reported():
    data = os.urandom(5 * 4096)
    lay = ChunkLayout(len(data), 4096)
    _, frames = source_frames(lay, None, data)
    committed = []
    rc = ChunkReceiver(lay, ChunkSet.full(lay.nchunks), commit=lambda o, p: committed.append(o))
    assert deliver(rc, frames, corrupt={2}) == [True, True, False, True, True]
    assert rc.failed == {2} and 2 * 4096 not in committed and 2 not in rc.verified
    # the refetch round
    rc.wanted = ChunkSet(lay.nchunks, [(2, 3)])
    _, again = source_frames(lay, [(2, 3)], data)
    assert deliver(rc, again) == [True]
    assert rc.verified.complete and not rc.failed


def test_receiver_rejects_what_was_not_asked_for():
    data = os.urandom(3 * 4096)
    lay = ChunkLayout(len(data), 4096)
    rc = ChunkReceiver(lay, ChunkSet(lay.nchunks, [(0, 1)]))
    with pytest.raises(ProtocolViolation, match="not requested"):
        rc.start(1, 4096, 4096, b"x" * 32)
    with pytest.raises(ProtocolViolation, match="offset/length"):
        rc.start(0, 4, 4096, b"x" * 32)
    with pytest.raises(ProtocolViolation, match="offset/length"):
        rc.start(0, 0, 100, b"x" * 32)
    with pytest.raises(ProtocolViolation, match="without its SHA-256"):
        rc.start(0, 0, 4096, None)
    rc.start(0, 0, 4096, b"x" * 32)
    with pytest.raises(ProtocolViolation, match="inside another"):
        rc.start(0, 0, 4096, b"x" * 32)
    rc2 = ChunkReceiver(lay, ChunkSet.full(lay.nchunks))
    rc2.start(0, 0, 4096, hashlib.sha256(data[:4096]).digest())
    rc2.data(data[:4096])
    assert rc2.end()
    with pytest.raises(ProtocolViolation, match="not requested"):  # no duplicates
        rc2.start(0, 0, 4096, b"x" * 32)


def test_generated_payload_checked_by_content():
    gen = payload.payload(3)
    lay = ChunkLayout(100_000, 8192)
    src = ChunkSource(lay, None, gen.read, digests=False)
    frames = []
    while (fr := src.next_frame()) is not None:
        frames.append(fr)
    rc = ChunkReceiver(
        lay, ChunkSet.full(lay.nchunks), require_digest=False, check=lambda off, p: gen.read(off, len(p)) == p
    )
    res = deliver(rc, frames, corrupt={4})
    assert res.count(False) == 1 and res[4] is False


def test_ordered_hasher_reads_back_after_a_gap():
    data = os.urandom(20_000)
    h = OrderedHasher()
    assert h.offer(0, [data[:5000]])
    assert not h.offer(10_000, [data[10_000:15_000]])
    assert h.finish(len(data), lambda o, n: data[o : o + n]) == hashlib.sha256(data).hexdigest()


def test_resume_record_round_trip_and_corruption(tmp_path):
    p = tmp_path / "x.qtp-state"
    rec = ResumeRecord("qtp://h:1/a", 100_000, 5, 4096, [(0, 3), (7, 9)])
    rec.save(p)
    back = ResumeRecord.load(p)
    assert back == rec and back.matches("qtp://h:1/a", 100_000, 5, 4096)
    assert not back.matches("qtp://h:1/a", 100_001, 5, 4096)
    for bad in [
        "",
        "{",
        "[]",
        '{"version": 2}',
        '{"version": 1, "size": 10}',
        '{"version": 1, "source": "s", "size": 10, "mtime_ns": 0, "chunk_size": 4096, "verified": [[0, 9]]}',
    ]:
        p.write_text(bad)
        assert ResumeRecord.load(p) is None
    assert ResumeRecord.load(tmp_path / "missing") is None


def test_part_file_resume(tmp_path):
    dest = tmp_path / "out.bin"
    data = os.urandom(10 * 4096)
    lay = ChunkLayout(len(data), 4096)
    part = PartFile(dest, "src", lay, 42)
    part.open()
    for i in (0, 1, 2, 5):
        part.write(lay.offset(i), [data[lay.offset(i) : lay.offset(i) + lay.length(i)]])
        part.mark(i)
    part.close()  # interrupted
    assert part.part.exists() and part.state.exists() and not dest.exists()
    again = PartFile(dest, "src", lay, 42)
    again.open()
    assert again.verified.ranges() == [(0, 3), (5, 6)] and again.resumed_chunks == 4
    for i in again.verified.missing():
        for j in range(*i):
            again.write(lay.offset(j), [data[lay.offset(j) : lay.offset(j) + lay.length(j)]])
            again.mark(j)
    assert again.sha256() == hashlib.sha256(data).hexdigest()
    again.finish(mtime_ns=10**18)
    assert dest.read_bytes() == data and not again.part.exists() and not again.state.exists()
    assert dest.stat().st_mtime_ns == 10**18
    # a record for another source (or version of it) is not trusted
    other = PartFile(tmp_path / "o.bin", "src", lay, 42)
    other.open()
    other.mark(0)
    other.close()
    fresh = PartFile(tmp_path / "o.bin", "src", lay, 43)
    fresh.open()
    assert fresh.verified.count == 0
    fresh.discard()
    assert not fresh.part.exists() and not fresh.state.exists()


def test_interval_counter():
    c = IntervalCounter(start=100.0)
    c.add(100.05, 10)
    c.add(100.31, 5)
    c.add(100.32, 5)
    assert c.bins() == (0, [10, 0, 0, 10])
    assert c.first == 100.05 and c.last == 100.32 and c.total == 20
    c.merge(2, [7, 3])
    assert c.intervals() == [[0.0, 10], [0.1, 0], [0.2, 7], [0.3, 13]]
    assert IntervalCounter(0).intervals() == []


def test_sizes_and_gen_specs():
    assert parse_size("1500") == 1500
    assert parse_size("10M") == 10_000_000
    assert parse_size("4MiB") == 4 * 2**20
    assert parse_size("1.5G") == 1_500_000_000
    assert parse_size("2Ki") == 2048
    for bad in ["", "x", "10Q", "-1"]:
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_gen("gen:1M:7") == (1_000_000, 7)
    assert parse_gen("gen:4Ki") == (4096, 0)
    assert parse_gen("file.bin") is None
    with pytest.raises(ValueError):
        parse_gen("gen:1:2:3")
