"""Addressing and routing (pure): unique addresses, consistent next hops, the operator policy."""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from testbed.errors import SpecError
from testbed.topology.plan import DEFAULT_ROUTE, build_plan
from testbed.topology.spec import load_topology, topology_from_dict


def spec_of(nodes: dict, links: list, **top):
    return topology_from_dict({"nodes": nodes, "links": links, **top}, "<test>")


def check_next_hops(plan) -> None:
    """Every hop of every endpoint path is what that node's routes (or a connected subnet) say."""
    kinds = {n: s.kind for n, s in plan.spec.nodes.items()}
    ip_owner = {i.ip: n for n, intfs in plan.interfaces.items() for i in intfs if i.ip}
    nets = {
        n: [ipaddress.ip_network(i.cidr, strict=False) for i in intfs if i.ip]
        for n, intfs in plan.interfaces.items()
    }
    rnets = {n: [(ipaddress.ip_network(r.dst), r) for r in rs] for n, rs in plan.routes.items()}
    for (src, dst), path in plan.paths.items():
        assert path[0] == src and path[-1] == dst
        assert len(set(path)) == len(path), f"loop in {path}"
        dst_ip = ipaddress.ip_address(plan.ip(dst))
        ip_hops = [n for n in path if kinds[n] != "switch"]
        for u, v in itertools.pairwise(ip_hops):
            if any(dst_ip in net for net in nets[u]):  # connected
                assert v == dst
                continue
            matches = [(net, r) for net, r in rnets[u] if dst_ip in net]
            assert matches, f"{u} has no route to {dst}"
            best = max(matches, key=lambda m: m[0].prefixlen)[1]
            assert ip_owner[best.via] == v, f"{u} -> {dst}: route via {ip_owner[best.via]}, path says {v}"
            dev = next(i for i in plan.interfaces[u] if i.name == best.dev)
            assert dev.peer == path[path.index(u) + 1]


def test_addresses_unique_and_deterministic():
    spec = load_topology("hubs")
    plan = build_plan(spec)
    ips = [i.ip for intfs in plan.interfaces.values() for i in intfs if i.ip]
    assert len(ips) == len(set(ips)) == 2 * len(spec.links)
    macs = [i.mac for intfs in plan.interfaces.values() for i in intfs]
    assert len(macs) == len(set(macs))
    again = build_plan(load_topology("hubs"))
    assert again.interfaces == plan.interfaces and again.routes == plan.routes and again.paths == plan.paths


def test_point_to_point_subnets_and_interface_names():
    plan = build_plan(load_topology("dumbbell"))
    r1 = plan.interfaces["r1"]
    assert [i.name for i in r1] == ["r1-eth0", "r1-eth1", "r1-eth2"]
    for intfs in plan.interfaces.values():
        for i in intfs:
            assert i.prefixlen == 30 and ipaddress.ip_address(i.ip) in ipaddress.ip_network("10.0.0.0/16")
            peer = next(p for p in plan.interfaces[i.peer] if p.link_index == i.link_index)
            assert ipaddress.ip_network(i.cidr, strict=False) == ipaddress.ip_network(peer.cidr, strict=False)


def test_switch_segments():
    spec = spec_of(
        {
            "h1": {},
            "h2": {},
            "h3": {},
            "h4": {},
            "s1": {"kind": "switch"},
            "s2": {"kind": "switch"},
            "s3": {"kind": "switch"},
            "r1": {"kind": "router"},
        },
        [
            {"a": "h1", "b": "s1"},
            {"a": "s1", "b": "s2"},
            {"a": "h2", "b": "s2"},
            {"a": "s2", "b": "r1"},
            {"a": "r1", "b": "s3"},
            {"a": "s3", "b": "h3"},
            {"a": "s3", "b": "h4"},
        ],
    )
    plan = build_plan(spec)
    for sw in ("s1", "s2", "s3"):
        assert all(i.ip is None for i in plan.interfaces[sw])
    net = {
        n: ipaddress.ip_network(plan.interfaces[n][0].cidr, strict=False) for n in ("h1", "h2", "h3", "h4")
    }
    assert net["h1"] == net["h2"] and net["h3"] == net["h4"] and net["h1"] != net["h3"]
    assert net["h1"].prefixlen == 24 and net["h1"].subnet_of(ipaddress.ip_network("10.1.0.0/16"))
    r1_nets = {ipaddress.ip_network(i.cidr, strict=False) for i in plan.interfaces["r1"]}
    assert r1_nets == {net["h1"], net["h3"]}
    assert plan.path("h1", "h2") == ["h1", "s1", "s2", "h2"]
    assert plan.path("h1", "h4") == ["h1", "s1", "s2", "r1", "s3", "h4"]
    assert plan.routes["h1"] == [plan.routes["h1"][0]] and plan.routes["h1"][0].dst == DEFAULT_ROUTE
    check_next_hops(plan)


DIAMOND_NODES = {
    "h1": {},
    "h2": {},
    "r1": {"kind": "router"},
    "r2": {"kind": "router"},
    "r3": {"kind": "router"},
    "r4": {"kind": "router"},
}


def diamond(top_ms=1, bottom_ms=5, **kw):
    return spec_of(
        DIAMOND_NODES,
        [
            {"a": "h1", "b": "r1"},
            {"a": "r1", "b": "r2", "delay_ms": top_ms},
            {"a": "r2", "b": "r4", "delay_ms": top_ms},
            {"a": "r1", "b": "r3", "delay_ms": bottom_ms},
            {"a": "r3", "b": "r4", "delay_ms": bottom_ms},
            {"a": "r4", "b": "h2"},
        ],
        **kw,
    )


def test_shortest_by_delay_without_operators():
    plan = build_plan(diamond())
    assert plan.path("h1", "h2") == ["h1", "r1", "r2", "r4", "h2"]
    assert plan.path_delay_ms("h1", "h2") == 2
    plan = build_plan(diamond(top_ms=7))
    assert plan.path("h1", "h2") == ["h1", "r1", "r3", "r4", "h2"]
    check_next_hops(plan)


def test_fewer_hops_win_ties():
    spec = spec_of(
        {"h1": {}, "h2": {}, "r1": {"kind": "router"}, "r2": {"kind": "router"}, "r3": {"kind": "router"}},
        [
            {"a": "h1", "b": "r1"},
            {"a": "r1", "b": "r2", "delay_ms": 1},
            {"a": "r2", "b": "r3", "delay_ms": 1},
            {"a": "r1", "b": "r3", "delay_ms": 2},
            {"a": "r3", "b": "h2"},
        ],
    )
    assert build_plan(spec).path("h1", "h2") == ["h1", "r1", "r3", "h2"]


def test_direction_delays_are_used_per_direction():
    spec = spec_of(
        DIAMOND_NODES,
        [
            {"a": "h1", "b": "r1"},
            {"a": "r1", "b": "r2", "ab": {"delay_ms": 1}, "ba": {"delay_ms": 9}},
            {"a": "r2", "b": "r4", "ab": {"delay_ms": 1}, "ba": {"delay_ms": 9}},
            {"a": "r1", "b": "r3", "delay_ms": 3},
            {"a": "r3", "b": "r4", "delay_ms": 3},
            {"a": "r4", "b": "h2"},
        ],
    )
    plan = build_plan(spec)
    assert plan.path("h1", "h2") == ["h1", "r1", "r2", "r4", "h2"]
    assert plan.path("h2", "h1") == ["h2", "r4", "r3", "r1", "h1"]
    assert plan.path_delay_ms("h1", "h2") == 2 and plan.path_delay_ms("h2", "h1") == 6
    check_next_hops(plan)


def test_hosts_do_not_forward():
    # h3 is dual-homed on a shortcut; traffic must not transit it
    spec = spec_of(
        {"h1": {}, "h2": {}, "h3": {}, "r1": {"kind": "router"}, "r2": {"kind": "router"}},
        [
            {"a": "h1", "b": "r1"},
            {"a": "r1", "b": "r2", "delay_ms": 50},
            {"a": "r2", "b": "h2"},
            {"a": "r1", "b": "h3"},
            {"a": "h3", "b": "r2"},
        ],
    )
    plan = build_plan(spec)
    assert plan.path("h1", "h2") == ["h1", "r1", "r2", "h2"]
    assert not plan.warnings


def test_pinned_route_overrides_shortest_path():
    spec = diamond(routes=[{"src": "h1", "dst": "h2", "path": ["h1", "r1", "r3", "r4", "h2"]}])
    plan = build_plan(spec)
    assert plan.path("h1", "h2") == ["h1", "r1", "r3", "r4", "h2"]
    assert plan.path("h2", "h1") == ["h2", "r4", "r2", "r1", "h1"]  # other direction untouched
    h2_ip = plan.ip("h2")
    assert any(r.dst == f"{h2_ip}/32" for r in plan.routes["r1"])
    check_next_hops(plan)


# ---------------------------------------------------------------------------- operator policy

TWO_OPS = {
    "a1": {"kind": "router", "operator": "A"},
    "a2": {"kind": "router", "operator": "A"},
    "b1": {"kind": "router", "operator": "B"},
    "b2": {"kind": "router", "operator": "B"},
    "ha1": {"kind": "hub", "operator": "A"},
    "ha2": {"kind": "hub", "operator": "A"},
    "hb2": {"kind": "hub", "operator": "B"},
}
TWO_OPS_LINKS = [
    {"a": "a1", "b": "a2", "delay_ms": 10},
    {"a": "b1", "b": "b2", "delay_ms": 10},
    {"a": "a1", "b": "b1", "delay_ms": 0.5, "name": "ix1"},  # the only interconnect, in city 1
    {"a": "ha1", "b": "a1", "delay_ms": 0.5},
    {"a": "ha2", "b": "a2", "delay_ms": 0.5},
    {"a": "hb2", "b": "b2", "delay_ms": 0.5},
]


def test_cross_operator_traffic_crosses_at_interconnect_with_detour():
    plan = build_plan(spec_of(TWO_OPS, TWO_OPS_LINKS))
    # ha2 and hb2 are in the same city 2, but their operators only meet in city 1
    assert plan.path("ha2", "hb2") == ["ha2", "a2", "a1", "b1", "b2", "hb2"]
    assert plan.path_delay_ms("ha2", "hb2") == pytest.approx(21.5)
    assert plan.path_delay_ms("ha2", "hb2") > plan.path_delay_ms("ha1", "ha2")
    assert not plan.warnings
    check_next_hops(plan)


def test_intra_operator_traffic_stays_inside_its_operator():
    nodes = {**TWO_OPS, "b3": {"kind": "router", "operator": "B"}}
    # a shortcut through B between a1 and a2 (two interconnects): A's own traffic must not use it
    links = [*TWO_OPS_LINKS, {"a": "b1", "b": "b3", "delay_ms": 1}, {"a": "b3", "b": "a2", "delay_ms": 0.5}]
    plan = build_plan(spec_of(nodes, links))
    assert plan.path("ha1", "ha2") == ["ha1", "a1", "a2", "ha2"]
    assert plan.path_delay_ms("ha1", "ha2") == pytest.approx(11)
    # cross-operator traffic may use the closer interconnect b3-a2
    assert plan.path("hb2", "ha2") == ["hb2", "b2", "b1", "b3", "a2", "ha2"]
    # with routing: shortest, A's traffic takes the shortcut
    plain = build_plan(spec_of(nodes, links, routing="shortest"))
    assert plain.path("ha1", "ha2") == ["ha1", "a1", "b1", "b3", "a2", "ha2"]
    check_next_hops(plan)
    check_next_hops(plain)


def test_no_transit_through_a_third_operator():
    nodes = {**TWO_OPS, "c1": {"kind": "router", "operator": "C"}}
    links = [*TWO_OPS_LINKS, {"a": "a2", "b": "c1", "delay_ms": 0.1}, {"a": "c1", "b": "b2", "delay_ms": 0.1}]
    plan = build_plan(spec_of(nodes, links))
    assert "c1" not in plan.path("ha2", "hb2")
    assert "c1" in build_plan(spec_of(nodes, links, routing="shortest")).path("ha2", "hb2")


def test_neutral_exchange_point():
    nodes = {**TWO_OPS, "ix": {"kind": "router"}}
    links = [
        *TWO_OPS_LINKS,
        {"a": "a2", "b": "ix", "delay_ms": 0.2},
        {"a": "ix", "b": "b2", "delay_ms": 0.2},
        {"a": "ix", "b": "a1", "delay_ms": 0.2},
    ]
    plan = build_plan(spec_of(nodes, links))
    # cross-operator traffic goes through the neutral exchange in city 2
    assert plan.path("ha2", "hb2") == ["ha2", "a2", "ix", "b2", "hb2"]
    assert plan.path("hb2", "ha2") == ["hb2", "b2", "ix", "a2", "ha2"]
    # but A's own traffic does not leave A through it
    assert plan.path("ha1", "ha2") == ["ha1", "a1", "a2", "ha2"]
    check_next_hops(plan)


def test_fallback_when_no_policy_path():
    # A's two routers are joined only through B: no allowed path, fall back and say so
    nodes = {
        "a1": {"kind": "router", "operator": "A"},
        "a2": {"kind": "router", "operator": "A"},
        "b1": {"kind": "router", "operator": "B"},
        "ha1": {"kind": "hub", "operator": "A"},
        "ha2": {"kind": "hub", "operator": "A"},
    }
    links = [{"a": "a1", "b": "b1"}, {"a": "b1", "b": "a2"}, {"a": "ha1", "b": "a1"}, {"a": "ha2", "b": "a2"}]
    plan = build_plan(spec_of(nodes, links))
    assert plan.path("ha1", "ha2") == ["ha1", "a1", "b1", "a2", "ha2"]
    assert plan.warnings and "plain shortest path" in plan.warnings[0]
    check_next_hops(plan)


def test_pinned_path_through_a_host_rejected():
    with pytest.raises(SpecError, match="passes through host h3"):
        spec_of(
            {"h1": {}, "h2": {}, "h3": {}},
            [{"a": "h1", "b": "h3"}, {"a": "h3", "b": "h2"}],
            routes=[{"src": "h1", "dst": "h2", "path": ["h1", "h3", "h2"]}],
        )


def test_all_endpoint_pairs_have_paths_and_routes_are_few():
    spec = load_topology("hubs")
    plan = build_plan(spec)
    eps = spec.endpoints()
    assert set(plan.paths) == {(s, d) for s in eps for d in eps if s != d}
    for ep in eps:
        assert len(plan.routes[ep]) == 1 and plan.routes[ep][0].dst == DEFAULT_ROUTE
    assert max(len(r) for r in plan.routes.values()) <= len(spec.links)
    check_next_hops(plan)
