"""The emulator on real namespaces, veths and processes: measured values against configured ones."""
from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scipy.stats import binom

from testbed.emulator.control import Emulator, EmuLink
from testbed.emulator.lab import Lab, LabLink, leftovers, sh
from testbed.topology.model import LinkParams

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(1, net=214) as lab:
        yield lab


@pytest.fixture
def link(lab: Lab) -> LabLink:
    return lab.links[0]


@pytest.fixture
def emulate(link: LabLink, tmp_path: Path) -> Iterator:
    """Start an emulator on the lab link (stopping the one started before, so that a measurement
    can be taken again); stopped at the end of the test."""
    started: list[Emulator] = []

    def start(ab: LinkParams, ba: LinkParams | None = None, seed: int = 1) -> Emulator:
        for old in started:
            old.stop()
        emu = Emulator([link.emu_link(ab, ba)], seed=seed, workdir=tmp_path / f"emu{len(started)}")
        started.append(emu)
        emu.start()
        return emu

    yield start
    for emu in started:
        emu.stop()


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def stat(emu: Emulator, direction: str = "ab") -> dict:
    return next(s for s in emu.stats() if s["direction"] == direction)


def assert_rtt(lk: LabLink, emu: Emulator, rtt_ms: float, count: int = 10) -> None:
    """The minimum of `count` pings (the path's floor: scheduling noise only adds) is the
    configured RTT, never less (sends are at most 20 us early) and at most 0.6 ms more (the
    unshaped base RTT through the emulator is ~0.1-0.2 ms)."""
    rtts = lk.ping_rtts(count, 0.02)
    assert len(rtts) >= count - 1, f"{count - len(rtts)} of {count} pings lost"
    late = {(s["link_id"], s["direction"]): round(s["late_p99_ms"], 2) for s in emu.stats()}
    assert rtt_ms - 0.05 <= min(rtts) <= rtt_ms + 0.6, f"RTTs {rtts}; emulator late p99 (ms): {late}"


def test_rtt_matches_twice_the_delay(link: LabLink, emulate, unless_noisy) -> None:
    unless_noisy(lambda: rtt_once(link, emulate))


def rtt_once(link: LabLink, emulate) -> None:
    emu = emulate(LinkParams())
    base = median(link.ping_rtts(20))
    emu.stop()
    emulate(LinkParams(delay_ms=10.0))
    rtts = link.ping_rtts(20)
    assert len(rtts) == 20
    added = median(rtts) - base
    assert added == pytest.approx(20.0, abs=max(0.5, 0.03 * 20.0)), (base, rtts)


def test_tcp_rate_matches_bw(link: LabLink, emulate, unless_noisy) -> None:
    unless_noisy(lambda: tcp_rate_once(link, emulate))


def tcp_rate_once(link: LabLink, emulate) -> None:
    emu = emulate(LinkParams(bw_mbps=50.0, delay_ms=5.0))
    res = link.iperf_tcp(seconds=3, omit=1)
    # the rate counts whole Ethernet frames (as tc does): 1448 payload bytes per 1514-byte frame
    expected = 50.0 * 1448 / 1514
    assert res["mbps"] == pytest.approx(expected, rel=0.05), res
    s = stat(emu)
    assert s["forwarded_pkts"] > 10000 and s["qdelay_p99_ms"] > 0


def test_udp_loss_within_binomial_interval(link: LabLink, emulate) -> None:
    emu = emulate(LinkParams(loss_pct=3.0, delay_ms=1.0))
    n = 4000
    res = link.udp(n, size=200, pps=8000, idle=2.0)  # idle: a loaded machine may pause the path
    lost = n - res["received"]
    lo, hi = binom.interval(0.99, n, 0.03)
    s = stat(emu)
    assert lo <= lost <= hi, s
    # the model's drops are the only ones; a few IP frames that are not ours (the previous
    # test's TCP teardown, seen once: 3 forwarded + 1 dropped) may cross the link meanwhile
    others = s["forwarded_pkts"] + s["dropped_loss"] - n
    assert 0 <= others <= 10, s
    assert lost <= s["dropped_loss"] <= lost + others, s


def test_same_seed_same_dropped_packets(link: LabLink, emulate) -> None:
    def dropped(seed: int) -> set[int]:
        emu = emulate(LinkParams(loss_pct=5.0, loss_burst=3.0), seed=seed)
        res = link.udp(2000, size=200, pps=10000, idle=2.0)
        emu.stop()
        return set(range(2000)) - set(res["seqs"])

    first, again, other = dropped(7), dropped(7), dropped(8)
    assert first and first == again
    assert other != first


def test_queue_overflow_drops_and_rate(link: LabLink, emulate, unless_noisy) -> None:
    unless_noisy(lambda: queue_overflow_once(link, emulate))


def queue_overflow_once(link: LabLink, emulate) -> None:
    emu = emulate(LinkParams(bw_mbps=10.0, queue_pkts=20))
    n = 1650  # 1514-byte frames at 20 Mbit/s for 1 s: twice the link rate
    res = link.udp(n, size=1472, pps=1650)
    s = stat(emu)
    assert s["dropped_queue"] > 0
    assert s["dropped_queue"] + res["received"] == n, s
    arr = res["arrival_s"]
    rate = (len(arr) - 1) * 1514 * 8 / (arr[-1] - arr[0]) / 1e6
    assert rate == pytest.approx(10.0, rel=0.05), s
    # a full 20-frame FIFO at 10 Mbit/s is ~24 ms of queueing
    assert s["qdelay_max_ms"] == pytest.approx(20 * 1514 * 8 / 10e6 * 1e3, rel=0.1)


def test_runtime_change_takes_effect(link: LabLink, emulate, unless_noisy) -> None:
    def change() -> Emulator:
        emu = emulate(LinkParams(delay_ms=2.0))
        before = median(link.ping_rtts(10))
        emu.set_params(0, "ab", LinkParams(delay_ms=22.0))
        after = median(link.ping_rtts(10))
        assert after - before == pytest.approx(20.0, abs=1.0)
        return emu

    emu = unless_noisy(change)
    emu.set_params(0, "ba", LinkParams(delay_ms=2.0, loss_pct=100.0))
    assert link.ping_rtts(5, interval=0.1) == []


def test_link_down_drops_all_then_recovers(link: LabLink, emulate) -> None:
    emu = emulate(LinkParams(delay_ms=1.0))
    assert len(link.ping_rtts(3)) == 3
    emu.set_down(0, True)
    assert link.ping_rtts(5, interval=0.1) == []
    s = stat(emu)
    assert s["dropped_down"] >= 5
    emu.set_down(0, False)
    assert len(link.ping_rtts(3)) == 3


def test_no_leftovers_after_stop(tmp_path: Path) -> None:
    with Lab(1, net=215) as lab2:
        names = lab2.names()
        emu = Emulator([lab2.links[0].emu_link(LinkParams(delay_ms=1.0))], seed=1, workdir=tmp_path)
        emu.start()
        pids = emu.pids()
        assert pids and emu.cpu_seconds() >= 0
        emu.stop()
        emu.stop()  # idempotent
        assert all(not Path(f"/proc/{p}").exists() for p in pids)
        assert not list(tmp_path.glob("*.sock"))
    assert leftovers(names) == []


def test_emulator_exits_when_owner_dies(link: LabLink, tmp_path: Path) -> None:
    """An owner killed with SIGKILL leaves no emulator process behind."""
    script = textwrap.dedent(f"""
        import sys, time
        from testbed.emulator.control import Emulator, EmuLink
        from testbed.topology.model import LinkParams
        emu = Emulator([EmuLink(0, {link.if_a!r}, {link.if_b!r}, LinkParams(), LinkParams())],
                       seed=1, workdir={str(tmp_path)!r})
        emu.start()
        print(emu.pids()[0], flush=True)
        time.sleep(60)
    """)
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(owner.stdout.readline())
        assert Path(f"/proc/{pid}").exists()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 3
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()


def test_jitter_std_on_the_wire(link: LabLink, emulate, unless_noisy) -> None:
    unless_noisy(lambda: jitter_once(link, emulate))


def jitter_once(link: LabLink, emulate) -> None:
    emulate(LinkParams(delay_ms=10.0, jitter_ms=2.0, reorder=True))
    owd = link.udp(1500, size=64, pps=500)["owd_ms"]
    assert len(owd) == 1500
    # robust estimates (median, IQR / 1.349 for a normal law): a loaded machine adds rare
    # scheduling outliers to the probes that are not the emulator's jitter
    q1, med, q3 = statistics.quantiles(owd, n=4)
    assert med == pytest.approx(10.0, abs=0.5)
    assert (q3 - q1) / 1.349 == pytest.approx(2.0, rel=0.2)


def test_workers_stop_together_and_leave_nothing(tmp_path: Path, unless_noisy) -> None:
    """stop() asks every worker at once and reaps them all; their CPU time stays readable."""
    with Lab(3, net=222) as lab3:
        links = [lk.emu_link(LinkParams(delay_ms=1.0)) for lk in lab3.links]
        emu = Emulator(links, seed=1, workdir=tmp_path, workers=3)
        emu.start()
        pids = emu.pids()
        assert len(pids) == 3
        for lk in lab3.links:
            unless_noisy(lambda lk=lk: assert_rtt(lk, emu, 2.0, count=5))
        emu.stop()
        emu.stop()  # idempotent
        assert all(not Path(f"/proc/{p}").exists() for p in pids)
        assert emu.pids() == [] and not list(tmp_path.glob("*.sock"))
        assert all(w.proc.returncode == 0 for w in emu._workers)  # exited by themselves
        assert emu.cpu_seconds() > 0


def test_two_workers_serve_their_links(tmp_path: Path, unless_noisy) -> None:
    with Lab(2, net=219) as lab2:
        links = [lk.emu_link(LinkParams(delay_ms=5.0 * (i + 1))) for i, lk in enumerate(lab2.links)]
        with Emulator(links, seed=1, workdir=tmp_path, workers=2) as emu:
            assert len(emu.pids()) == 2
            for i, lk in enumerate(lab2.links):
                unless_noisy(lambda i=i, lk=lk: assert_rtt(lk, emu, 10.0 * (i + 1)))
            emu.set_params(1, "ab", LinkParams(delay_ms=0.0))
            unless_noisy(lambda: assert_rtt(lab2.links[1], emu, 10.0))
            assert {(s["link_id"], s["direction"]) for s in emu.stats()} == {
                (0, "ab"), (0, "ba"), (1, "ab"), (1, "ba")}


def test_missing_interface_is_a_one_line_error(tmp_path: Path) -> None:
    from testbed.errors import TestbedError

    emu = Emulator([EmuLink(0, "tbnosuch0a", "tbnosuch0b", LinkParams(), LinkParams())], seed=1,
                   workdir=tmp_path)  # fmt: skip
    with pytest.raises(TestbedError, match="tbnosuch0a"):
        emu.start()
    assert emu.pids() == []


def test_interface_down_up_and_removal_do_not_spin(tmp_path: Path) -> None:
    """A root end going down (or away) must neither kill the emulator nor make it busy-loop."""
    with Lab(1, net=223) as lab2:
        lk = lab2.links[0]
        with Emulator([lk.emu_link(LinkParams(delay_ms=1.0))], seed=1, workdir=tmp_path) as emu:
            assert len(lk.ping_rtts(3)) == 3
            sh("ip", "link", "set", lk.if_a, "down")
            time.sleep(0.3)
            sh("ip", "link", "set", lk.if_a, "up")
            assert len(lk.ping_rtts(3, interval=0.2)) >= 2  # the first may go while it comes up
            sh("ip", "link", "del", lk.if_b)
            cpu0 = emu.cpu_seconds()
            time.sleep(1.0)
            assert emu.cpu_seconds() - cpu0 < 0.2  # idle, not spinning on a dead socket
            assert len(emu.pids()) == 1


def test_traffic_towards_a_removed_interface_is_dropped_without_spinning(tmp_path: Path) -> None:
    with Lab(1, net=226) as lab2:
        lk = lab2.links[0]
        with Emulator([lk.emu_link(LinkParams())], seed=1, workdir=tmp_path) as emu:
            sh("ip", "link", "del", lk.if_b)
            res = lk.udp(3000, size=1000, pps=3000, idle=0.2, timeout=2.0)  # x still sends towards y
            assert res["received"] == 0
            cpu0 = emu.cpu_seconds()
            time.sleep(0.5)
            assert emu.cpu_seconds() - cpu0 < 0.1
            s = stat(emu)
            assert s["forwarded_pkts"] == 3000 and s["tx_errors"] == 3000


def test_node_side_checksum_offload_breaks_frames_and_is_reported(tmp_path: Path) -> None:
    """Why NODE_SIDE_ETHTOOL has `tx off`: with it on, UDP arrives with bad checksums."""
    with Lab(1, net=229) as lab2:
        lk = lab2.links[0]
        sh(*lk.in_x("ethtool", "-K", "eth0", "tx", "on"))
        with Emulator([lk.emu_link(LinkParams())], seed=1, workdir=tmp_path) as emu:
            res = lk.udp(50, size=100, pps=500, idle=0.5, timeout=3.0)
            # a datagram whose header and data (send time included) sum to 0 in ones' complement
            # carries a valid checksum by chance (1 in 65535; CI saw one of 50 arrive once)
            assert res["received"] <= 1
            assert stat(emu)["csum_partial"] == 50
        assert "tx off" in (tmp_path / "emulator-0.log").read_text()


def test_busy_rounds_keep_the_delay_and_batch_the_work(link: LabLink, tmp_path: Path, unless_noisy) -> None:
    """Under load the loop works in rounds (engine.ROUND_S): probes crossing a busy link still see
    the configured delay (never less, at most about a round more), and one round handles many
    frames instead of one wake-up per frame."""
    unless_noisy(lambda: busy_rounds_once(link, tmp_path))


def busy_rounds_once(link: LabLink, tmp_path: Path) -> None:
    delay = 10.0
    with Emulator([link.emu_link(LinkParams(delay_ms=delay))], seed=1, workdir=tmp_path) as emu:
        srv = subprocess.Popen(link.in_y("iperf3", "-s", "-1", "-p", "5207"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(0.3)
        bg = subprocess.Popen(link.in_x("iperf3", "-c", link.ip_y, "-p", "5207", "-u", "-b", "200M",
                                        "-l", "1400", "-t", "4"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            time.sleep(0.5)
            before, frames_before = emu.wakeups(), stat(emu)["forwarded_pkts"]
            probes = link.udp(1000, size=64, pps=500, port=6007)
            rounds, frames = emu.wakeups() - before, stat(emu)["forwarded_pkts"] - frames_before
        finally:
            for p in (bg, srv):
                p.kill()
                p.wait()
    owd = sorted(probes["kernel_owd_ms"])
    assert len(owd) > 900
    if owd[0] < delay - 0.1:  # pytest.fail, not assert: never measured again (steal only delays)
        pytest.fail(f"a probe crossed faster than the configured {delay} ms: {owd[0]:.3f}")
    assert median(owd) <= delay + emu.round_us / 1e3 + 0.5, f"median one-way {median(owd):.3f} ms"
    assert frames > 5000, f"background load too small to test: {frames} frames"
    assert frames / rounds >= 2, f"{frames} frames in {rounds} rounds: not batched"
