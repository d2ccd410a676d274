"""Pure tests of the per-direction scheduler (no sockets)."""
from __future__ import annotations

import statistics

import pytest
from scipy.stats import binom

from testbed.emulator.control import direction_seed
from testbed.emulator.model import DirectionModel, QDelayHistogram, is_ip_frame
from testbed.topology.model import LinkParams


def run(model: DirectionModel, n: int, size: int = 1000, gap: float = 0.001) -> list[float | None]:
    return [model.offer(size, i * gap) for i in range(n)]


def test_rate_serialisation_timing() -> None:
    m = DirectionModel(LinkParams(bw_mbps=8.0, delay_ms=10.0, queue_pkts=100), rng_seed=1, mtu=1500)
    # 1000 bytes at 8 Mbit/s take 1 ms; a burst of 5 at t=0 leaves at 1, 2, ..., 5 ms
    got = [m.offer(1000, 0.0) for _ in range(5)]
    assert got == pytest.approx([0.011, 0.012, 0.013, 0.014, 0.015])
    # an idle link serialises from the arrival time
    assert m.offer(500, 1.0) == pytest.approx(1.0 + 0.0005 + 0.010)
    s = m.stats()
    assert s["forwarded_pkts"] == 6 and s["forwarded_bytes"] == 5500
    assert s["qdelay_max_ms"] == pytest.approx(4.0)


def test_queue_overflow_counts() -> None:
    m = DirectionModel(LinkParams(bw_mbps=8.0, queue_pkts=10), rng_seed=1)
    out = [m.offer(1000, 0.0) for _ in range(25)]  # a burst: 10 fit, 15 are tail-dropped
    assert sum(t is not None for t in out) == 10
    assert out[10:] == [None] * 15
    assert m.stats()["dropped_queue"] == 15
    # after 5 ms five frames have left: five new ones fit again
    out = [m.offer(1000, 0.0051) for _ in range(8)]
    assert sum(t is not None for t in out) == 5
    assert m.stats()["dropped_queue"] == 18


def test_queue_limit_default_is_bdp() -> None:
    p = LinkParams(bw_mbps=100.0, delay_ms=20.0)  # BDP over 40 ms: 500 kB = 333 packets
    m = DirectionModel(p, rng_seed=1)
    out = [m.offer(1500, 0.0) for _ in range(400)]
    assert sum(t is not None for t in out) == p.queue_limit_pkts(1500) == 333


@pytest.mark.parametrize("loss_pct", [1.0, 5.0, 30.0])
def test_bernoulli_loss_rate(loss_pct: float) -> None:
    n = 20000
    m = DirectionModel(LinkParams(loss_pct=loss_pct), rng_seed=7)
    lost = sum(t is None for t in run(m, n))
    lo, hi = binom.interval(0.99, n, loss_pct / 100)
    assert lo <= lost <= hi
    assert m.stats()["dropped_loss"] == lost


def _bursts(fates: list[float | None]) -> list[int]:
    bursts, cur = [], 0
    for t in fates:
        if t is None:
            cur += 1
        elif cur:
            bursts.append(cur)
            cur = 0
    return bursts


@pytest.mark.parametrize(("loss_pct", "burst"), [(2.0, 4.0), (10.0, 2.0)])
def test_gilbert_mean_loss_and_burst(loss_pct: float, burst: float) -> None:
    n = 200_000
    m = DirectionModel(LinkParams(loss_pct=loss_pct, loss_burst=burst), rng_seed=3)
    fates = run(m, n, gap=1e-6)
    loss = sum(t is None for t in fates) / n
    bursts = _bursts(fates)
    assert loss == pytest.approx(loss_pct / 100, rel=0.1)
    assert statistics.mean(bursts) == pytest.approx(burst, rel=0.1)


def test_gilbert_rejects_impossible_combination() -> None:
    with pytest.raises(ValueError, match="Gilbert"):
        DirectionModel(LinkParams(loss_pct=80.0, loss_burst=2.0), rng_seed=1)


def test_same_seed_same_pattern_other_seed_differs() -> None:
    p = LinkParams(loss_pct=5.0, jitter_ms=2.0, delay_ms=10.0, reorder=True)
    a = run(DirectionModel(p, rng_seed=11), 5000)
    b = run(DirectionModel(p, rng_seed=11), 5000)
    c = run(DirectionModel(p, rng_seed=12), 5000)
    assert a == b
    assert [t is None for t in a] != [t is None for t in c]


def test_direction_seeds_are_stable_and_distinct() -> None:
    seeds = {direction_seed(1, link, d) for link in range(10) for d in ("ab", "ba")}
    assert len(seeds) == 20
    assert direction_seed(1, 3, "ab") == direction_seed(1, 3, "ab")


def test_no_reordering_unless_asked() -> None:
    p = LinkParams(delay_ms=5.0, jitter_ms=3.0)
    fifo = [t for t in run(DirectionModel(p, rng_seed=5), 5000, gap=1e-4) if t is not None]
    assert fifo == sorted(fifo)
    mixed = [t for t in run(DirectionModel(p.replace(reorder=True), rng_seed=5), 5000, gap=1e-4)]
    assert mixed != sorted(mixed)


def test_jitter_std_and_truncation() -> None:
    # packets far apart (1 s) never overtake each other: the delay is the drawn one
    p = LinkParams(delay_ms=40.0, jitter_ms=5.0)
    m = DirectionModel(p, rng_seed=9)
    delays = [(m.offer(100, float(i)) - i) * 1e3 for i in range(5000)]
    assert statistics.mean(delays) == pytest.approx(40.0, abs=0.5)
    assert statistics.pstdev(delays) == pytest.approx(5.0, rel=0.2)
    m = DirectionModel(LinkParams(delay_ms=1.0, jitter_ms=5.0, reorder=True), rng_seed=9)
    assert min(m.offer(100, float(i)) - i for i in range(2000)) == 0.0  # truncated at 0


def test_runtime_update_rate_and_delay() -> None:
    m = DirectionModel(LinkParams(bw_mbps=8.0, delay_ms=10.0, queue_pkts=1000), rng_seed=1)
    assert m.offer(1000, 0.0) == pytest.approx(0.011)
    m.update(LinkParams(bw_mbps=4.0, delay_ms=30.0, queue_pkts=1000))
    # the new frame queues behind the first (left at 1 ms) and takes 2 ms at 4 Mbit/s
    assert m.offer(1000, 0.0) == pytest.approx(0.001 + 0.002 + 0.030)
    m.update(LinkParams(delay_ms=1.0))  # rate limit removed, delay cut: FIFO order holds
    t = m.offer(1000, 0.002)
    assert t == pytest.approx(0.033)


def test_down_drops_everything_and_discard_recounts() -> None:
    m = DirectionModel(LinkParams(delay_ms=1.0), rng_seed=1)
    assert m.offer(100, 0.0) is not None
    m.set_down(True)
    assert all(t is None for t in run(m, 10))
    m.discard(1, 100)
    s = m.stats()
    assert (s["forwarded_pkts"], s["dropped_down"]) == (0, 11)
    m.set_down(False)
    assert m.offer(100, 1.0) == pytest.approx(1.001)


def test_qdelay_histogram_percentiles() -> None:
    h = QDelayHistogram()
    for i in range(1000):
        h.add(i * 1e-5)  # 0 .. 9.99 ms uniformly
    h.add(0.5)
    assert h.percentile(50) == pytest.approx(0.005, abs=2e-5)
    assert h.percentile(99) == pytest.approx(0.0099, abs=3e-5)
    assert h.max_s == 0.5 and h.percentile(100) == pytest.approx(0.5, abs=1e-3)
    assert h.count == 1001


def test_non_ip_frames_skip_the_loss_draw() -> None:
    """ARP and other link-layer frames are never lost and take no draw: the IP frames' loss
    pattern stays the same whatever else crosses the link; jitter has an RNG of its own."""
    p = LinkParams(loss_pct=20.0)
    plain = run(DirectionModel(p, rng_seed=4), 3000)
    m = DirectionModel(p.replace(jitter_ms=1.0), rng_seed=4)
    mixed = []
    for i in range(3000):
        if i % 7 == 0:
            assert m.offer(60, i * 0.001, lossy=False) is not None  # an ARP frame in between
        mixed.append(m.offer(1000, i * 0.001))
    assert [t is None for t in mixed] == [t is None for t in plain]
    assert m.counters.dropped_loss == sum(t is None for t in plain) > 0


def test_is_ip_frame() -> None:
    eth = bytes(12)
    assert is_ip_frame(eth + b"\x08\x00" + bytes(20))
    assert is_ip_frame(eth + b"\x86\xdd" + bytes(40))
    assert is_ip_frame(eth + b"\x81\x00\x00\x05\x08\x00" + bytes(20))  # one VLAN tag
    assert not is_ip_frame(eth + b"\x08\x06" + bytes(28))  # ARP
    assert not is_ip_frame(eth + b"\x88\xcc")  # LLDP
    assert not is_ip_frame(b"\x00" * 13)
