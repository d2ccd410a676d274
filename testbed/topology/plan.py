"""Addressing and routing: TopologySpec -> NetworkPlan. Pure (networkx), deterministic.

Addressing
  * Interfaces are "<node>-eth<i>", numbered in link order.
  * A link between two IP nodes (hosts, hubs, routers) is a /30 from 10.0.0.0/16: `a` gets .1,
    `b` gets .2.
  * Each connected group of switches is one L2 segment with one /24 from 10.1.0.0/16; the IP
    nodes attached to it get .1, .2, ... in link order; switch ports get no address.
  * MACs are 02:00:00:xx:xx:xx, numbered in link order.

Routing (static, destination-based)
  * Every IP node gets a route to every subnet it is not attached to. Endpoints (hosts, hubs)
    whose routes all point to one gateway get a single default route instead.
  * Next hops come from a shortest-path tree towards the subnet's owner (the first endpoint
    attached to it, else its first node), computed by Dijkstra on the reversed graph with the
    configured one-way delay of each direction plus EPS_MS per hop. Hosts and hubs never transit.
  * Policy "operator" (default): for a destination of operator B an edge u->v is allowed when
    op(u) == op(v), or op(v) == B (entering B), or v is neutral (operator None) and u is not in B.
    So intra-operator traffic stays inside its operator, and traffic between operators crosses
    only at interconnection links or neutral exchange points. Nodes that no allowed path joins
    to a destination fall back to the plain shortest path (recorded in `plan.warnings`).
    Policy "shortest": all edges allowed.
  * Pinned routes (`routes:` in the spec) add /32 host routes for the destination's addresses
    at every IP node along the pinned path.
  * `plan.paths` holds, for every ordered pair of endpoints, the path packets really take:
    found by simulating longest-prefix-match forwarding on the installed routes.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx

from ..errors import SpecError
from .model import Interface, NetworkPlan, Route, TopologySpec

P2P_POOL = ipaddress.ip_network("10.0.0.0/16")
SEGMENT_POOL = ipaddress.ip_network("10.1.0.0/16")
EPS_MS = 1e-3  # per-hop tie-breaker: among equal delays prefer fewer hops
DEFAULT_ROUTE = "0.0.0.0/0"


@dataclass
class Subnet:
    network: ipaddress.IPv4Network
    link_index: int | None = None  # point-to-point link
    segment: int | None = None  # L2 segment (switch group)
    members: list[Interface] = field(default_factory=list)  # addressed interfaces

    @property
    def nodes(self) -> list[str]:
        out: list[str] = []
        for intf in self.members:
            if intf.node not in out:
                out.append(intf.node)
        return out


def _mac(i: int) -> str:
    return f"02:00:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"


def _address(spec: TopologySpec) -> tuple[dict[str, list[Interface]], list[Subnet], dict[str, int]]:
    nodes = spec.nodes
    is_switch = {n: s.kind == "switch" for n, s in nodes.items()}
    interfaces: dict[str, list[Interface]] = {n: [] for n in nodes}
    # switch groups = L2 segments
    sw = nx.Graph()
    sw.add_nodes_from(n for n in nodes if is_switch[n])
    sw.add_edges_from((lk.a, lk.b) for lk in spec.links if is_switch[lk.a] and is_switch[lk.b])
    segment_of: dict[str, int] = {}
    order = {n: i for i, n in enumerate(nodes)}
    for i, comp in enumerate(sorted(nx.connected_components(sw), key=lambda c: min(order[n] for n in c))):
        for n in comp:
            segment_of[n] = i
    p2p = P2P_POOL.subnets(new_prefix=30)
    seg_pool = list(SEGMENT_POOL.subnets(new_prefix=24))
    subnets: list[Subnet] = []
    seg_subnet: dict[int, Subnet] = {}
    mac_counter = 0
    for li, link in enumerate(spec.links):
        ends = []
        for node, peer in ((link.a, link.b), (link.b, link.a)):
            mac_counter += 1
            intf = Interface(
                node=node,
                name=f"{node}-eth{len(interfaces[node])}",
                link_index=li,
                peer=peer,
                mac=_mac(mac_counter),
            )
            interfaces[node].append(intf)
            ends.append(intf)
        a_sw, b_sw = is_switch[link.a], is_switch[link.b]
        if not a_sw and not b_sw:
            try:
                net = next(p2p)
            except StopIteration:
                raise SpecError(
                    spec.source, "links", f"too many point-to-point links (pool {P2P_POOL})"
                ) from None
            hosts = list(net.hosts())
            sub = Subnet(network=net, link_index=li)
            for intf, ip in zip(ends, hosts, strict=False):
                intf.ip, intf.prefixlen = str(ip), net.prefixlen
                sub.members.append(intf)
            subnets.append(sub)
        elif a_sw != b_sw:
            intf = ends[1] if a_sw else ends[0]
            seg = segment_of[link.a if a_sw else link.b]
            sub = seg_subnet.get(seg)
            if sub is None:
                if len(seg_subnet) >= len(seg_pool):
                    raise SpecError(spec.source, "nodes", f"too many switch segments (pool {SEGMENT_POOL})")
                sub = seg_subnet[seg] = Subnet(network=seg_pool[len(seg_subnet)], segment=seg)
                subnets.append(sub)
            hosts = sub.network.num_addresses - 2
            if len(sub.members) >= hosts:
                raise SpecError(spec.source, link.label, f"too many nodes on one switch segment (> {hosts})")
            intf.ip = str(sub.network.network_address + len(sub.members) + 1)
            intf.prefixlen = sub.network.prefixlen
            sub.members.append(intf)
    return interfaces, subnets, segment_of


class _Router:
    """Shortest-path trees towards a destination node under the routing policy."""

    def __init__(self, spec: TopologySpec):
        self.spec = spec
        self.op = {n: s.operator for n, s in spec.nodes.items()}
        self.endpoint = {n: s.is_endpoint for n, s in spec.nodes.items()}
        self.adj: dict[str, list[tuple[str, float]]] = {n: [] for n in spec.nodes}  # y -> [(x, w(x->y))]
        for link in spec.links:
            self.adj[link.b].append((link.a, link.ab.delay_ms + EPS_MS))
            self.adj[link.a].append((link.b, link.ba.delay_ms + EPS_MS))
        self._cache: dict[tuple[str, str], tuple[dict, dict]] = {}

    def allowed_fn(self, dst: str, mode: str) -> Callable[[str, str], bool]:
        if mode != "operator" or self.spec.routing != "operator":
            return lambda u, v: True
        op, dst_op = self.op, self.op[dst]

        def allowed(u: str, v: str) -> bool:
            ou, ov = op[u], op[v]
            return ou == ov or ov == dst_op or (ov is None and ou != dst_op)

        return allowed

    def tree(self, dst: str, mode: str) -> tuple[dict[str, float], dict[str, str]]:
        """dist[x] and parent[x] (next node from x towards dst). mode: operator|plain|transit."""
        key = (dst, mode)
        if key in self._cache:
            return self._cache[key]
        allowed = self.allowed_fn(dst, mode)
        dist: dict[str, float] = {dst: 0.0}
        parent: dict[str, str] = {}
        heap = [(0.0, 0, dst)]
        counter = 1
        done: set[str] = set()
        while heap:
            d, _, y = heapq.heappop(heap)
            if y in done:
                continue
            done.add(y)
            if y != dst and self.endpoint[y] and mode != "transit":
                continue  # hosts and hubs do not forward
            for x, w in self.adj[y]:
                if x in done or not allowed(x, y):
                    continue
                nd = d + w
                if nd < dist.get(x, float("inf")) - 1e-12:
                    dist[x] = nd
                    parent[x] = y
                    heapq.heappush(heap, (nd, counter, x))
                    counter += 1
        self._cache[key] = (dist, parent)
        return dist, parent


def build_plan(spec: TopologySpec) -> NetworkPlan:
    """Addresses, static routes and the resulting endpoint paths for `spec`."""
    interfaces, subnets, segment_of = _address(spec)
    nodes = spec.nodes
    ip_nodes = [n for n, s in nodes.items() if s.kind != "switch"]
    router = _Router(spec)
    warnings: list[str] = []

    def iface_toward(x: str, nxt: str) -> Interface:
        """x's interface on the link to its neighbour nxt."""
        for intf in interfaces[x]:
            if intf.peer == nxt:
                return intf
        raise AssertionError(f"{x} has no link to {nxt}")

    def addr_on(y: str, link_index: int, via_switch: str | None) -> Interface:
        """y's addressed interface on link `link_index` or, via a switch, on that switch's segment."""
        if via_switch is None:
            return next(i for i in interfaces[y] if i.link_index == link_index)
        seg = segment_of[via_switch]
        return next(i for i in interfaces[y] if i.ip and segment_of.get(i.peer) == seg)

    def first_hop(x: str, parent: dict[str, str]) -> tuple[str, Route | None, str]:
        """Follow the tree from x to the next IP node y; return (y, route template, first node)."""
        nxt = parent[x]
        y = nxt
        while nodes[y].kind == "switch":
            y = parent[y]
        out = iface_toward(x, nxt)
        via_intf = addr_on(y, out.link_index, nxt if nodes[nxt].kind == "switch" else None)
        return y, Route(dst="", via=via_intf.ip, dev=out.name), nxt

    routes: dict[str, list[Route]] = {n: [] for n in ip_nodes}
    fallback: dict[str, set[str]] = {}
    for sub in subnets:
        attached = sub.nodes
        owner = next((n for n in attached if nodes[n].is_endpoint), attached[0])
        _dist, parent = router.tree(owner, "operator")
        for x in ip_nodes:
            if x in attached:
                continue
            tree_parent = parent
            if x not in parent:
                plain = router.tree(owner, "plain")[1]
                tree_parent = plain if x in plain else router.tree(owner, "transit")[1]
                fallback.setdefault(owner, set()).add(x)
                # a fallback hop may lead into nodes that are in neither tree: merge the trees
                tree_parent = {**tree_parent, **parent}
            _, tmpl, _ = first_hop(x, tree_parent)
            routes[x].append(Route(dst=str(sub.network), via=tmpl.via, dev=tmpl.dev))
    for owner, xs in sorted(fallback.items()):
        warnings.append(
            f"routing: no {spec.routing}-policy path to {owner} from {', '.join(sorted(xs))}; "
            "using plain shortest path"
        )
    # pinned routes: /32 for each address of dst at each IP node along the path
    pinned: dict[str, list[Route]] = {n: [] for n in ip_nodes}
    for pin in spec.routes:
        dst_ips = [i.ip for i in interfaces[pin.dst] if i.ip]
        path = pin.path
        for i, x in enumerate(path[:-1]):
            if nodes[x].kind == "switch":
                continue
            j = i + 1
            while nodes[path[j]].kind == "switch":
                j += 1
            y = path[j]
            out = iface_toward(x, path[i + 1])
            via = addr_on(y, out.link_index, path[i + 1] if nodes[path[i + 1]].kind == "switch" else None)
            for ip in dst_ips:
                r = Route(dst=f"{ip}/32", via=via.ip, dev=out.name)
                if not any(p.dst == r.dst for p in pinned[x]):
                    pinned[x].append(r)
    # endpoints with a single gateway: one default route
    final: dict[str, list[Route]] = {}
    for x in ip_nodes:
        rs = routes[x]
        if nodes[x].is_endpoint and rs and len({(r.via, r.dev) for r in rs}) == 1:
            rs = [Route(dst=DEFAULT_ROUTE, via=rs[0].via, dev=rs[0].dev)]
        final[x] = rs + pinned[x]
    plan = NetworkPlan(spec=spec, interfaces=interfaces, routes=final, paths={}, warnings=warnings)
    plan.paths = _simulate_paths(plan, segment_of)
    for pin in spec.routes:
        if (
            nodes[pin.src].is_endpoint
            and nodes[pin.dst].is_endpoint
            and plan.paths[(pin.src, pin.dst)] != pin.path
        ):
            raise SpecError(
                spec.source,
                f"routes ({pin.src}->{pin.dst})",
                f"pinned path {pin.path} is overridden by another pin "
                f"(forwarding gives {plan.paths[(pin.src, pin.dst)]})",
                pin.line,
            )
    return plan


def _simulate_paths(plan: NetworkPlan, segment_of: dict[str, int]) -> dict[tuple[str, str], list[str]]:
    """Follow longest-prefix-match forwarding hop by hop, for every ordered pair of endpoints."""
    spec = plan.spec
    owner_of_ip: dict[str, str] = {}
    nets: dict[str, list[tuple[ipaddress.IPv4Network, Interface]]] = {}
    for node, intfs in plan.interfaces.items():
        for intf in intfs:
            if intf.ip:
                owner_of_ip[intf.ip] = node
                nets.setdefault(node, []).append((ipaddress.ip_network(intf.cidr, strict=False), intf))
    parsed = {n: [(ipaddress.ip_network(r.dst), r) for r in rs] for n, rs in plan.routes.items()}
    by_name = {i.name: i for intfs in plan.interfaces.values() for i in intfs}
    sw = nx.Graph()
    sw.add_edges_from(
        (lk.a, lk.b)
        for lk in spec.links
        if spec.nodes[lk.a].kind == "switch" and spec.nodes[lk.b].kind == "switch"
    )

    def l2(x_intf: Interface, y: str) -> list[str]:
        """Nodes after x up to y, leaving x by x_intf."""
        peer = x_intf.peer
        if spec.nodes[peer].kind != "switch":
            return [peer]
        seg = segment_of[peer]
        y_intf = next(i for i in plan.interfaces[y] if i.ip and segment_of.get(i.peer) == seg)
        chain = [peer] if peer == y_intf.peer else nx.shortest_path(sw, peer, y_intf.peer)
        return [*chain, y]

    paths: dict[tuple[str, str], list[str]] = {}
    endpoints = spec.endpoints()
    for dst in endpoints:
        dst_ip = ipaddress.ip_address(plan.ip(dst))
        tail: dict[str, list[str]] = {dst: [dst]}
        step: dict[str, list[str]] = {}
        for src in endpoints:
            if src == dst:
                continue
            # forwarding is destination-based: the path from x is x's hop + the path from the next node
            chain, x = [], src
            while x not in tail:
                chain.append(x)
                hop = None
                for net, intf in nets.get(x, []):
                    if dst_ip in net:
                        hop = (intf, owner_of_ip[str(dst_ip)])
                        break
                if hop is None:
                    best = None
                    for net, r in parsed.get(x, []):
                        if dst_ip in net and (best is None or net.prefixlen > best[0].prefixlen):
                            best = (net, r)
                    if best is None:
                        raise AssertionError(f"no route at {x} to {dst} ({dst_ip})")
                    hop = (by_name[best[1].dev], owner_of_ip[best[1].via])
                step[x] = l2(*hop)
                x = step[x][-1]
                if x in chain:
                    raise AssertionError(f"routing loop towards {dst} at {x}")
            for x in reversed(chain):
                nxt = step[x]
                tail[x] = [x, *nxt[:-1], *tail[nxt[-1]]]
            paths[(src, dst)] = tail[src]
    return {(s, d): paths[(s, d)] for s in endpoints for d in endpoints if s != d}
