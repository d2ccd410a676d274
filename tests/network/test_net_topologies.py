"""Multi-node networks: every endpoint pair reaches every other, and the routes installed in the
namespaces realise the plan's paths (operator policy: intra-operator paths stay inside)."""
from __future__ import annotations

import re

import pytest
from nethelpers import builtin_plan, nothing_left, plan_from

from testbed.network import Network

pytestmark = pytest.mark.network


def unreachable_pairs(net: Network) -> list[tuple[str, str]]:
    """Pairs of endpoints with no echo reply: one ping per pair, all at once (one script per
    source), and a second, longer try for the pairs whose single ping went unanswered."""
    ends = [n for n, s in net.plan.spec.nodes.items() if s.is_endpoint]
    pending = {src: [d for d in ends if d != src] for src in ends}
    for ping in ("ping -n -c 1 -W 3", "ping -n -c 3 -i 0.2 -w 4"):
        procs = {}
        for src, dsts in pending.items():
            pairs = " ".join(f"{d}={net.ip(d)}" for d in dsts)
            script = f"for p in {pairs}; do ({ping} ${{p#*=}} >/dev/null || echo ${{p%%=*}}) & done; wait"
            procs[src] = net.node_popen(src, script)
        pending = {src: p.communicate()[0].split() for src, p in procs.items()}
        pending = {src: dsts for src, dsts in pending.items() if dsts}
    return [(src, dst) for src, dsts in pending.items() for dst in dsts]


def next_hops(net: Network) -> dict[str, dict[str, str | None]]:
    """node -> destination endpoint -> next-hop address (None: directly connected), via `ip route get`."""
    ends = [n for n, s in net.plan.spec.nodes.items() if s.is_endpoint]
    routers = [n for n, s in net.plan.spec.nodes.items() if s.kind != "switch"]
    batch = "\n".join(f"route get {net.ip(d)}" for d in ends)
    procs = {n: net.node_popen(n, f"ip -o -batch - <<'EOF'\n{batch}\nEOF") for n in routers}
    out: dict[str, dict[str, str | None]] = {}
    for node, proc in procs.items():
        lines = proc.communicate()[0].splitlines()
        assert len(lines) == len(ends), (node, lines)
        out[node] = {}
        for dst, route in zip(ends, lines, strict=True):
            assert route.removeprefix("local ").startswith(net.ip(dst) + " "), route
            via = re.search(r" via (\S+)", route)
            out[node][dst] = via.group(1) if via else None
    return out


def realised_path(net: Network, hops, src: str, dst: str) -> list[str]:
    owner = {i.ip: i.node for intfs in net.plan.interfaces.values() for i in intfs if i.ip}
    path, node = [src], src
    while node != dst and len(path) <= len(net.plan.spec.nodes):
        via = hops[node][dst]
        node = owner[via] if via else dst
        path.append(node)
    return path


def test_hubs_all_pairs_reachable_and_routes_follow_the_plan():
    plan = builtin_plan("hubs")
    with Network(plan, backend="userspace") as net:
        netid = net.netid
        assert unreachable_pairs(net) == []
        hops = next_hops(net)
        nodes = plan.spec.nodes
        checked = 0
        for (src, dst), planned in plan.paths.items():
            path = realised_path(net, hops, src, dst)
            assert path == planned, (src, dst)
            if nodes[src].operator and nodes[src].operator == nodes[dst].operator:
                assert {nodes[n].operator for n in path} == {nodes[src].operator}, path
                checked += 1
        assert checked > 0
    assert nothing_left(netid)


def test_operator_policy_avoids_shorter_foreign_path():
    """a1 -> a2: one hop shorter through operator B's router, but policy keeps it inside A."""
    plan = plan_from({
        "name": "policy",
        "routing": "operator",
        "nodes": {
            "a1": {"kind": "host", "operator": "A"}, "a2": {"kind": "host", "operator": "A"},
            "ra1": {"kind": "router", "operator": "A"}, "ra2": {"kind": "router", "operator": "A"},
            "ra3": {"kind": "router", "operator": "A"}, "ra4": {"kind": "router", "operator": "A"},
            "rb1": {"kind": "router", "operator": "B"}, "b1": {"kind": "host", "operator": "B"},
        },
        "links": [
            {"a": "a1", "b": "ra1"}, {"a": "ra2", "b": "a2"},
            {"a": "ra1", "b": "ra3"}, {"a": "ra3", "b": "ra4"}, {"a": "ra4", "b": "ra2"},
            {"a": "ra1", "b": "rb1"}, {"a": "rb1", "b": "ra2"}, {"a": "rb1", "b": "b1"},
        ],
    })  # fmt: skip
    with Network(plan, backend="userspace") as net:
        assert unreachable_pairs(net) == []
        hops = next_hops(net)
        assert realised_path(net, hops, "a1", "a2") == ["a1", "ra1", "ra3", "ra4", "ra2", "a2"]
        assert "rb1" in realised_path(net, hops, "a1", "b1")
        ttl = net.node_run("a1", f"ping -n -c 1 {net.ip('a2')}").stdout
        assert "ttl=60" in ttl  # four routers: 64 - 4


def test_dumbbell_with_switch_reachable():
    plan = builtin_plan("dumbbell")
    with Network(plan, backend="userspace") as net:
        assert unreachable_pairs(net) == []
    lan = plan_from({
        "name": "lan",
        "nodes": {"s1": {"kind": "switch"}, "r1": {"kind": "router"},
                  **{f"h{i}": {"kind": "host"} for i in range(1, 4)}, "zjk-ct": {"kind": "hub"}},
        "links": [{"a": "r1", "b": "s1"}, {"a": "s1", "b": "h1"}, {"a": "s1", "b": "h2"},
                  {"a": "r1", "b": "h3", "delay_ms": 1}, {"a": "r1", "b": "zjk-ct"}],
    })  # fmt: skip
    with Network(lan, backend="userspace") as net:
        assert unreachable_pairs(net) == []
        bridge = net.node_run("s1", "ip -o link show master br0").stdout
        assert "s1-eth0" in bridge and "s1-eth2" in bridge
