"""The baselines' sink exchange (protocols/common.py), sans I/O: what a server accepts and answers."""
from __future__ import annotations

import time

import pytest

from protocols.base import TransferStats
from protocols.common import SinkReceiver, SinkSender, stats_from_result
from protocols.qtp import messages as m

SIZE = 300_000
CHUNK = 65536


def exchange(sender: SinkSender, receiver: SinkReceiver, frames: list[bytes]) -> None:
    sender.feed(receiver.feed(sender.request()))
    for frame in frames:
        sender.feed(receiver.feed(frame))


def test_clean_exchange_and_stats() -> None:
    start = time.time()
    sender = SinkSender(SIZE, seed=5, start=start, chunk_size=CHUNK)
    receiver = SinkReceiver()
    frames = [h + d for h, d in sender.frames()]
    assert len(frames) == -(-SIZE // CHUNK)
    # split the byte stream at odd places: the receiver must not care
    stream = b"".join(frames) + sender.end()
    sender.feed(receiver.feed(sender.request()))
    assert sender.response is not None
    for i in range(0, len(stream), 7777):
        sender.feed(receiver.feed(stream[i:i + 7777]))
    assert receiver.done and sender.result is not None and sender.result.ok
    st = stats_from_result(TransferStats(protocol="t", cc=None, ok=True, start=start), sender.result, SIZE)
    assert st.ok and st.bytes == SIZE
    assert sum(n for _, n in st.intervals) == SIZE
    assert st.duration_s == pytest.approx(st.end - start)
    assert st.cpu_s_server is not None


def test_wrong_payload_is_an_integrity_error() -> None:
    sender = SinkSender(SIZE, seed=5, start=time.time(), chunk_size=CHUNK)
    header, data = next(sender.frames())
    with pytest.raises(m.QtpError) as err:
        exchange(sender, SinkReceiver(), [header + bytes(len(data))])
    assert err.value.code == m.ErrorCode.INTEGRITY


def test_out_of_order_chunk_and_early_end_are_violations() -> None:
    def fresh() -> SinkSender:
        return SinkSender(SIZE, seed=5, start=time.time(), chunk_size=CHUNK)

    frames = [h + d for h, d in fresh().frames()]
    with pytest.raises(m.ProtocolViolation, match="expected offset 0"):
        exchange(fresh(), SinkReceiver(), [frames[1]])
    sender = fresh()
    with pytest.raises(m.ProtocolViolation, match="END after 65536 of 300000"):
        exchange(sender, SinkReceiver(), [frames[0], sender.end()])
    receiver = SinkReceiver()
    exchange(fresh(), receiver, frames[:2])
    with pytest.raises(m.ProtocolViolation, match="before END"):
        receiver.eof()


def test_garbage_and_other_ops_are_refused() -> None:
    with pytest.raises(m.ProtocolViolation):
        SinkReceiver().feed(b"\x10\xff\xff\xff\xff" + b"x" * 100)
    with pytest.raises(m.QtpError) as err:
        SinkReceiver().feed(m.encode(m.Request(op="gen", size=10, seed=1, chunk_size=CHUNK)))
    assert err.value.code == m.ErrorCode.UNSUPPORTED


def test_missing_result_makes_stats_fail() -> None:
    st = stats_from_result(TransferStats(protocol="t", cc=None, ok=True, start=1.0), None, 10)
    assert not st.ok and st.error == "no result from the receiver"
    partial = m.Result(ok=True, bytes=5, first_byte=2.0, last_byte=3.0, i0=0, bins=[5], cpu_s=0.1)
    st = stats_from_result(TransferStats(protocol="t", cc=None, ok=True, start=1.0), partial, 10)
    assert not st.ok and "5 of 10" in st.error and st.duration_s == pytest.approx(2.0)
