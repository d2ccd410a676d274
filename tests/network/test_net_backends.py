"""Backend choice and the netem backend. The netem tests need a kernel with sch_netem: on this
project's machines (no sch_netem) they skip, and the probe must say so and choose userspace."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from nethelpers import assert_tcp_wire_rate, median, nothing_left, pair_plan

from testbed.cli.netcmds import parse_assignments
from testbed.errors import CapabilityError, TestbedError
from testbed.network import Network, probe
from testbed.network.measure import ping_rtts
from testbed.network.netem import gemodel, netem_args, tc_commands
from testbed.network.state import root_ifname
from testbed.topology.model import LinkParams


def _netem() -> bool:
    return os.geteuid() == 0 and probe().netem


NO_NETEM = "this kernel has no sch_netem (tc: qdisc kind unknown); the netem backend runs where it exists"
needs_netem = pytest.mark.skipif(not _netem(), reason=NO_NETEM)


# --- pure functions (run anywhere) ----------------------------------------------------------


def test_gemodel_matches_mean_loss_and_burst():
    p, r = gemodel(2.0, 4.0)
    assert r == pytest.approx(25.0)
    assert p / (p + r) == pytest.approx(0.02)


def test_tc_commands_shape_rate_queue_delay_and_loss():
    cmds = tc_commands("h1-eth0", LinkParams(bw_mbps=50, delay_ms=10, jitter_ms=2, loss_pct=1,
                                             queue_pkts=30), 1500, seed=7)  # fmt: skip
    assert cmds[0] == "qdisc add dev h1-eth0 root handle 1: htb default 1"
    assert "htb rate 50mbit ceil 50mbit" in cmds[1]
    leaf = cmds[2]
    assert "parent 1:1 handle 10: netem" in leaf
    assert "delay 10ms 2ms distribution normal" in leaf and "rate 50mbit" in leaf  # FIFO kept
    assert "loss random 1%" in leaf and leaf.endswith("seed 7")
    limit = int(leaf.split("limit ")[1].split()[0])
    assert limit >= 30 + 50e6 / 8 * 0.018 / 1500  # queue + packets on the delay line
    assert tc_commands("x", LinkParams(bw_mbps=10), 1500, None)[2].endswith("pfifo limit 64")
    assert tc_commands("x", LinkParams(), 1500, None) == []
    assert "loss gemodel" in " ".join(netem_args(LinkParams(loss_pct=1, loss_burst=3), 1500, None))
    assert "rate" not in netem_args(LinkParams(delay_ms=5, jitter_ms=1, reorder=True), 1500, None)


def test_root_interface_names_fit_and_assignments_parse():
    assert len(root_ifname("abcd", 99999, "a")) <= 15
    with pytest.raises(ValueError):
        root_ifname("abcd", 10**9, "a")
    assert parse_assignments(("a.bw_mbps=20", "x=true", "n=null", "s=ab"), "--set") == {
        "a.bw_mbps": 20, "x": True, "n": None, "s": "ab"}
    with pytest.raises(TestbedError):
        parse_assignments(("novalue",), "--set")


# --- probe and backend choice ----------------------------------------------------------------


@pytest.mark.network
def test_probe_chooses_a_backend_that_works_here():
    info = probe("auto")
    assert info.name == ("netem" if info.netem else "userspace")
    assert info.reason.startswith("auto: ")
    if not info.netem:
        assert "unknown" in info.netem_error or info.netem_error
        with pytest.raises(CapabilityError, match="no sch_netem"):
            probe("netem")
        with pytest.raises(CapabilityError):
            Network(pair_plan(delay_ms=5), backend="netem").start()
    with pytest.raises(TestbedError, match="unknown link backend"):
        probe("tcp")


# --- the netem backend -------------------------------------------------------------------------


def assert_between(value: float, low: float, high: float) -> None:
    assert low <= value <= high, f"{value} not in [{low}, {high}]"


@pytest.mark.network
@needs_netem
def test_netem_pair_delay_rate_loss(unless_noisy):
    with Network(pair_plan(delay_ms=10, ab={"bw_mbps": 50}), backend="netem") as net:
        link = net.applied()["links"][0]
        assert link["mode"] == "netem" and link["root_interfaces"] == []
        unless_noisy(lambda: assert_between(median(ping_rtts(net, "h1", "h2", 30, 0.02)), 19.4, 21.2))
        unless_noisy(lambda: assert_tcp_wire_rate(net, 47.5, 52.5))
        net.set_link("l", "ab", loss_pct=10, bw_mbps=None)
        lost = sum(r is None for r in ping_rtts(net, "h1", "h2", 400, 0.005))
        assert 20 <= lost <= 65, lost
        net.link_down("l")
        assert all(r is None for r in ping_rtts(net, "h1", "h2", 2, 0.2, timeout_s=1))
        net.link_up("l")
        netid = net.netid
    assert nothing_left(netid)


@pytest.mark.network
def test_netem_backend_rate_path_with_htb(monkeypatch, unless_noisy):
    """The netem backend's rate shaping is HTB, which every kernel here has: run that part even
    where sch_netem is missing (impairments would need netem and are refused by the probe)."""
    import testbed.network.net as netmod

    info = probe("auto")
    monkeypatch.setattr(netmod, "probe", lambda _name: replace(info, name="netem", reason="test: HTB only"))
    with Network(pair_plan(ab={"bw_mbps": 40, "queue_pkts": 50}), backend="netem") as net:
        link = net.applied()["links"][0]
        assert link["mode"] == "netem" and link["ab"]["bw_mbps"] == 40 and link["ab"]["queue_pkts"] == 50
        qdiscs = net.node_run("h1", "tc qdisc show dev h1-eth0").stdout
        assert "htb" in qdiscs and "pfifo" in qdiscs and "limit 50p" in qdiscs
        unless_noisy(lambda: assert_tcp_wire_rate(net, 38, 42))
        net.set_link("l", "ab", bw_mbps=10)
        unless_noisy(lambda: assert_tcp_wire_rate(net, 9.5, 10.5))
        assert net.link_stats()[0]["ab"]["sent_packets"] > 1000
        netid = net.netid
    assert nothing_left(netid)


@pytest.mark.network
def test_userspace_node_sides_use_threaded_napi():
    """The node side of each emulated link polls in a NAPI thread (engine.node_side_threaded_argv):
    otherwise the receiving stack runs inside the emulator's sends, on its CPU."""
    with Network(pair_plan(ab={"delay_ms": 1}), backend="userspace") as net:
        assert net.applied()["node_napi"] == "threaded"
        for node, intf in (("h1", "h1-eth0"), ("h2", "h2-eth0")):
            sysfs = "umount -l /sys && mount -t sysfs sysfs /sys"
            script = f"unshare -m sh -c '{sysfs} && cat /sys/class/net/{intf}/threaded'"
            assert net.node_run(node, script).stdout.strip() == "1", intf
        ours = ("napi/h1-eth0", "napi/h2-eth0")
        threads = [p for p in Path("/proc").glob("[0-9]*") if _comm(p).startswith(ours)]
        assert threads, "no NAPI threads for the node sides"
        for p in threads:  # real-time, like the emulator: else they wait behind the machine's other work
            assert os.sched_getscheduler(int(p.name)) == os.SCHED_FIFO, _comm(p)
        assert median([r for r in ping_rtts(net, "h1", "h2", count=10) if r is not None]) >= 1.0  # ab only


def _comm(proc: Path) -> str:
    try:
        return (proc / "comm").read_text().strip()
    except OSError:
        return ""
