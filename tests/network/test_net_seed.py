"""Seed reproducibility through a whole network: the same seed loses the same packets.

The links are silent apart from the test's own traffic (permanent neighbour entries from the
plan's MACs, static bridge FDB entries, IPv6 off), so the loss RNG of a direction sees exactly
the test's frames, in the same order, in every run.
"""
from __future__ import annotations

import json
import sys
import time

import pytest
from nethelpers import plan_from

from testbed.emulator.control import child_env
from testbed.network import Network
from testbed.network.net import static_l2
from testbed.topology.plan import build_plan
from testbed.topology.spec import load_topology

COUNT = 2000
PPS = 2000  # 1 s per run; 2000 x 242-byte frames is 3.9 Mbit/s, far below pair's 40 Mbit/s
TOOL = [sys.executable, "-m", "testbed.emulator.udptool"]


def lost_seqs(seed: int) -> tuple[set[int], dict]:
    """Build pair with 5 % loss, send COUNT numbered datagrams h1 -> h2; the lost sequence numbers
    and the link's counters."""
    plan = build_plan(load_topology("pair", overrides={"h1-h2.loss_pct": 5}))
    with Network(plan, backend="userspace", seed=seed) as net:
        ready = net.workdir / "ready"
        rx = net.node_popen("h2", " ".join([*TOOL, "recv", "--count", str(COUNT), "--idle", "1.5",
                                            "--timeout", "20", "--ready-file", str(ready)]),
                            env=child_env())  # fmt: skip
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        send = [*TOOL, "send", "--dst", net.ip("h2"), "--count", str(COUNT), "--size", "200",
                "--pps", str(PPS)]
        tx = net.node_popen("h1", " ".join(send), env=child_env())
        tx.communicate(timeout=30)
        out, err = rx.communicate(timeout=30)
        assert rx.returncode == 0, err
        stats = net.link_stats()[0]
        neigh = net.node_run("h1", "ip neigh show dev h1-eth0").stdout
        mac = net.node_run("h2", "cat /sys/class/net/h2-eth0/address").stdout.strip()
        assert net.applied()["static_l2"]
    assert "PERMANENT" in neigh and net.ip("h2") in neigh, neigh
    assert mac == plan.interfaces["h2"][0].mac and f"lladdr {mac} " in neigh, (mac, neigh)
    return set(range(COUNT)) - set(json.loads(out)["seqs"]), stats


@pytest.mark.network
def test_same_seed_loses_the_same_packets_other_seed_differs():
    first, stats = lost_seqs(seed=11)
    ab = stats["ab"]
    # only the test's datagrams crossed the link: no ARP, no IPv6 (else the draws could shift)
    assert ab["forwarded_pkts"] + ab["dropped_loss"] == COUNT, ab
    assert stats["ba"]["forwarded_pkts"] + stats["ba"]["dropped_loss"] == 0, stats["ba"]
    assert ab["dropped_loss"] == len(first), ab  # the model's drops are the only ones
    assert 60 <= len(first) <= 145, len(first)  # 99.9 % binomial interval of 2000 x 5 %
    again, _ = lost_seqs(seed=11)
    other, _ = lost_seqs(seed=12)
    assert again == first
    assert other != first


def test_static_l2_covers_links_and_segments():
    plan = plan_from({
        "name": "t",
        "nodes": {"s1": {"kind": "switch"}, "s2": {"kind": "switch"}, "h1": {"kind": "host"},
                  "h2": {"kind": "host"}, "h3": {"kind": "host"}, "r1": {"kind": "router"},
                  "h4": {"kind": "host"}},
        "links": [{"a": "h1", "b": "s1"}, {"a": "h2", "b": "s1"}, {"a": "s1", "b": "s2"},
                  {"a": "h3", "b": "s2"}, {"a": "s2", "b": "r1"}, {"a": "r1", "b": "h4"}],
    })  # fmt: skip
    l2 = static_l2(plan)
    intf = {i.name: i for intfs in plan.interfaces.values() for i in intfs}
    # segment s1+s2: every IP node knows the three others on its segment interface
    assert {(ip, dev) for ip, _mac, dev in l2.neighbours["h1"]} == {
        (intf[n].ip, "h1-eth0") for n in ("h2-eth0", "h3-eth0", "r1-eth0")}
    # point-to-point r1 -- h4: each end knows the other's MAC
    assert (intf["h4-eth0"].ip, intf["h4-eth0"].mac, "r1-eth1") in l2.neighbours["r1"]
    assert l2.neighbours["h4"] == [(intf["r1-eth1"].ip, intf["r1-eth1"].mac, "h4-eth0")]
    # FDB: s1 reaches h3 and r1 through its port to s2, s2 reaches h1 and h2 through its port to s1
    s1 = dict(l2.fdb["s1"])
    assert s1[intf["h1-eth0"].mac] == "s1-eth0" and s1[intf["h2-eth0"].mac] == "s1-eth1"
    assert s1[intf["h3-eth0"].mac] == s1[intf["r1-eth0"].mac] == "s1-eth2"
    s2 = dict(l2.fdb["s2"])
    assert s2[intf["h1-eth0"].mac] == s2[intf["h2-eth0"].mac] == "s2-eth0"
    assert len(s1) == len(s2) == 4


@pytest.mark.network
def test_neighbours_and_fdb_installed_on_a_switch_segment():
    plan = plan_from({
        "name": "t-l2",
        "nodes": {"s1": {"kind": "switch"}, "h1": {"kind": "host"}, "h2": {"kind": "host"}},
        "links": [{"a": "h1", "b": "s1", "loss_pct": 1}, {"a": "h2", "b": "s1"}],
    })
    with Network(plan, backend="userspace") as net:
        neigh = net.node_run("h1", "ip neigh show").stdout
        fdb = net.node_run("s1", "bridge fdb show br br0").stdout
        rtt = net.node_run("h1", f"ping -c 2 -i 0.2 -W 1 {net.ip('h2')}", check=False)
    assert f"{net.ip('h2')} dev h1-eth0 lladdr" in neigh and "PERMANENT" in neigh, neigh
    for intf in (plan.interfaces["h1"][0], plan.interfaces["h2"][0]):
        assert any(intf.mac in line and "static" in line for line in fdb.splitlines()), fdb
    assert rtt.returncode == 0, rtt.stdout
