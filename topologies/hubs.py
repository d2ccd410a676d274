"""National compute hubs: 10 clusters, three operator backbones, interconnection points.

Built from the data in topologies/hubs.yaml (sources and model explained there): per operator a
backbone of routers "<op>-<city>", one hub host per cluster and operator "<cluster>-<op>" on a
metro link, operators peering only at interconnection-point cities (and neutral exchanges).
Delays: great-circle distance x route factor x 5 us/km (+ IP overhead); capacities scaled.
"""

from __future__ import annotations

import importlib.resources
import math
from functools import lru_cache
from typing import Any

import networkx as nx

from testbed.errors import SpecError
from testbed.specfile import load_yaml_text

SOURCE = "topologies/hubs.py"
DATA = "hubs.yaml"
EARTH_RADIUS_KM = 6371.0


@lru_cache(maxsize=1)
def load_data() -> dict[str, Any]:
    """The parsed topologies/hubs.yaml (cached; do not mutate)."""
    text = importlib.resources.files("topologies").joinpath(DATA).read_text(encoding="utf-8")
    return load_yaml_text(text, f"topologies/{DATA}")


def _defaults() -> dict[str, Any]:
    data = load_data()
    c = data["constants"]
    return {
        "route_factor": float(c["route_factor"]),  # fibre path length / great-circle distance
        "scale": float(c["scale"]),  # capacity scale (0.001: 400 Gbit/s -> 400 Mbit/s)
        "operators": list(data["operators"]),  # operator codes (list or "ct,cm")
        "sites": list(data["clusters"]),  # cluster codes (list or "zjk,sg")
        "backbone_bw_mbps": None,  # backbone rate in emulation (None: backbone_gbps x scale)
    }


PARAMS: dict[str, Any] = _defaults()


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance on a sphere of radius 6371 km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def fibre_delay_ms(km: float, route_factor: float, us_per_km: float) -> float:
    """One-way fibre delay over a great-circle distance `km`."""
    return km * route_factor * us_per_km / 1000.0


def _check_codes(name: str, values: list[str], known: dict) -> list[str]:
    if not values:
        raise SpecError(SOURCE, f"params.{name}", "must name at least one")
    out = []
    for v in values:
        if v not in known:
            raise SpecError(SOURCE, f"params.{name}", f"unknown code {v!r} (known: {', '.join(known)})")
        if v not in out:
            out.append(v)
    return out


def _needed_cities(
    data: dict, sites: list[str], operators: list[str], route_factor: float, us_per_km: float
) -> list[str]:
    """PoP cities to keep: all shortest backbone paths between the selected clusters' PoPs, plus
    the nearest peering city (with its paths) if several operators and none is on them."""
    cities = data["cities"]
    g = nx.Graph()
    for a, b in data["backbone"]:
        km = great_circle_km(cities[a]["lat"], cities[a]["lon"], cities[b]["lat"], cities[b]["lon"])
        g.add_edge(a, b, w=fibre_delay_ms(km, route_factor, us_per_km))
    pops = []
    for s in sites:
        pop = data["clusters"][s]["pop"]
        if pop not in pops:
            pops.append(pop)
    keep = set(pops)
    for i, a in enumerate(pops):
        for b in pops[i + 1 :]:
            keep.update(nx.shortest_path(g, a, b, weight="w"))
    peering = set(data["interconnection_points"]) | set(data["neutral_exchanges"])
    if len(operators) > 1 and not keep & peering:
        candidates = [c for c in cities if c in peering]
        dist = {c: sum(nx.shortest_path_length(g, p, c, weight="w") for p in pops) for c in candidates}
        best = min(candidates, key=lambda c: (dist[c], c))
        for p in pops:
            keep.update(nx.shortest_path(g, p, best, weight="w"))
    return [c for c in cities if c in keep]


def build(
    route_factor: float = PARAMS["route_factor"],
    scale: float = PARAMS["scale"],
    operators: list[str] | None = None,
    sites: list[str] | None = None,
    backbone_bw_mbps: float | None = None,
) -> dict:
    data = load_data()
    c = data["constants"]
    if not route_factor >= 1:
        raise SpecError(SOURCE, "params.route_factor", f"must be >= 1, got {route_factor}")
    if not scale > 0:
        raise SpecError(SOURCE, "params.scale", f"must be > 0, got {scale}")
    if backbone_bw_mbps is not None and (
        isinstance(backbone_bw_mbps, bool)
        or not isinstance(backbone_bw_mbps, (int, float))
        or backbone_bw_mbps <= 0
    ):
        raise SpecError(SOURCE, "params.backbone_bw_mbps", f"must be a number > 0, got {backbone_bw_mbps!r}")
    operators = _check_codes("operators", list(operators or PARAMS["operators"]), data["operators"])
    sites = _check_codes("sites", list(sites or PARAMS["sites"]), data["clusters"])
    us_per_km = float(c["fibre_us_per_km"])
    cities = data["cities"]
    keep = _needed_cities(data, sites, operators, route_factor, us_per_km)

    def gbps(v: Any) -> float | None:
        return None if v is None else round(float(v) * 1000.0 * scale, 6)

    bb_bw = float(backbone_bw_mbps) if backbone_bw_mbps is not None else gbps(c["backbone_gbps"])
    ix_bw = gbps(c["interconnect_gbps"])
    metro_bw = gbps(c["metro_gbps"])
    nodes: dict[str, dict] = {}
    links: list[dict] = []

    def router(op: str, city: str) -> str:
        return f"{op}-{city}"

    for op in operators:
        opname = data["operators"][op]["name"]
        for city in keep:
            info = cities[city]
            nodes[router(op, city)] = {
                "kind": "router",
                "operator": op,
                "site": info["name"],
                "lat": info["lat"],
                "lon": info["lon"],
                "label": f"{opname} {info['name']}",
            }
        for a, b in data["backbone"]:
            if a in keep and b in keep:
                km = great_circle_km(cities[a]["lat"], cities[a]["lon"], cities[b]["lat"], cities[b]["lon"])
                delay = fibre_delay_ms(km, route_factor, us_per_km) + float(c["ip_overhead_ms"])
                links.append(
                    {
                        "a": router(op, a),
                        "b": router(op, b),
                        "name": f"{op}-{a}-{b}",
                        "operator": op,
                        "bw_mbps": bb_bw,
                        "delay_ms": round(delay, 3),
                    }
                )
    for site in sites:
        cl = data["clusters"][site]
        pop = cities[cl["pop"]]
        km = great_circle_km(cl["lat"], cl["lon"], pop["lat"], pop["lon"])
        metro = min(
            float(c["metro_max_ms"]), float(c["metro_base_ms"]) + fibre_delay_ms(km, route_factor, us_per_km)
        )
        for op in operators:
            hub = f"{site}-{op}"
            nodes[hub] = {
                "kind": "hub",
                "operator": op,
                "region": cl["hub"],
                "site": cl["name"],
                "lat": cl["lat"],
                "lon": cl["lon"],
                "label": f"{cl['name']} ({op.upper()})",
                "attrs": {"cluster": site, "hub_zh": cl.get("hub_zh"), "site_zh": cl.get("zh")},
            }
            links.append(
                {
                    "a": hub,
                    "b": router(op, cl["pop"]),
                    "name": f"m-{site}-{op}",
                    "operator": op,
                    "bw_mbps": metro_bw,
                    "delay_ms": round(metro, 3),
                }
            )
    # inter-operator peering
    interconnects, neutral = [], []
    if len(operators) > 1:
        for city in keep:
            if city in data["interconnection_points"]:
                interconnects.append(city)
                for i, op1 in enumerate(operators):
                    for op2 in operators[i + 1 :]:
                        links.append(
                            {
                                "a": router(op1, city),
                                "b": router(op2, city),
                                "name": f"ix-{city}-{op1}-{op2}",
                                "bw_mbps": ix_bw,
                                "delay_ms": float(c["interconnect_delay_ms"]),
                            }
                        )
            elif city in data["neutral_exchanges"]:
                neutral.append(city)
                info = data["neutral_exchanges"][city]
                ix = f"ix-{city}"
                nodes[ix] = {
                    "kind": "router",
                    "operator": None,
                    "site": info["name"],
                    "lat": info["lat"],
                    "lon": info["lon"],
                    "label": f"{info['name']} neutral IXP",
                }
                for op in operators:
                    links.append(
                        {
                            "a": router(op, city),
                            "b": ix,
                            "name": f"ix-{city}-{op}",
                            "bw_mbps": ix_bw,
                            "delay_ms": round(float(c["interconnect_delay_ms"]) / 2, 3),
                        }
                    )
    return {
        "name": "hubs",
        "description": (
            f"National compute hubs: {len(sites)} clusters x {len(operators)} operators "
            f"({', '.join(operators)}), backbones of {len(keep)} cities, peering at "
            f"{', '.join(interconnects + neutral) or 'none'}"
        ),
        "nodes": nodes,
        "links": links,
        "routing": "operator",
        "meta": {
            "scale": {
                "capacity_factor": scale,
                "note": f"capacities scaled by {scale:g}: {c['backbone_gbps']} Gbit/s backbone -> "
                f"{bb_bw:g} Mbit/s, {c['interconnect_gbps']} Gbit/s interconnect -> {ix_bw:g} Mbit/s",
            },
            "route_factor": route_factor,
            "fibre_us_per_km": us_per_km,
            "ip_overhead_ms": float(c["ip_overhead_ms"]),
            "operators": {op: data["operators"][op]["name"] for op in operators},
            "clusters": {s: data["clusters"][s]["name"] for s in sites},
            "interconnection_cities": interconnects,
            "neutral_exchanges": neutral,
            "reference": dict(data.get("reference") or {}),
            "data": f"topologies/{DATA}",
        },
    }
