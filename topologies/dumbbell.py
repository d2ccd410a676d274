"""Dumbbell: n sender/receiver pairs across one shared bottleneck link named "bottleneck".

Senders h1, h3, ..., h(2n-1) hang off router r1, receivers h2, h4, ..., h2n off router r2; pair k
is h(2k-1) -> h(2k). Access links have no delay and are unshaped unless `access_bw_mbps` is set.
The middle link r1-r2 is named "bottleneck" (override it as "bottleneck.bw_mbps" etc.).
"""

from __future__ import annotations

from typing import Any

from testbed.errors import SpecError

PARAMS: dict[str, Any] = {
    "n": 2,  # number of sender/receiver pairs
    "bw_mbps": 100.0,  # bottleneck rate
    "delay_ms": 10.0,  # bottleneck one-way delay (per direction)
    "loss_pct": 0.0,  # bottleneck random loss
    "access_bw_mbps": None,  # access link rate (None: unshaped)
}
SOURCE = "topologies/dumbbell.py"


def build(
    n: int = 2,
    bw_mbps: float = 100.0,
    delay_ms: float = 10.0,
    loss_pct: float = 0.0,
    access_bw_mbps: float | None = None,
) -> dict:
    if not 1 <= n <= 100:
        raise SpecError(SOURCE, "params.n", f"must be between 1 and 100, got {n}")
    nodes: dict[str, dict] = {"r1": {"kind": "router"}, "r2": {"kind": "router"}}
    links: list[dict] = [
        {
            "a": "r1",
            "b": "r2",
            "name": "bottleneck",
            "bw_mbps": bw_mbps,
            "delay_ms": delay_ms,
            "loss_pct": loss_pct,
        },
    ]
    for k in range(1, n + 1):
        snd, rcv = f"h{2 * k - 1}", f"h{2 * k}"
        nodes[snd] = {"kind": "host"}
        nodes[rcv] = {"kind": "host"}
        links.append({"a": snd, "b": "r1", "bw_mbps": access_bw_mbps})
        links.append({"a": "r2", "b": rcv, "bw_mbps": access_bw_mbps})
    return {
        "name": "dumbbell",
        "description": f"{n} sender/receiver pairs (h1->h2, ...) across one bottleneck link r1-r2",
        "nodes": nodes,
        "links": links,
        "routing": "shortest",
    }
