"""A pair network on the userspace backend: configured delay, rate, loss, runtime changes,
link down/up, and an honest applied(). Measured with ping and iperf3 against stated tolerances."""
from __future__ import annotations

import subprocess

import pytest
from nethelpers import assert_tcp_wire_rate, median, nothing_left, pair_plan

from testbed.errors import CapabilityError, TestbedError
from testbed.network import Network
from testbed.network.measure import ping_rtts

pytestmark = pytest.mark.network

BASE_RTT_ALLOWANCE_MS = 0.6  # unshaped RTT through the emulator is ~0.2 ms


def rtt_ok(measured: float, one_way_ms: float) -> bool:
    """RTT tolerance of the fidelity check: max(0.5 ms, 3 %) around 2 x delay + base RTT."""
    expected = 2 * one_way_ms
    tol = max(0.5, 0.03 * expected)
    return expected - tol <= measured <= expected + tol + BASE_RTT_ALLOWANCE_MS


def assert_rtt(net: Network, one_way_ms: float, count: int = 20) -> None:
    rtts = ping_rtts(net, "h1", "h2", count, 0.02)
    assert sum(r is None for r in rtts) == 0, rtts
    assert rtt_ok(median(rtts), one_way_ms), f"median {median(rtts)} ms of {rtts}"


def assert_tcp_rate(net: Network, mbps: float) -> None:
    assert_tcp_wire_rate(net, mbps * 0.95, mbps * 1.05)


def test_pair_up_ping_rtt_and_nothing_left(unless_noisy):
    with Network(pair_plan(delay_ms=10), backend="userspace") as net:
        netid, netns = net.netid, {n["netns"] for n in net._record.nodes.values()}
        assert net.node("h1").IP() == net.ip("h1") == "10.0.0.1"
        unless_noisy(lambda: assert_rtt(net, 10, count=40))
        link = net.applied()["links"][0]
        assert link["mode"] == "emulator" and link["ab"]["delay_ms"] == 10 and link["ba"]["delay_ms"] == 10
    assert nothing_left(netid, netns)


def test_tcp_rate_within_5_percent(unless_noisy):
    with Network(pair_plan(ab={"bw_mbps": 50}), backend="userspace") as net:
        unless_noisy(lambda: assert_tcp_rate(net, 50))
        assert net.applied()["links"][0]["ba"]["bw_mbps"] is None


def test_set_link_at_run_time_changes_delay_and_rate(unless_noisy):
    with Network(pair_plan(delay_ms=5), backend="userspace") as net:
        unless_noisy(lambda: assert_rtt(net, 5))
        net.set_link("l", delay_ms=30)
        unless_noisy(lambda: assert_rtt(net, 30))
        net.set_link(0, "ab", bw_mbps=20, delay_ms=2)
        net.set_link(0, "ba", delay_ms=2)
        unless_noisy(lambda: assert_tcp_rate(net, 20))
        applied = net.applied()["links"][0]
        assert applied["ab"]["bw_mbps"] == 20 and applied["ab"]["delay_ms"] == 2
        with pytest.raises(TestbedError, match="unknown link field"):
            net.set_link("l", rate=3)
        with pytest.raises(TestbedError, match="no link"):
            net.set_link("nope", delay_ms=1)


@pytest.mark.parametrize("link", [{"delay_ms": 1}, {}], ids=["emulated", "plain-veth"])
def test_link_down_and_up(link):
    with Network(pair_plan(**link), backend="userspace") as net:
        assert ping_rtts(net, "h1", "h2", 2, 0.1)[-1] is not None
        net.link_down("l")
        assert net.applied()["links"][0]["down"]
        assert all(r is None for r in ping_rtts(net, "h1", "h2", 3, 0.2, timeout_s=1))
        net.link_up("l")
        assert any(r is not None for r in ping_rtts(net, "h1", "h2", 3, 0.2))


def test_loss_applied_and_counted():
    with Network(pair_plan(ab={"loss_pct": 10}), backend="userspace", seed=3) as net:
        rtts = ping_rtts(net, "h1", "h2", 400, 0.005)
        lost = sum(r is None for r in rtts)
        assert 20 <= lost <= 65, lost  # 99.9 % binomial interval of 400 x 10 %
        stats = net.link_stats()[0]
        assert stats["ab"]["dropped_loss"] >= lost - 2
        assert stats["ba"]["dropped_loss"] == 0


def test_plain_links_recorded_and_rate_limits_enforced():
    with Network(pair_plan(), backend="userspace") as net:
        link = net.applied()["links"][0]
        assert link["mode"] == "direct" and link["root_interfaces"] == []
        assert link["ab"]["delay_ms"] == 0 and link["ab"]["bw_mbps"] is None
        with pytest.raises(TestbedError, match="plain veth"):
            net.set_link("l", delay_ms=5)
    with pytest.raises(CapabilityError, match="above what the userspace emulator"):
        Network(pair_plan(bw_mbps=5000), backend="userspace").start()
    with Network(pair_plan(bw_mbps=5000, delay_ms=1), backend="userspace", scale_rates=True) as net:
        applied = net.applied()
        assert applied["rate_scale"] == pytest.approx(0.2)
        assert applied["links"][0]["ab"]["bw_mbps"] == pytest.approx(1000)
        assert applied["links"][0]["ab"]["configured_bw_mbps"] == 5000


def test_failed_start_leaves_nothing():
    net = Network(pair_plan(bw_mbps=5000), backend="userspace")
    with pytest.raises(CapabilityError):
        net.start()  # fails after nodes and veths exist
    assert net.netid and nothing_left(net.netid)
    net.stop()  # idempotent


def test_two_networks_at_once():
    with Network(pair_plan(delay_ms=1), backend="userspace") as one, \
         Network(pair_plan(delay_ms=3), backend="userspace") as two:  # fmt: skip
        assert one.netid != two.netid
        assert rtt_ok(median(ping_rtts(one, "h1", "h2", 10, 0.02)), 1)
        assert rtt_ok(median(ping_rtts(two, "h1", "h2", 10, 0.02)), 3)


def test_link_mtu_applied_on_every_hop():
    with Network(pair_plan(mtu=9000, delay_ms=1), backend="userspace") as net:
        assert "mtu 9000" in net.node_run("h1", "ip -o link show dev h1-eth0").stdout
        root = net.applied()["links"][0]["root_interfaces"][0]
        shown = subprocess.run(["ip", "-o", "link", "show", "dev", root], capture_output=True, text=True)
        assert "mtu 9000" in shown.stdout
        # an unfragmented 8972-byte payload (9000-byte packet) crosses the emulated link
        out = net.node_run("h1", f"ping -n -c 2 -M do -s 8972 {net.ip('h2')}", check=False)
        assert " 0% packet loss" in out.stdout, out.stdout + out.stderr
        keys = "net.ipv6.conf.h1-eth0.disable_ipv6 net.ipv4.tcp_no_metrics_save"
        sysctl = net.node_run("h1", f"sysctl -n {keys}")
        assert sysctl.stdout.split() == ["1", "1"]
