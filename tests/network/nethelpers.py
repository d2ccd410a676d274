"""Helpers for the network tests: plans from dicts or built-ins, leftover detection."""
from __future__ import annotations

import statistics
from typing import Any

from testbed.network.measure import iperf3, tcp_wire_rate
from testbed.network.state import STATE_DIR, all_pids, cmdline, pids_in_netns, root_interfaces
from testbed.topology.model import NetworkPlan
from testbed.topology.plan import build_plan
from testbed.topology.spec import load_topology, topology_from_dict


def plan_from(data: dict[str, Any]) -> NetworkPlan:
    return build_plan(topology_from_dict(data, "<test>"))


def builtin_plan(name: str, **overrides: Any) -> NetworkPlan:
    return build_plan(load_topology(name, overrides=overrides or None))


def pair_plan(**link: Any) -> NetworkPlan:
    """h1 -- h2 over one link named "l" with the given fields."""
    return plan_from({
        "name": "test-pair",
        "nodes": {"h1": {"kind": "host"}, "h2": {"kind": "host"}},
        "links": [{"a": "h1", "b": "h2", "name": "l", **link}],
    })


def leftovers(netid: str, netns: set[int] = frozenset()) -> dict[str, list]:
    """Anything of network `netid` that still exists (should be empty after stop/clean)."""
    tag = f"testbed:{netid}:"
    return {
        "interfaces": [n for n in root_interfaces() if n.startswith(f"tb{netid}")],
        "shells": [p for p in all_pids() if any(a.startswith(tag) for a in cmdline(p))],
        "in_namespaces": pids_in_netns(set(netns)),
        "record": [str(p) for p in [STATE_DIR / f"{netid}.json"] if p.exists()],
    }


def nothing_left(netid: str, netns: set[int] = frozenset()) -> bool:
    return not any(leftovers(netid, netns).values())


def median(values: list[float | None]) -> float:
    got = [v for v in values if v is not None]
    assert got, "no replies"
    return statistics.median(got)



def assert_tcp_wire_rate(net: Any, low: float, high: float) -> None:
    """3 s of iperf3 TCP h1 -> h2; its L2 rate (what shapers count) lies in [low, high] Mbit/s."""
    res = iperf3(net, "h1", "h2", seconds=3)
    wire = tcp_wire_rate(res.mbps, 1500)
    assert low <= wire <= high, f"goodput {res.mbps:.1f}, L2 {wire:.1f} Mbit/s, not in [{low}, {high}]"
