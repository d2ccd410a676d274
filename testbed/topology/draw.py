"""Draw a topology as a PNG (matplotlib Agg, no display needed).

Nodes with coordinates are placed by longitude/latitude (co-located nodes fanned out around
their site), the others by a seeded spring layout. Colour tells the operator, the marker the
node kind; interconnection links (between operators, or to a neutral exchange) are drawn red
and dashed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import networkx as nx
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .model import LinkParams, LinkSpec, NetworkPlan, TopologySpec

MARKERS = {"host": "o", "hub": "s", "router": "D", "switch": "h"}
SIZES = {"host": 160, "hub": 200, "router": 110, "switch": 140}
NEUTRAL_COLOUR = "#7f7f7f"
PALETTE = ["#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
INTERCONNECT_COLOUR = "#d62728"


def is_interconnect(spec: TopologySpec, link: LinkSpec) -> bool:
    """A link whose ends belong to different operators (one may be a neutral exchange)."""
    oa, ob = spec.nodes[link.a].operator, spec.nodes[link.b].operator
    return oa != ob and (oa is not None or ob is not None)


def operator_colours(spec: TopologySpec) -> dict[str | None, str]:
    colours: dict[str | None, str] = {op: PALETTE[i % len(PALETTE)] for i, op in enumerate(spec.operators())}
    colours[None] = NEUTRAL_COLOUR if colours else PALETTE[0]  # no operators at all: one colour
    return colours


def layout(spec: TopologySpec) -> tuple[dict[str, tuple[float, float]], bool]:
    """Positions (x, y) per node and whether they are geographic (lon, lat)."""
    nodes = spec.nodes
    geo = [n for n, s in nodes.items() if s.lat is not None and s.lon is not None]
    g = nx.Graph()
    g.add_nodes_from(nodes)
    g.add_edges_from((lk.a, lk.b) for lk in spec.links)
    if len(geo) < max(2, len(nodes) // 2):
        if len(nodes) <= 2:
            pos = {n: (float(i), 0.0) for i, n in enumerate(nodes)}
        else:
            try:
                pos = nx.kamada_kawai_layout(g)
            except Exception:  # scipy missing or degenerate graph
                pos = nx.spring_layout(g, seed=1)
            pos = {n: (float(x), float(y)) for n, (x, y) in pos.items()}
        return pos, False
    # geographic: fan out nodes that share a site
    ops = spec.operators()
    span = max(
        max(nodes[n].lon for n in geo) - min(nodes[n].lon for n in geo),
        max(nodes[n].lat for n in geo) - min(nodes[n].lat for n in geo),
        1.0,
    )
    r_router, r_hub = span * 0.022, span * 0.05
    by_site: dict[tuple[float, float], list[str]] = {}
    for n in geo:
        by_site.setdefault((round(nodes[n].lon, 2), round(nodes[n].lat, 2)), []).append(n)
    pos: dict[str, tuple[float, float]] = {}
    for (lon, lat), members in by_site.items():
        if len(members) == 1:
            pos[members[0]] = (lon, lat)
            continue
        for i, n in enumerate(members):
            s = nodes[n]
            k = ops.index(s.operator) if s.operator in ops else len(ops)
            slots = len(ops) + 1
            angle = 2 * math.pi * k / slots + (0.0 if s.is_endpoint else math.pi / slots) + i * 0.01
            r = r_hub if s.is_endpoint else (r_router if s.operator is not None or len(members) > 1 else 0.0)
            if s.operator is None and not s.is_endpoint:
                r = 0.0  # a neutral exchange sits at the site itself
            pos[n] = (lon + r * math.cos(angle), lat + r * math.sin(angle))
    # nodes without coordinates: near their placed neighbours
    rest = [n for n in nodes if n not in pos]
    for _ in range(len(rest) + 1):
        for n in list(rest):
            placed = [pos[m] for m in g[n] if m in pos]
            if placed:
                x = sum(p[0] for p in placed) / len(placed)
                y = sum(p[1] for p in placed) / len(placed)
                j = rest.index(n)
                pos[n] = (x + r_hub * math.cos(j), y + r_hub * math.sin(j))
                rest.remove(n)
    for j, n in enumerate(rest):  # not connected to anything placed (cannot happen in a valid spec)
        pos[n] = (j * r_hub, 0.0)
    return pos, True


def link_text(p: LinkParams) -> str:
    parts = []
    if p.bw_mbps is not None:
        parts.append(f"{p.bw_mbps:g}M")
    if p.delay_ms:
        parts.append(f"{p.delay_ms:g}ms")
    if p.loss_pct:
        parts.append(f"{p.loss_pct:g}%")
    return " ".join(parts)


def draw_topology(
    spec: TopologySpec,
    path: str | Path,
    plan: NetworkPlan | None = None,
    *,
    link_labels: bool | None = None,
    node_labels: bool | None = None,
    title: str | None = None,
    dpi: int = 130,
) -> Path:
    """Write a PNG of `spec` to `path` and return the path.

    `link_labels`: annotate links with rate/delay/loss (default: only for small topologies).
    `node_labels`: name every node (default: small topologies; large geographic ones name sites).
    With a `plan`, small topologies also show each node's primary address.
    """
    path = Path(path)
    pos, geographic = layout(spec)
    colours = operator_colours(spec)
    n = len(spec.nodes)
    big = n > 30
    if link_labels is None:
        link_labels = len(spec.links) <= 20
    if node_labels is None:
        node_labels = not (big and geographic)
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    aspect = 1.0
    if geographic:
        aspect = 1 / max(0.2, math.cos(math.radians(sum(ys) / len(ys))))
    width = 11 if big else 8
    height = width * 0.7
    if geographic and max(xs) > min(xs):
        height = min(
            width * 1.3, max(width * 0.5, width * (max(ys) - min(ys)) * aspect / (max(xs) - min(xs)))
        )
        height += 1.0  # title
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    any_ix = False
    for link in spec.links:
        (x1, y1), (x2, y2) = pos[link.a], pos[link.b]
        if is_interconnect(spec, link):
            any_ix = True
            ax.plot([x1, x2], [y1, y2], color=INTERCONNECT_COLOUR, lw=2.2, ls=(0, (2, 1)), zorder=2.5)
        else:
            op = spec.nodes[link.a].operator
            ax.plot([x1, x2], [y1, y2], color=colours.get(op, NEUTRAL_COLOUR), lw=1.2, alpha=0.6, zorder=1)
        if link_labels:
            text = link_text(link.ab)
            if link.ab != link.ba:
                text = f"{text} / {link_text(link.ba)}".strip(" /")
            if link.name:
                text = f"{link.name}\n{text}" if text else link.name
            if text:
                ax.annotate(
                    text,
                    ((x1 + x2) / 2, (y1 + y2) / 2),
                    fontsize=7,
                    ha="center",
                    va="center",
                    color="#333333",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
                    zorder=4,
                )
    for kind, marker in MARKERS.items():
        members = [name for name, s in spec.nodes.items() if s.kind == kind]
        if not members:
            continue
        ax.scatter(
            [pos[m][0] for m in members],
            [pos[m][1] for m in members],
            c=[colours.get(spec.nodes[m].operator, NEUTRAL_COLOUR) for m in members],
            marker=marker,
            s=SIZES[kind] * (0.6 if big else 1.0),
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
        )
    if not node_labels:
        # name sites, not nodes: one label per city, hub sites only when away from a city
        sites: dict[str, list[tuple[float, float]]] = {}
        routers = [pos[m] for m, s in spec.nodes.items() if not s.is_endpoint]
        near = (max(xs) - min(xs)) * 0.06
        for name, xy in pos.items():
            node = spec.nodes[name]
            if node.is_endpoint and any(math.dist(xy, r) < near for r in routers):
                continue
            site = (node.site or name).split(" (")[0]
            sites.setdefault(site, []).append(xy)
        for site, pts in sites.items():
            x = sum(p[0] for p in pts) / len(pts)
            y = min(p[1] for p in pts)
            ax.annotate(
                site,
                (x, y),
                xytext=(0, -8),
                textcoords="offset points",
                fontsize=7,
                ha="center",
                va="top",
                zorder=5,
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
            )
    for name, (x, y) in pos.items() if node_labels else ():
        label = name
        if plan is not None and not big and spec.nodes[name].kind != "switch":
            try:
                label = f"{name}\n{plan.ip(name)}"
            except KeyError:
                pass
        ax.annotate(
            label,
            (x, y),
            xytext=(0, -9 if not big else -7),
            textcoords="offset points",
            fontsize=5.5 if big else 8,
            ha="center",
            va="top",
            zorder=5,
        )
    handles: list[Any] = []
    for op in spec.operators():
        handles.append(Line2D([], [], color=colours[op], lw=3, label=_operator_label(spec, op)))
    if any(s.operator is None for s in spec.nodes.values()) and spec.operators():
        handles.append(Line2D([], [], color=NEUTRAL_COLOUR, lw=3, label="neutral"))
    for kind, marker in MARKERS.items():
        if any(s.kind == kind for s in spec.nodes.values()):
            handles.append(
                Line2D(
                    [],
                    [],
                    ls="",
                    marker=marker,
                    color="white",
                    markeredgecolor="black",
                    markersize=8,
                    label=kind,
                )
            )
    if any_ix:
        handles.append(Line2D([], [], color=INTERCONNECT_COLOUR, lw=2, ls="--", label="interconnect"))
    ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.85)
    if geographic:
        ax.set_aspect(aspect)
        ax.set_xlabel("longitude (°E)")
        ax.set_ylabel("latitude (°N)")
        ax.grid(True, lw=0.3, alpha=0.5)
    else:
        ax.set_axis_off()
    mx = (max(xs) - min(xs)) * 0.08 or 0.5
    my = (max(ys) - min(ys)) * 0.1 or 0.5
    ax.set_xlim(min(xs) - mx, max(xs) + mx)
    ax.set_ylim(min(ys) - my, max(ys) + my)
    scale = spec.meta.get("scale")
    subtitle = f"{len(spec.nodes)} nodes, {len(spec.links)} links, routing: {spec.routing}"
    if isinstance(scale, dict) and scale.get("note"):
        subtitle += f"\n{scale['note']}"
    ax.set_title(f"{title or spec.name}\n{subtitle}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _operator_label(spec: TopologySpec, op: str) -> str:
    names = spec.meta.get("operators")
    if isinstance(names, dict) and names.get(op):
        return f"{op} ({names[op]})"
    return op
