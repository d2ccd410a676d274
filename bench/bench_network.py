"""Start-up and tear-down time of real networks: the `hubs` built-in and a generated 100-node
topology (3 operators). Target: 100 nodes up in under 20 s on a 2-core machine; tear-down must
leave nothing behind (checked: no record, no node shell, no namespace process, no root veth).

Writes bench/results/network.md.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.network import Network, probe  # noqa: E402
from testbed.network.state import STATE_DIR, all_pids, cmdline, pids_in_netns, root_interfaces  # noqa: E402
from testbed.topology.plan import build_plan  # noqa: E402
from testbed.topology.spec import load_topology, topology_from_dict  # noqa: E402

REPS = 2
OPERATORS = ("ct", "cm", "cu")


def generated(n_nodes: int = 100) -> dict:
    """3 operator backbones (rings of routers with a chord), hubs hanging off them, and one
    interconnect between each pair of operators: n_nodes nodes in all."""
    routers_per_op = 10
    n_hubs = n_nodes - routers_per_op * len(OPERATORS)
    nodes, links = {}, []
    for op in OPERATORS:
        ring = [f"{op}-r{i}" for i in range(routers_per_op)]
        for r in ring:
            nodes[r] = {"kind": "router", "operator": op}
        for i, r in enumerate(ring):
            links.append({"a": r, "b": ring[(i + 1) % len(ring)], "delay_ms": 2 + i % 5, "bw_mbps": 400})
        links.append({"a": ring[0], "b": ring[len(ring) // 2], "delay_ms": 6, "bw_mbps": 400})
    for i in range(n_hubs):
        op = OPERATORS[i % len(OPERATORS)]
        hub = f"{op}-hub{i}"
        nodes[hub] = {"kind": "hub", "operator": op}
        links.append({"a": hub, "b": f"{op}-r{(i // len(OPERATORS)) % routers_per_op}", "delay_ms": 0.5,
                      "bw_mbps": 100})  # fmt: skip
    for x, y in ((0, 1), (1, 2), (0, 2)):
        links.append({"a": f"{OPERATORS[x]}-r3", "b": f"{OPERATORS[y]}-r7", "delay_ms": 1, "bw_mbps": 200})
    return {"name": f"generated-{n_nodes}", "routing": "operator", "nodes": nodes, "links": links}


def leftovers(netid: str, netns: set[int]) -> list[str]:
    out = [n for n in root_interfaces() if n.startswith(f"tb{netid}")]
    out += [f"pid {p}" for p in all_pids() if any(a.startswith(f"testbed:{netid}:") for a in cmdline(p))]
    out += [f"pid {p}" for p in pids_in_netns(netns)]
    out += [f"record {netid}"] if (STATE_DIR / f"{netid}.json").exists() else []
    return out


def measure(plan) -> dict:
    starts, stops, left, phases = [], [], [], []
    emulated = 0
    for _ in range(REPS):
        net = Network(plan)
        t0 = time.monotonic()
        net.start()
        starts.append(time.monotonic() - t0)
        phases.append(dict(net.timings))
        emulated = sum(lk["mode"] != "direct" for lk in net.applied()["links"])
        netid, netns = net.netid, net._record.netns_inodes()
        a, b = plan.spec.endpoints()[0], plan.spec.endpoints()[-1]
        ok = net.node_run(a, f"ping -c 2 -i 0.2 -w 5 {net.ip(b)}", check=False).returncode == 0
        t0 = time.monotonic()
        net.stop()
        stops.append(time.monotonic() - t0)
        left += leftovers(netid, netns)
        if not ok:
            left.append(f"{a} could not ping {b}")
    return {"nodes": len(plan.spec.nodes), "links": len(plan.spec.links), "emulated": emulated,
            "start": starts, "stop": stops, "left": left, "phases": phases}  # fmt: skip


def main() -> int:
    info = probe()
    cases = {
        "hubs": build_plan(load_topology("hubs")),
        "generated 100 nodes": build_plan(topology_from_dict(generated(100), "bench_network.py")),
    }
    rows = []
    for name, plan in cases.items():
        r = measure(plan)
        print(name, r, flush=True)
        rows.append((name, r))
    lines = [
        "# Network start-up and tear-down",
        "",
        f"`python bench/bench_network.py` on {platform.node()} ({platform.release()}, "
        f"{len(os.sched_getaffinity(0))} cores), backend **{info.name}** ({info.reason}); "
        f"{REPS} runs each, times in seconds (median, max; the phase split is of the first run). "
        "Target: 100 nodes up in < 20 s. `links` is the link backend's start (userspace: the "
        "emulator processes preparing their root interfaces and answering).",
        "",
        "| topology | nodes | links | emulated links | start-up (s) | of which nodes / veths / configure / "
        "links (s) | tear-down (s) | left behind |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for name, r in rows:
        start, stop = (f"{statistics.median(r[k]):.1f} (max {max(r[k]):.1f})" for k in ("start", "stop"))
        left = ", ".join(r["left"]) or "nothing"
        size = f"{r['nodes']} | {r['links']} | {r['emulated']}"
        first = r["phases"][0]
        split = " / ".join(f"{first[k]:.1f}" for k in ("nodes_s", "veths_s", "configure_s", "links_s"))
        lines.append(f"| {name} | {size} | {start} | {split} | {stop} | {left} |")
    out = ROOT / "bench" / "results" / "network.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())
    big = dict(rows)["generated 100 nodes"]
    return 0 if max(big["start"]) < 20 and not any(r["left"] for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
