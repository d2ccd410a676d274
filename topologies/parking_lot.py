"""Parking lot: a chain of routers r0..rN; a long flow crosses every hop, one cross flow per hop.

Links between routers are named "hop1".."hopN" (hop i joins r(i-1) and ri). The long flow runs
src (at r0) -> dst (at rN); cross flow i runs s<i> (at r(i-1)) -> d<i> (at ri), sharing only hop i
with the long flow. Access links have no delay and are unshaped unless `access_bw_mbps` is set.
"""

from __future__ import annotations

from typing import Any

from testbed.errors import SpecError

PARAMS: dict[str, Any] = {
    "hops": 3,  # number of router-to-router links
    "bw_mbps": 100.0,  # rate of each hop
    "delay_ms": 5.0,  # one-way delay of each hop
    "loss_pct": 0.0,  # random loss of each hop
    "access_bw_mbps": None,  # access link rate (None: unshaped)
}
SOURCE = "topologies/parking_lot.py"


def build(
    hops: int = 3,
    bw_mbps: float = 100.0,
    delay_ms: float = 5.0,
    loss_pct: float = 0.0,
    access_bw_mbps: float | None = None,
) -> dict:
    if not 1 <= hops <= 50:
        raise SpecError(SOURCE, "params.hops", f"must be between 1 and 50, got {hops}")
    nodes: dict[str, dict] = {f"r{i}": {"kind": "router"} for i in range(hops + 1)}
    links: list[dict] = [
        {
            "a": f"r{i - 1}",
            "b": f"r{i}",
            "name": f"hop{i}",
            "bw_mbps": bw_mbps,
            "delay_ms": delay_ms,
            "loss_pct": loss_pct,
        }
        for i in range(1, hops + 1)
    ]
    nodes["src"] = {"kind": "host"}
    nodes["dst"] = {"kind": "host"}
    links.append({"a": "src", "b": "r0", "bw_mbps": access_bw_mbps})
    links.append({"a": f"r{hops}", "b": "dst", "bw_mbps": access_bw_mbps})
    for i in range(1, hops + 1):
        nodes[f"s{i}"] = {"kind": "host"}
        nodes[f"d{i}"] = {"kind": "host"}
        links.append({"a": f"s{i}", "b": f"r{i - 1}", "bw_mbps": access_bw_mbps})
        links.append({"a": f"r{i}", "b": f"d{i}", "bw_mbps": access_bw_mbps})
    return {
        "name": "parking-lot",
        "description": f"{hops}-hop parking lot: long flow src->dst, cross flows s<i>->d<i> over hop<i>",
        "nodes": nodes,
        "links": links,
        "routing": "shortest",
    }
