"""Data model of a topology spec and of its resolved network plan.

These dataclasses are the contract between the topology layer (which builds them) and the
network, experiment and report layers (which only read them). Units are in field names.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["ab", "ba"]
NODE_KINDS = ("host", "hub", "router", "switch")
# Per-direction link fields, as spelled in specs.
LINK_PARAM_FIELDS = (
    "bw_mbps",
    "delay_ms",
    "jitter_ms",
    "reorder",
    "loss_pct",
    "loss_burst",
    "queue_pkts",
    "queue_bytes",
    "queue_ms",
)
DEFAULT_MTU = 1500


@dataclass(frozen=True)
class LinkParams:
    """Impairments applied to one direction of a link (a -> b or b -> a).

    `delay_ms` is one-way for this direction: a symmetric link with delay_ms=10 has 20 ms RTT.
    """

    bw_mbps: float | None = None  # None: not rate-limited
    delay_ms: float = 0.0  # one-way propagation delay
    jitter_ms: float = 0.0  # standard deviation of the delay variation
    reorder: bool = False  # may jitter reorder packets? (False keeps FIFO order)
    loss_pct: float = 0.0  # mean random loss, percent
    loss_burst: float | None = None  # mean loss-burst length (packets): Gilbert-Elliott; None: Bernoulli
    queue_pkts: int | None = None  # queue limit; at most one of the three queue_* fields is set
    queue_bytes: int | None = None
    queue_ms: float | None = None  # queue limit as time at the link rate

    def replace(self, **changes: Any) -> LinkParams:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def impaired(self) -> bool:
        """True when the direction needs delay, jitter or loss (not only rate)."""
        return bool(self.delay_ms or self.jitter_ms or self.loss_pct)

    def queue_limit_pkts(self, mtu: int = DEFAULT_MTU, rtt_ms: float | None = None) -> int:
        """Queue limit in packets: as configured, else about one bandwidth-delay product.

        One BDP (at least 64 packets) is the classic buffer-sizing rule; `rtt_ms` defaults to
        twice this direction's delay.
        """
        if self.queue_pkts is not None:
            return self.queue_pkts
        if self.queue_bytes is not None:
            return max(1, self.queue_bytes // mtu)
        if self.bw_mbps is None:
            return 1000
        if self.queue_ms is not None:
            return max(1, int(self.bw_mbps * 1e6 / 8 * self.queue_ms / 1e3 / mtu))
        rtt = rtt_ms if rtt_ms is not None else 2 * self.delay_ms
        return max(64, int(self.bw_mbps * 1e6 / 8 * rtt / 1e3 / mtu))


@dataclass
class NodeSpec:
    """A node: `host` (end system), `hub` (a compute-hub site, an end system with site data),
    `router` (forwards IP) or `switch` (an L2 bridge)."""

    name: str
    kind: str = "host"
    operator: str | None = None  # owning operator / administrative domain; None: neutral
    region: str | None = None
    site: str | None = None  # human name of the site (e.g. "Zhangjiakou")
    lat: float | None = None
    lon: float | None = None
    compute: dict[str, Any] = field(default_factory=dict)  # e.g. {"pflops": 10}
    label: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    line: int | None = None  # line in the spec file, for error messages

    @property
    def is_endpoint(self) -> bool:
        """Hosts and hubs run applications; routers and switches only forward."""
        return self.kind in ("host", "hub")


@dataclass
class LinkSpec:
    """A bidirectional link between nodes `a` and `b` with per-direction parameters."""

    a: str
    b: str
    ab: LinkParams = field(default_factory=LinkParams)
    ba: LinkParams = field(default_factory=LinkParams)
    name: str | None = None  # used by experiment overrides: "<name>.bw_mbps"
    operator: str | None = None  # owner; a link whose ends belong to two operators is an interconnect
    mtu: int = DEFAULT_MTU
    line: int | None = None

    @property
    def label(self) -> str:
        return self.name or f"{self.a}-{self.b}"

    def params(self, direction: Direction) -> LinkParams:
        return self.ab if direction == "ab" else self.ba

    def direction_from(self, node: str) -> Direction:
        """Direction of traffic leaving `node` on this link."""
        if node == self.a:
            return "ab"
        if node == self.b:
            return "ba"
        raise ValueError(f"{node} is not an end of link {self.label}")


@dataclass
class RoutePin:
    """A route fixed by the spec: traffic from `src` to `dst` follows `path` (node names)."""

    src: str
    dst: str
    path: list[str]
    line: int | None = None


@dataclass
class TopologySpec:
    """A validated topology: nodes, links, routing policy and free-form metadata."""

    name: str
    nodes: dict[str, NodeSpec]
    links: list[LinkSpec]
    routing: str = "operator"  # "operator": cross operators only at interconnects; "shortest"
    routes: list[RoutePin] = field(default_factory=list)
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # scale, sources, generator params, ...
    source: str = "<memory>"

    def link(self, name: str) -> LinkSpec:
        for link in self.links:
            if link.label == name:
                return link
        raise KeyError(name)

    def operators(self) -> list[str]:
        return sorted({n.operator for n in self.nodes.values() if n.operator})

    def endpoints(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.is_endpoint]


@dataclass
class Interface:
    """One end of a link inside a node."""

    node: str
    name: str  # e.g. "h1-eth0"
    link_index: int  # index into TopologySpec.links
    peer: str  # node at the other end
    ip: str | None = None  # None on switch ports
    prefixlen: int | None = None
    mac: str | None = None

    @property
    def cidr(self) -> str | None:
        return f"{self.ip}/{self.prefixlen}" if self.ip else None


@dataclass
class Route:
    """A static route installed in a node: packets to `dst` leave via `dev` towards `via`."""

    dst: str  # CIDR, e.g. "10.0.3.0/30" or "10.0.3.2/32"
    via: str | None
    dev: str


@dataclass
class NetworkPlan:
    """A topology with addresses and routes: everything needed to build the network."""

    spec: TopologySpec
    interfaces: dict[str, list[Interface]]  # node -> its interfaces, in link order
    routes: dict[str, list[Route]]  # node -> static routes
    paths: dict[tuple[str, str], list[str]]  # (src, dst) endpoint pair -> node path
    # Added by the topology layer (additive): notes such as routing-policy fallbacks.
    warnings: list[str] = field(default_factory=list)

    def ip(self, node: str) -> str:
        """The node's primary address (its first addressed interface)."""
        for intf in self.interfaces.get(node, []):
            if intf.ip:
                return intf.ip
        raise KeyError(f"{node} has no IP address")

    def path(self, src: str, dst: str) -> list[str]:
        return self.paths[(src, dst)]

    def hop_links(self, src: str, dst: str) -> list[tuple[LinkSpec, Direction]]:
        """Links (with direction) along the routed path from src to dst."""
        path = self.path(src, dst)
        out = []
        for u, v in itertools.pairwise(path):
            link = next(lk for lk in self.spec.links if {lk.a, lk.b} == {u, v})
            out.append((link, link.direction_from(u)))
        return out

    def path_delay_ms(self, src: str, dst: str) -> float:
        """Configured one-way delay along the routed path from src to dst."""
        return sum(link.params(d).delay_ms for link, d in self.hop_links(src, dst))

    def path_bottleneck_mbps(self, src: str, dst: str) -> float | None:
        rates = [link.params(d).bw_mbps for link, d in self.hop_links(src, dst)]
        rates = [r for r in rates if r is not None]
        return min(rates) if rates else None

    def path_loss_pct(self, src: str, dst: str) -> float:
        keep = 1.0
        for link, d in self.hop_links(src, dst):
            keep *= 1 - link.params(d).loss_pct / 100
        return (1 - keep) * 100
