"""Topology specs: load a built-in or a YAML file, validate it, apply parameters and overrides.

A spec names nodes and links; see `topologies/pair.yaml` for the smallest example. Every rule
broken is a one-line `SpecError` naming the file, the line, the element and the rule.

Built-ins live in the `topologies` package: `topologies/<name>.py` (a generator exposing
`build(**params)` and `PARAMS`) or `topologies/<name>.yaml`. A YAML spec may declare
`params: {name: default}` and use `${name}` in any value.
"""

from __future__ import annotations

import copy
import importlib
import importlib.resources
import itertools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from ..errors import SpecError
from ..specfile import Checker, line_of, load_yaml_file, load_yaml_text
from .model import (
    DEFAULT_MTU,
    LINK_PARAM_FIELDS,
    NODE_KINDS,
    LinkParams,
    LinkSpec,
    NodeSpec,
    RoutePin,
    TopologySpec,
)

ROUTING_POLICIES = ("operator", "shortest")
TOP_FIELDS = ("name", "description", "nodes", "links", "routing", "routes", "meta", "params")
NODE_FIELDS = ("kind", "operator", "region", "site", "lat", "lon", "compute", "label", "attrs")
LINK_FIELDS = ("a", "b", "name", "operator", "mtu", "ab", "ba", *LINK_PARAM_FIELDS)
ROUTE_FIELDS = ("src", "dst", "path")
QUEUE_FIELDS = ("queue_pkts", "queue_bytes", "queue_ms")
MTU_RANGE = (576, 9000)
# Mininet names interfaces "<node>-eth<N>"; Linux allows 15 characters, so with up to two
# digits of N a node name has at most 15 - len("-eth") - 2 = 9 characters.
MAX_NODE_NAME = 9
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
LINK_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_PARAM_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
BUILTIN_PACKAGE = "topologies"


# ---------------------------------------------------------------------------- link params


def _param_values(ck: Checker, m: Mapping, where: str) -> dict[str, Any]:
    """Validate the per-direction fields present in `m`; return them (None values dropped)."""
    out: dict[str, Any] = {}
    num = ck.number
    if "bw_mbps" in m and m["bw_mbps"] is not None:
        out["bw_mbps"] = float(num(m, "bw_mbps", where, minimum=0, exclusive_min=True))
    if "delay_ms" in m and m["delay_ms"] is not None:
        out["delay_ms"] = float(num(m, "delay_ms", where, minimum=0))
    if "jitter_ms" in m and m["jitter_ms"] is not None:
        out["jitter_ms"] = float(num(m, "jitter_ms", where, minimum=0))
    if "reorder" in m and m["reorder"] is not None:
        out["reorder"] = ck.boolean(m, "reorder", where)
    if "loss_pct" in m and m["loss_pct"] is not None:
        out["loss_pct"] = float(num(m, "loss_pct", where, minimum=0, maximum=100))
    if "loss_burst" in m and m["loss_burst"] is not None:
        out["loss_burst"] = float(num(m, "loss_burst", where, minimum=1))
    if "queue_pkts" in m and m["queue_pkts"] is not None:
        out["queue_pkts"] = num(m, "queue_pkts", where, minimum=1, integer=True)
    if "queue_bytes" in m and m["queue_bytes"] is not None:
        out["queue_bytes"] = num(m, "queue_bytes", where, minimum=1, integer=True)
    if "queue_ms" in m and m["queue_ms"] is not None:
        out["queue_ms"] = float(num(m, "queue_ms", where, minimum=0, exclusive_min=True))
    queues = [k for k in QUEUE_FIELDS if k in out]
    if len(queues) > 1:
        raise ck.fail(
            where, f"at most one of queue_pkts, queue_bytes, queue_ms (got {', '.join(queues)})", m, queues[1]
        )
    # explicit nulls: "unset" (bw_mbps: null -> not rate-limited)
    for key in LINK_PARAM_FIELDS:
        if key in m and m[key] is None and key in ("bw_mbps", "loss_burst", *QUEUE_FIELDS):
            out[key] = None
    return out


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `changes`; a queue field in `changes` replaces any queue field of `base`."""
    out = dict(base)
    if any(k in changes for k in QUEUE_FIELDS):
        for k in QUEUE_FIELDS:
            out.pop(k, None)
    out.update(changes)
    return out


# ---------------------------------------------------------------------------- parameters


def _check_param_names(source: str, params: Mapping, allowed: Mapping) -> None:
    for key in params:
        if key not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise SpecError(source, f"params.{key}", f"unknown parameter (allowed: {names})")


def _substitute(
    value: Any, params: Mapping, ck: Checker, where: str, parent: Any = None, key: Any = None
) -> Any:
    """Replace `${name}` in strings (a string that is exactly `${name}` takes the value's type)."""
    if isinstance(value, dict):
        for k in list(value):
            value[k] = _substitute(value[k], params, ck, f"{where}.{k}" if where else str(k), value, k)
        return value
    if isinstance(value, list):
        for i, item in enumerate(value):
            value[i] = _substitute(item, params, ck, f"{where}[{i}]", value, i)
        return value
    if isinstance(value, str) and "${" in value:
        for name in _PARAM_RE.findall(value):
            if name not in params:
                names = ", ".join(sorted(params)) or "none"
                raise ck.fail(where, f"unknown parameter ${{{name}}} (declared: {names})", parent, key)
        whole = _PARAM_RE.fullmatch(value)
        if whole:
            return params[whole.group(1)]
        return _PARAM_RE.sub(lambda mt: str(params[mt.group(1)]), value)
    return value


# ---------------------------------------------------------------------------- validation


def _node_name(ck: Checker, raw: Any, where: str, parent: Any, key: Any) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise ck.fail(where, f"node name must be a string, got {raw!r}", parent, key)
    name = str(raw)
    if not NAME_RE.match(name):
        raise ck.fail(
            where,
            f"invalid node name {name!r}: use only letters, digits, '_' and '-' ('-' not first)",
            parent,
            key,
        )
    if len(name) > MAX_NODE_NAME:
        raise ck.fail(
            where,
            f"node name {name!r} is too long ({len(name)} > {MAX_NODE_NAME} characters: "
            "interface names '<node>-eth<N>' must fit Linux's 15)",
            parent,
            key,
        )
    return name


def _parse_nodes(ck: Checker, data: Mapping) -> dict[str, NodeSpec]:
    raw_nodes = data.get("nodes")
    if raw_nodes is None:
        raise ck.fail("nodes", "missing required field 'nodes'", data)
    raw_nodes = ck.mapping(raw_nodes, "nodes", data, "nodes")
    if not raw_nodes:
        raise ck.fail("nodes", "at least one node is required", data, "nodes")
    nodes: dict[str, NodeSpec] = {}
    for raw_name, body in raw_nodes.items():
        name = _node_name(ck, raw_name, f"nodes.{raw_name}", raw_nodes, raw_name)
        where = f"nodes.{name}"
        if name in nodes:
            raise ck.fail(where, "duplicate node name", raw_nodes, raw_name)
        if body is None:
            body = {}
        body = ck.mapping(body, where, raw_nodes, raw_name)
        ck.keys(body, where, NODE_FIELDS)
        kind = ck.string(body, "kind", where, choices=NODE_KINDS, default="host")
        operator = body.get("operator")
        if operator is not None and not isinstance(operator, str):
            raise ck.fail(f"{where}.operator", f"must be a string, got {operator!r}", body, "operator")
        compute = body.get("compute") or {}
        ck.mapping(compute, f"{where}.compute", body, "compute")
        attrs = body.get("attrs") or {}
        ck.mapping(attrs, f"{where}.attrs", body, "attrs")
        nodes[name] = NodeSpec(
            name=name,
            kind=kind,
            operator=operator,
            region=_opt_str(ck, body, "region", where),
            site=_opt_str(ck, body, "site", where),
            lat=ck.number(body, "lat", where, minimum=-90, maximum=90),
            lon=ck.number(body, "lon", where, minimum=-180, maximum=180),
            compute=dict(compute),
            label=_opt_str(ck, body, "label", where),
            attrs=dict(attrs),
            line=line_of(raw_nodes, raw_name),
        )
    return nodes


def _opt_str(ck: Checker, body: Mapping, key: str, where: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ck.fail(f"{where}.{key}", f"must be a string, got {value!r}", body, key)
    return str(value)


def _parse_links(ck: Checker, data: Mapping, nodes: Mapping[str, NodeSpec]) -> list[LinkSpec]:
    raw_links = data.get("links")
    if raw_links is None:
        raw_links = []
    raw_links = ck.sequence(raw_links, "links", data, "links")
    links: list[LinkSpec] = []
    pairs: dict[frozenset, str] = {}
    labels: dict[str, str] = {}
    for i, body in enumerate(raw_links):
        where = f"links[{i}]"
        body = ck.mapping(body, where, raw_links, i)
        ck.keys(body, where, LINK_FIELDS, required=("a", "b"))
        ends = []
        for end in ("a", "b"):
            raw = body[end]
            name = str(raw) if isinstance(raw, (str, int)) and not isinstance(raw, bool) else None
            if name not in nodes:
                raise ck.fail(
                    f"{where}.{end}", f"unknown node {raw!r} (nodes: {_short_list(nodes)})", body, end
                )
            ends.append(name)
        a, b = ends
        label = body.get("name")
        if label is not None and (not isinstance(label, str) or not LINK_NAME_RE.match(label)):
            raise ck.fail(
                f"{where}.name",
                f"invalid link name {label!r}: use only letters, digits, '_' and '-' ('-' not first)",
                body,
                "name",
            )
        shown = f"links[{i}] ({label or f'{a}-{b}'})"
        if a == b:
            raise ck.fail(shown, f"self-loop: both ends are {a!r}", body)
        pair = frozenset((a, b))
        if pair in pairs:
            raise ck.fail(shown, f"duplicate link between {a} and {b} (already {pairs[pair]})", body)
        pairs[pair] = shown
        operator = body.get("operator")
        if operator is not None and not isinstance(operator, str):
            raise ck.fail(f"{shown}.operator", f"must be a string, got {operator!r}", body, "operator")
        mtu = ck.number(
            body, "mtu", shown, minimum=MTU_RANGE[0], maximum=MTU_RANGE[1], integer=True, default=DEFAULT_MTU
        )
        base = _param_values(ck, body, shown)
        dirs = {}
        for d in ("ab", "ba"):
            sub = body.get(d)
            if sub is None:
                dirs[d] = base
                continue
            sub = ck.mapping(sub, f"{shown}.{d}", body, d)
            ck.keys(sub, f"{shown}.{d}", LINK_PARAM_FIELDS)
            dirs[d] = _merge(base, _param_values(ck, sub, f"{shown}.{d}"))
        link = LinkSpec(
            a=a,
            b=b,
            ab=LinkParams(**dirs["ab"]),
            ba=LinkParams(**dirs["ba"]),
            name=label,
            operator=operator,
            mtu=mtu,
            line=line_of(raw_links, i),
        )
        if link.label in labels:
            raise ck.fail(shown, f"duplicate link name {link.label!r} (already {labels[link.label]})", body)
        labels[link.label] = shown
        links.append(link)
    return links


def _short_list(names: Mapping | list, limit: int = 12) -> str:
    names = list(names)
    text = ", ".join(names[:limit])
    return text + (", ..." if len(names) > limit else "")


def _check_graph(ck: Checker, data: Mapping, nodes: Mapping[str, NodeSpec], links: list[LinkSpec]) -> None:
    g = nx.Graph()
    g.add_nodes_from(nodes)
    g.add_edges_from((lk.a, lk.b) for lk in links)
    if len(nodes) > 1 and not nx.is_connected(g):
        comps = sorted(nx.connected_components(g), key=lambda c: (-len(c), min(c)))
        order = list(nodes)
        stray = min((n for c in comps[1:] for n in c), key=order.index)
        raw_nodes = data.get("nodes")
        raise ck.fail(
            f"nodes.{stray}",
            f"disconnected graph: {stray} is not connected to {order[0]} ({len(comps)} components)",
            raw_nodes,
            stray,
        )
    # L2 segments (switches) must be loop-free: Linux bridges here run no spanning tree.
    sw = g.subgraph([n for n, s in nodes.items() if s.kind == "switch"])
    try:
        cycle = nx.find_cycle(sw)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        names = " - ".join(u for u, _ in cycle)
        raise ck.fail(
            f"nodes.{cycle[0][0]}",
            f"switches form a loop ({names}): L2 segments must be trees",
            data.get("nodes"),
            cycle[0][0],
        )


def _parse_routes(
    ck: Checker, data: Mapping, nodes: Mapping[str, NodeSpec], links: list[LinkSpec]
) -> list[RoutePin]:
    raw = data.get("routes")
    if raw is None:
        return []
    raw = ck.sequence(raw, "routes", data, "routes")
    pairs = {frozenset((lk.a, lk.b)) for lk in links}
    pins: list[RoutePin] = []
    seen: dict[tuple[str, str], str] = {}
    for i, body in enumerate(raw):
        where = f"routes[{i}]"
        body = ck.mapping(body, where, raw, i)
        ck.keys(body, where, ROUTE_FIELDS, required=("src", "dst", "path"))
        ends = {}
        for end in ("src", "dst"):
            name = str(body[end])
            if name not in nodes:
                raise ck.fail(f"{where}.{end}", f"unknown node {body[end]!r}", body, end)
            if nodes[name].kind == "switch":
                raise ck.fail(f"{where}.{end}", f"{name} is a switch (no IP address)", body, end)
            ends[end] = name
        src, dst = ends["src"], ends["dst"]
        if src == dst:
            raise ck.fail(where, "src and dst are the same node", body)
        path_raw = ck.sequence(body["path"], f"{where}.path", body, "path")
        path = [str(p) for p in path_raw]
        for j, name in enumerate(path):
            if name not in nodes:
                raise ck.fail(f"{where}.path[{j}]", f"unknown node {name!r}", path_raw, j)
        if len(path) < 2 or path[0] != src or path[-1] != dst:
            raise ck.fail(
                f"{where}.path", f"not a path of links: must start at {src} and end at {dst}", body, "path"
            )
        if len(set(path)) != len(path):
            raise ck.fail(f"{where}.path", "not a path of links: visits a node twice", body, "path")
        for j, (u, v) in enumerate(itertools.pairwise(path)):
            if frozenset((u, v)) not in pairs:
                raise ck.fail(f"{where}.path", f"not a path of links: no link {u}-{v}", path_raw, j + 1)
        for j, name in enumerate(path[1:-1], start=1):
            if nodes[name].is_endpoint:
                raise ck.fail(
                    f"{where}.path",
                    f"not a path of links: passes through {nodes[name].kind} {name} "
                    "(only routers and switches forward)",
                    path_raw,
                    j,
                )
        if (src, dst) in seen:
            raise ck.fail(where, f"duplicate pinned route {src} -> {dst} (already {seen[(src, dst)]})", body)
        seen[(src, dst)] = where
        pins.append(RoutePin(src=src, dst=dst, path=path, line=line_of(raw, i)))
    # destination-based forwarding: two pins towards one destination must agree where they meet
    hop: dict[tuple[str, str], tuple[str, RoutePin]] = {}
    for pin in pins:
        for u, v in zip(pin.path, pin.path[1:], strict=False):
            if nodes[u].kind == "switch":
                continue
            prev = hop.get((u, pin.dst))
            if prev and prev[0] != v:
                raise SpecError(
                    ck.source,
                    f"routes ({pin.src}->{pin.dst})",
                    f"inconsistent pinned routes: at {u} traffic to {pin.dst} goes to {v} here but to "
                    f"{prev[0]} in {prev[1].src}->{prev[1].dst}",
                    pin.line,
                )
            hop[(u, pin.dst)] = (v, pin)
    return pins


def topology_from_dict(data: Mapping, source: str, params: Mapping | None = None) -> TopologySpec:
    """Validate a spec given as a mapping (parsed YAML or built by a generator).

    `params` fills the spec's declared `params` (`${name}` placeholders); unknown ones are an error.
    """
    ck = Checker(source)
    data = ck.mapping(data, "top level")
    ck.keys(data, "", TOP_FIELDS)
    declared = data.get("params")
    if declared is not None or params:
        declared = dict(ck.mapping(declared or {}, "params", data, "params"))
        _check_param_names(source, params or {}, declared)
        values = {**declared, **(params or {})}
        data = copy.deepcopy(data)
        for key in data:
            if key not in ("params", "meta"):
                data[key] = _substitute(data[key], values, ck, key, data, key)
    else:
        values = {}
    name = data.get("name")
    if name is None:
        name = Path(source).stem if source and not source.startswith("<") else "topology"
    elif not isinstance(name, str) or not name:
        raise ck.fail("name", f"must be a non-empty string, got {name!r}", data, "name")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise ck.fail("description", "must be a string", data, "description")
    routing = ck.string(data, "routing", "", choices=ROUTING_POLICIES, default="operator")
    meta = data.get("meta") or {}
    meta = dict(ck.mapping(meta, "meta", data, "meta"))
    if values:
        meta.setdefault("params", dict(values))
    nodes = _parse_nodes(ck, data)
    links = _parse_links(ck, data, nodes)
    _check_graph(ck, data, nodes, links)
    routes = _parse_routes(ck, data, nodes, links)
    return TopologySpec(
        name=name,
        nodes=nodes,
        links=links,
        routing=routing,
        routes=routes,
        description=description.strip(),
        meta=_plain(meta),
        source=source,
    )


def _plain(value: Any) -> Any:
    """LineDict/LineList -> dict/list (so specs pickle and dump as plain data)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------- overrides


def apply_overrides(
    spec: TopologySpec, overrides: Mapping[str, Any] | None, source: str | None = None
) -> TopologySpec:
    """Change link parameters in place: {"<link>.<field>": v} (both directions), {"<link>.ab.<field>": v}.

    `<field>` is one of LINK_PARAM_FIELDS, or `mtu` (link-wide). Returns `spec`.
    """
    if not overrides:
        return spec
    src = source or spec.source
    ck = Checker(src)
    labels = [lk.label for lk in spec.links]
    for key, value in overrides.items():
        where = f"override {key}"
        parts = str(key).split(".")
        if len(parts) == 2:
            link_name, direction, fname = parts[0], None, parts[1]
        elif len(parts) == 3 and parts[1] in ("ab", "ba"):
            link_name, direction, fname = parts
        else:
            raise SpecError(src, where, "expected '<link>.<field>' or '<link>.ab|ba.<field>'")
        try:
            link = spec.link(link_name)
        except KeyError:
            raise SpecError(
                src, where, f"unknown link {link_name!r} (links: {_short_list(labels)})"
            ) from None
        if fname == "mtu" and direction is None:
            link.mtu = ck.number(
                {"mtu": value}, "mtu", where, minimum=MTU_RANGE[0], maximum=MTU_RANGE[1], integer=True
            )
            continue
        if fname not in LINK_PARAM_FIELDS:
            allowed = ", ".join(LINK_PARAM_FIELDS) + ("" if direction else ", mtu")
            raise SpecError(src, where, f"unknown field {fname!r} (allowed: {allowed})")
        change = _param_values(ck, {fname: value}, where)
        if (
            fname in change
            and change[fname] is None
            and fname not in ("bw_mbps", "loss_burst", *QUEUE_FIELDS)
        ):
            change.pop(fname)
        if value is None and fname not in change:
            raise SpecError(src, where, f"{fname} cannot be null")
        for d in (direction,) if direction else ("ab", "ba"):
            merged = _merge(link.params(d).as_dict(), change)
            if any(k in change for k in QUEUE_FIELDS):
                for k in QUEUE_FIELDS:
                    merged.setdefault(k, None)
            setattr(link, d, LinkParams(**merged))
    spec.meta.setdefault("overrides", {}).update({str(k): v for k, v in overrides.items()})
    return spec


# ---------------------------------------------------------------------------- built-ins


def _builtin_root():
    return importlib.resources.files(BUILTIN_PACKAGE)


def builtin_names() -> list[str]:
    """Names of the built-in topologies (generators and YAML specs; data files excluded)."""
    names: set[str] = set()
    try:
        root = _builtin_root()
    except ModuleNotFoundError:
        return []
    modules = set()
    for entry in root.iterdir():
        n = entry.name
        if n.endswith(".py") and not n.startswith("_"):
            modules.add(n[:-3])
    for entry in root.iterdir():
        n = entry.name
        if n.endswith(".yaml") and n[:-5].replace("-", "_") not in modules:
            names.add(n[:-5])
    for mod in modules:
        names.add(mod.replace("_", "-"))
    return sorted(names)


def builtin_params(name: str) -> dict[str, Any]:
    """The parameters (with defaults) a built-in accepts."""
    kind, target = _resolve_builtin(name)
    if kind == "py":
        return dict(getattr(importlib.import_module(target), "PARAMS", {}))
    data = load_yaml_text(target.read_text(encoding="utf-8"), f"{BUILTIN_PACKAGE}/{name}.yaml")
    return dict((data or {}).get("params") or {})


def builtin_description(name: str) -> str:
    kind, target = _resolve_builtin(name)
    if kind == "py":
        doc = importlib.import_module(target).__doc__ or ""
    else:
        data = load_yaml_text(target.read_text(encoding="utf-8"), f"{BUILTIN_PACKAGE}/{name}.yaml") or {}
        doc = data.get("description") or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _resolve_builtin(name: str):
    if not re.match(r"^[A-Za-z0-9_-]+$", name):
        raise SpecError(
            name, "", f"no such topology file or built-in (built-ins: {', '.join(builtin_names())})"
        )
    root = _builtin_root()
    mod = name.replace("-", "_")
    if root.joinpath(f"{mod}.py").is_file():
        return "py", f"{BUILTIN_PACKAGE}.{mod}"
    for stem in (name, mod):
        f = root.joinpath(f"{stem}.yaml")
        if f.is_file():
            return "yaml", f
    raise SpecError(name, "", f"no such topology file or built-in (built-ins: {', '.join(builtin_names())})")


def _coerce_param(source: str, key: str, value: Any, default: Any) -> Any:
    """Check a generator parameter against its default's type."""
    where = f"params.{key}"

    def bad(kind: str) -> SpecError:
        return SpecError(source, where, f"must be {kind}, got {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad("a whole number")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    elif isinstance(default, (list, tuple)):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad("a list or a comma-separated string")
        return [str(v) for v in value]
    elif isinstance(default, str) and not isinstance(value, str):
        raise bad("a string")
    return value


def _load_builtin(name: str, params: Mapping | None) -> TopologySpec:
    kind, target = _resolve_builtin(name)
    if kind == "yaml":
        source = f"{BUILTIN_PACKAGE}/{target.name}"
        data = load_yaml_text(target.read_text(encoding="utf-8"), source)
        return topology_from_dict(data, source, params=params)
    module = importlib.import_module(target)
    source = f"{BUILTIN_PACKAGE}/{target.rsplit('.', 1)[1]}.py"
    allowed = dict(getattr(module, "PARAMS", {}))
    params = dict(params or {})
    _check_param_names(source, params, allowed)
    values = {
        k: _coerce_param(source, k, params[k], allowed[k]) if k in params else v for k, v in allowed.items()
    }
    built = module.build(**values)
    if isinstance(built, TopologySpec):
        spec = built
        spec.meta.setdefault("params", values)
        return spec
    data = dict(built)
    meta = dict(data.get("meta") or {})
    meta.setdefault("params", values)
    data["meta"] = meta
    return topology_from_dict(data, source)


def load_topology(
    name_or_path: str, params: Mapping | None = None, overrides: Mapping | None = None
) -> TopologySpec:
    """A validated topology from a built-in name (`pair`, `dumbbell`, `hubs`, ...) or a YAML file.

    `params` are generator parameters (or a YAML spec's declared params); `overrides` change
    link parameters ({"bottleneck.bw_mbps": 20}). Errors are one-line SpecErrors.
    """
    text = str(name_or_path)
    path = Path(text)
    looks_like_file = path.suffix in (".yaml", ".yml") or "/" in text or path.is_file()
    if looks_like_file:
        data = load_yaml_file(path)
        if data is None:
            raise SpecError(text, "", "empty file")
        spec = topology_from_dict(data, text, params=params)
    else:
        spec = _load_builtin(text, params)
    return apply_overrides(spec, overrides)
