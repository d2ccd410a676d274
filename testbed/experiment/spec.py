"""Experiment specs: a YAML sweep (topology x grid x flows x repetitions), validated on load.

Every rule breach is one line naming file:line, the field and the rule (SpecError), also for
values that come from `--set key=value` on the command line (named as such). The Python API is
`load_experiment(path, sets)` / `experiment_from_dict(data, source)`; YAML is a thin layer.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError
from ..specfile import Checker, LineDict, LineList, load_yaml_file, load_yaml_text
from ..topology.model import LINK_PARAM_FIELDS

TOP_FIELDS = (
    "name",
    "description",
    "topology",
    "topology_params",
    "overrides",
    "grid",
    "flows",
    "repeat",
    "seed",
    "concurrent",
    "probes",
    "events",
    "capture",
    "backend",
    "settle_s",
    "timeout_s",
    "min_duration_s",
)
FLOW_FIELDS = (
    "protocol",
    "cc",
    "src",
    "dst",
    "size_mb",
    "size_kb",
    "size_bytes",
    "duration_s",
    "start_s",
    "group",
    "count",
    "interval_ms",
    "options",
    "enabled",
    "label",
    "timeout_s",
)
PROBE_FIELDS = ("udp", "rate_pps", "size_bytes", "ping", "ping_interval_ms", "idle_s", "tail_s")
EVENT_FIELDS = ("at_s", "link", "direction", "set", "down", "up")
SIZE_UNITS = {"size_bytes": 1, "size_kb": 1000, "size_mb": 1000 * 1000}  # decimal, like Mbit/s
BACKENDS = ("auto", "netem", "userspace")
# Grid keys for topology parameters start with this prefix; "flows.<i>.<field>" changes a flow.
TOPO_PREFIX = "topology."


@dataclass
class FlowSpec:
    """One flow entry of the spec: `count` instances of a transfer from `src` to `dst`.

    Size flows send `size_bytes`; duration flows send until `duration_s` after their start
    (see runner: they run with an upper-bound size and are stopped at the deadline)."""

    protocol: str
    src: str
    dst: str
    cc: str | None = None
    size_bytes: int | None = None
    duration_s: float | None = None
    start_s: float = 0.0  # offset from the start of the flow's group
    group: str | None = None  # flows with the same group run concurrently
    count: int = 1  # short-flow mix: instances started every interval_ms
    interval_ms: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    label: str = ""
    timeout_s: float | None = None
    index: int = 0  # position in the spec's flow list
    line: int | None = None


@dataclass
class ProbeSpec:
    """Measurement traffic beside the flows: a UDP one-way-delay stream and ping, per path."""

    udp: bool = True
    rate_pps: float = 100.0
    size_bytes: int = 64
    ping: bool = True
    ping_interval_ms: float = 100.0
    idle_s: float = 1.0  # idle phase before the flows (baseline RTT, idle one-way delay)
    tail_s: float = 0.3  # probes keep running this long after the last flow


@dataclass
class LinkEvent:
    """A scheduled change of a link during a trial: `set` fields, or take it `down` / `up`."""

    at_s: float
    link: str
    action: str  # "set" | "down" | "up"
    fields: dict[str, Any] = field(default_factory=dict)
    direction: str | None = None
    line: int | None = None


@dataclass
class GridPoint:
    """One combination of grid values, split by what it changes."""

    index: int
    values: dict[str, Any]  # grid key -> value, as in the spec
    link_overrides: dict[str, Any]  # "<link>[.<dir>].<field>" -> value (experiment overrides included)
    topology_params: dict[str, Any]
    flow_changes: dict[str, Any]  # "flows.<i>.<field>" -> value

    @property
    def structure(self) -> tuple:
        """Points with equal structure share one running network (only link parameters differ,
        applied with set_link); topology parameters and MTUs need a network of their own."""
        mtus = [(k, repr(v)) for k, v in self.link_overrides.items() if k.endswith(".mtu")]
        return tuple(sorted((k, repr(v)) for k, v in self.topology_params.items())) + tuple(sorted(mtus))

    @property
    def runtime_links(self) -> dict[str, Any]:
        """Link overrides that can change on a running network."""
        return {k: v for k, v in self.link_overrides.items() if not k.endswith(".mtu")}

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items()) or "(single point)"


@dataclass
class ExperimentSpec:
    """A validated experiment. `raw` is the spec as given, `resolved()` after defaults and --set."""

    name: str
    topology: str  # built-in name or a file path
    flows: list[FlowSpec]
    description: str = ""
    topology_params: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    repeat: int = 1
    seed: int = 0
    concurrent: bool = False
    probes: ProbeSpec = field(default_factory=ProbeSpec)
    events: list[LinkEvent] = field(default_factory=list)
    capture: bool = False
    backend: str = "auto"
    settle_s: float = 0.3
    timeout_s: float | None = None  # per-flow default timeout
    min_duration_s: float = 0.0  # a trial's flow phase lasts at least this long (probe-only trials)
    source: str = "<memory>"
    raw: dict[str, Any] = field(default_factory=dict)
    sets: list[str] = field(default_factory=list)

    def points(self) -> list[GridPoint]:
        """The grid's cartesian product in spec order (point index = position)."""
        keys = list(self.grid)
        out = []
        for i, combo in enumerate(itertools.product(*(self.grid[k] for k in keys))):
            values = dict(zip(keys, combo, strict=True))
            links = dict(self.overrides)
            params = dict(self.topology_params)
            flows = {}
            for key, value in values.items():
                if key.startswith(TOPO_PREFIX):
                    params[key[len(TOPO_PREFIX) :]] = value
                elif key.startswith("flows."):
                    flows[key] = value
                else:
                    links[key] = value
            out.append(GridPoint(i, values, links, params, flows))
        return out

    def flows_for(self, point: GridPoint) -> list[FlowSpec]:
        """The flow list of a point, with its `flows.<i>.<field>` grid values applied."""
        flows = [dataclasses.replace(f, options=dict(f.options)) for f in self.flows]
        for key, value in point.flow_changes.items():
            _, idx, fname = key.split(".", 2)
            flow = flows[int(idx)]
            if fname in SIZE_UNITS:
                flow.size_bytes, flow.duration_s = int(value * SIZE_UNITS[fname]), None
            else:
                setattr(flow, fname, value)
        return flows

    def resolved(self) -> dict[str, Any]:
        """The spec after defaults and --set, as plain data (recorded in metadata.json)."""
        data = dataclasses.asdict(self)
        for key in ("raw", "source"):
            data.pop(key)
        return _plain(data)


def _plain(obj: Any) -> Any:
    """LineDict/LineList/tuples -> plain JSON-able dicts and lists."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- --set


def parse_set(text: str) -> tuple[str, Any]:
    """`key.path=value` -> (path, YAML-parsed value)."""
    if "=" not in text:
        raise SpecError("--set", text, "expected key=value (e.g. repeat=3, flows.0.size_mb=10)")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise SpecError("--set", text, "empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def apply_set(data: dict, key: str, value: Any) -> str:
    """Set `key` (a spec key path) in the raw spec `data`; returns the canonical path set.

    `grid.<gridkey>`, `overrides.<key>` and `topology_params.<param>` take the rest of the path
    as one key (grid keys contain dots). A bare grid or link key (`bottleneck.bw_mbps=50`)
    sets the grid entry when there is one (scalars become one-value lists), else an override.
    """
    where = f"--set {key}"
    head, _, rest = key.partition(".")
    if head in ("grid", "overrides", "topology_params") and rest:
        table = data.setdefault(head, {})
        if not isinstance(table, dict):
            raise SpecError(where, head, "is not a mapping")
        if head == "grid" and not isinstance(value, list):
            value = [value]
        table[rest] = value
        return f"{head}.{rest}"
    if head not in TOP_FIELDS:
        if "." not in key:
            raise SpecError(where, key, f"unknown field (allowed: {', '.join(sorted(TOP_FIELDS))})")
        if key in (data.get("grid") or {}):
            data["grid"][key] = value if isinstance(value, list) else [value]
            return f"grid.{key}"
        data.setdefault("overrides", {})[key] = value
        return f"overrides.{key}"
    if not rest:
        data[head] = value
        return head
    node: Any = data.setdefault(head, {} if head != "flows" else [])
    parts = rest.split(".")
    path = head
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SpecError(where, f"{path}.{part}", f"no such item (the list has {len(node)})")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise SpecError(where, path, f"is a {type(node).__name__}, not a mapping or list")
        path = f"{path}.{part}"
    return path


# --------------------------------------------------------------------------- loading


def load_experiment(path: str | Path, sets: list[str] | tuple[str, ...] = ()) -> ExperimentSpec:
    """Read, apply `--set key=value` strings, validate (incl. against topology and protocols)."""
    path = Path(path)
    data = load_yaml_file(path)
    return experiment_from_dict(data, str(path), sets=sets, base_dir=path.parent)


def loads_experiment(text: str, source: str = "<string>", sets=()) -> ExperimentSpec:
    return experiment_from_dict(load_yaml_text(text, source), source, sets=sets)


def experiment_from_dict(
    data: Any, source: str = "<memory>", *, sets=(), base_dir: str | Path | None = None
) -> ExperimentSpec:
    """Validate plain data (e.g. from YAML or a script) into an ExperimentSpec."""
    ck = Checker(source)
    if not isinstance(data, Mapping):
        raise ck.fail("", "an experiment spec must be a mapping at the top level", data)
    raw = _plain(data)
    work = copy.deepcopy(data) if isinstance(data, LineDict) else copy.deepcopy(dict(data))
    set_paths: list[tuple[str, str]] = []
    for text in sets:
        key, value = parse_set(text)
        set_paths.append((apply_set(work, key, value), text))
    try:
        spec = _validate(work, ck, base_dir)
    except SpecError as exc:
        for path, text in set_paths:
            if exc.where and (
                exc.where == path or exc.where.startswith(path + ".") or path.startswith(exc.where)
            ):
                raise SpecError(f"--set {text}", exc.where, exc.rule) from None
        raise
    spec.raw = raw
    spec.sets = list(sets)
    return spec


def _validate(d: Mapping, ck: Checker, base_dir: str | Path | None) -> ExperimentSpec:
    ck.keys(d, "", TOP_FIELDS, required=("name", "topology", "flows"))
    name = ck.string(d, "name", "")
    if not name or "/" in name:
        raise ck.fail("name", "must be a non-empty string without '/'", d, "name")
    topology, params = _topology_ref(d, ck, base_dir)
    overrides = dict(ck.mapping(d.get("overrides") or {}, "overrides", d, "overrides"))
    grid = _grid(d, ck)
    flows = _flows(d, ck)
    spec = ExperimentSpec(
        name=name,
        topology=topology,
        flows=flows,
        description=ck.string(d, "description", "", default="") or "",
        topology_params=params,
        overrides=overrides,
        grid=grid,
        repeat=ck.number(d, "repeat", "", minimum=1, maximum=10000, integer=True, default=1),
        seed=ck.number(d, "seed", "", minimum=0, integer=True, default=0),
        concurrent=ck.boolean(d, "concurrent", "", default=False),
        probes=_probes(d, ck),
        events=_events(d, ck),
        capture=ck.boolean(d, "capture", "", default=False),
        backend=ck.string(d, "backend", "", choices=BACKENDS, default="auto"),
        settle_s=ck.number(d, "settle_s", "", minimum=0, maximum=60, default=0.3),
        timeout_s=ck.number(d, "timeout_s", "", minimum=0, exclusive_min=True, default=None),
        min_duration_s=ck.number(d, "min_duration_s", "", minimum=0, maximum=3600, default=0.0),
        source=ck.source,
    )
    _check_grid_flow_keys(spec, d, ck)
    _check_protocols(spec, d, ck)
    _check_topology(spec, d, ck)
    return spec


def _topology_ref(d: Mapping, ck: Checker, base_dir) -> tuple[str, dict[str, Any]]:
    """`topology: name | path | {name, params}` plus `topology_params`."""
    topo = d["topology"]
    params: dict[str, Any] = {}
    if isinstance(topo, Mapping):
        ck.keys(topo, "topology", ("name", "params"), required=("name",))
        params.update(ck.mapping(topo.get("params") or {}, "topology.params", topo, "params"))
        topo = ck.string(topo, "name", "topology")
    elif not isinstance(topo, str) or not topo:
        raise ck.fail("topology", "must be a built-in name, a file path or {name, params}", d, "topology")
    params.update(ck.mapping(d.get("topology_params") or {}, "topology_params", d, "topology_params"))
    if base_dir is not None and (topo.endswith((".yaml", ".yml")) or "/" in topo):
        candidate = Path(base_dir) / topo
        if not Path(topo).is_absolute() and candidate.exists():
            topo = str(candidate)
    return topo, params


def _grid(d: Mapping, ck: Checker) -> dict[str, list[Any]]:
    grid = ck.mapping(d.get("grid") or {}, "grid", d, "grid")
    out = {}
    for key, values in grid.items():
        where = f"grid.{key}"
        if not isinstance(key, str) or "." not in key:
            raise ck.fail(
                where, "grid keys are '<link>.<field>', 'topology.<param>' or 'flows.<i>.<field>'", grid, key
            )
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise ck.fail(where, "needs at least one value", grid, key)
        if len({repr(v) for v in values}) != len(values):
            raise ck.fail(where, "has duplicate values", grid, key)
        out[key] = list(values)
    return out


def _size(f: Mapping, ck: Checker, where: str) -> tuple[int | None, float | None]:
    given = [k for k in (*SIZE_UNITS, "duration_s") if f.get(k) is not None]
    if len(given) != 1:
        raise ck.fail(
            where,
            "needs exactly one of size_mb, size_kb, size_bytes, duration_s"
            + (f" (got {', '.join(given)})" if given else ""),
            f,
        )
    key = given[0]
    if key == "duration_s":
        return None, ck.number(f, key, where, minimum=0, exclusive_min=True, maximum=3600)
    value = ck.number(f, key, where, minimum=0, exclusive_min=True)
    return max(1, round(value * SIZE_UNITS[key])), None


def _flows(d: Mapping, ck: Checker) -> list[FlowSpec]:
    flows = ck.sequence(d["flows"], "flows", d, "flows")
    if not flows:
        raise ck.fail("flows", "needs at least one flow", d, "flows")
    out = []
    for i, f in enumerate(flows):
        where = f"flows.{i}"
        ck.mapping(f, where, flows, i)
        ck.keys(f, where, FLOW_FIELDS, required=("protocol", "src", "dst"))
        size, duration = _size(f, ck, where)
        count = ck.number(f, "count", where, minimum=0, maximum=10000, integer=True, default=1)
        out.append(
            FlowSpec(
                protocol=ck.string(f, "protocol", where),
                src=ck.string(f, "src", where),
                dst=ck.string(f, "dst", where),
                cc=ck.string(f, "cc", where),
                size_bytes=size,
                duration_s=duration,
                start_s=ck.number(f, "start_s", where, minimum=0, maximum=3600, default=0.0),
                group=_str_or_num(f, "group", where, ck),
                count=count,
                interval_ms=ck.number(f, "interval_ms", where, minimum=0, maximum=3.6e6, default=0.0),
                options=dict(ck.mapping(f.get("options") or {}, f"{where}.options", f, "options")),
                enabled=ck.boolean(f, "enabled", where, default=True),
                label=ck.string(f, "label", where, default="") or "",
                timeout_s=ck.number(f, "timeout_s", where, minimum=0, exclusive_min=True, default=None),
                index=i,
                line=getattr(f, "line", None),
            )
        )
        if out[-1].src == out[-1].dst:
            raise ck.fail(where, f"src and dst are the same node {out[-1].src!r}", f)
    return out


def _str_or_num(f: Mapping, key: str, where: str, ck: Checker) -> str | None:
    value = f.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ck.fail(f"{where}.{key}", f"must be a name or number, got {value!r}", f, key)
    return str(value)


def _probes(d: Mapping, ck: Checker) -> ProbeSpec:
    p = d.get("probes")
    if p is None:
        return ProbeSpec()
    if isinstance(p, bool):
        return ProbeSpec(udp=p, ping=p)
    ck.mapping(p, "probes", d, "probes")
    ck.keys(p, "probes", PROBE_FIELDS)
    dflt = ProbeSpec()
    return ProbeSpec(
        udp=ck.boolean(p, "udp", "probes", default=dflt.udp),
        rate_pps=ck.number(p, "rate_pps", "probes", minimum=1, maximum=10000, default=dflt.rate_pps),
        size_bytes=ck.number(
            p, "size_bytes", "probes", minimum=32, maximum=1400, integer=True, default=dflt.size_bytes
        ),
        ping=ck.boolean(p, "ping", "probes", default=dflt.ping),
        ping_interval_ms=ck.number(
            p, "ping_interval_ms", "probes", minimum=10, maximum=10000, default=dflt.ping_interval_ms
        ),
        idle_s=ck.number(p, "idle_s", "probes", minimum=0, maximum=600, default=dflt.idle_s),
        tail_s=ck.number(p, "tail_s", "probes", minimum=0, maximum=60, default=dflt.tail_s),
    )


def _events(d: Mapping, ck: Checker) -> list[LinkEvent]:
    events = ck.sequence(d.get("events") or [], "events", d, "events")
    out = []
    for i, e in enumerate(events):
        where = f"events.{i}"
        ck.mapping(e, where, events, i)
        ck.keys(e, where, EVENT_FIELDS, required=("at_s", "link"))
        actions = [k for k in ("set", "down", "up") if e.get(k) not in (None, False)]
        if len(actions) != 1:
            raise ck.fail(where, "needs exactly one of set: {...}, down: true, up: true", e)
        fields = {}
        if actions[0] == "set":
            fields = dict(ck.mapping(e["set"], f"{where}.set", e, "set"))
            if not fields:
                raise ck.fail(f"{where}.set", "needs at least one link field", e, "set")
            for k, v in fields.items():
                _check_link_value(ck, f"{where}.set.{k}", k, v, e["set"], k)
        elif e[actions[0]] is not True:
            raise ck.fail(f"{where}.{actions[0]}", "must be true", e, actions[0])
        out.append(
            LinkEvent(
                at_s=ck.number(e, "at_s", where, minimum=0, maximum=3600),
                link=ck.string(e, "link", where),
                action=actions[0],
                fields=fields,
                direction=ck.string(e, "direction", where, choices=("ab", "ba")),
                line=getattr(e, "line", None),
            )
        )
    return out


def _check_link_value(ck: Checker, where: str, fname: str, value: Any, obj: Any, key: Any) -> None:
    """A link parameter value of the right type and range."""
    if fname == "mtu" and ".ab." not in where and ".ba." not in where and ".set." not in where:
        if isinstance(value, bool) or not isinstance(value, int) or not 576 <= value <= 9000:
            raise ck.fail(where, f"must be a whole number within [576, 9000], got {value!r}", obj, key)
        return
    if fname not in LINK_PARAM_FIELDS:
        raise ck.fail(
            where, f"unknown link field {fname!r} (allowed: {', '.join(LINK_PARAM_FIELDS)})", obj, key
        )
    if fname == "reorder":
        if not isinstance(value, bool):
            raise ck.fail(where, f"must be true or false, got {value!r}", obj, key)
        return
    if value is None and fname in ("bw_mbps", "loss_burst", "queue_pkts", "queue_bytes", "queue_ms"):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ck.fail(where, f"must be a number, got {value!r}", obj, key)
    limits = {"loss_pct": (0, 100), "bw_mbps": (1e-3, 1e5), "loss_burst": (1, 1e6)}
    lo, hi = limits.get(fname, (0, 1e7))
    if not lo <= value <= hi:
        raise ck.fail(where, f"must be within [{lo:g}, {hi:g}], got {value!r}", obj, key)
    if fname in ("queue_pkts", "queue_bytes") and (not float(value).is_integer() or value < 1):
        raise ck.fail(where, f"must be a whole number >= 1, got {value!r}", obj, key)


def split_link_key(key: str) -> tuple[str, str | None, str]:
    """`<link>[.<ab|ba>].<field>` -> (link, direction, field)."""
    parts = key.split(".")
    fname = parts[-1]
    direction = None
    if len(parts) >= 3 and parts[-2] in ("ab", "ba"):
        direction = parts[-2]
        parts = parts[:-1]
    return ".".join(parts[:-1]), direction, fname


def _check_grid_flow_keys(spec: ExperimentSpec, d: Mapping, ck: Checker) -> None:
    """`flows.<i>.<field>` grid keys must name an existing flow and a changeable field."""
    grid = d.get("grid") or {}
    changeable = (
        "protocol",
        "cc",
        "size_mb",
        "size_kb",
        "size_bytes",
        "duration_s",
        "start_s",
        "count",
        "interval_ms",
        "enabled",
    )
    for key, values in spec.grid.items():
        if not key.startswith("flows."):
            continue
        parts = key.split(".")
        if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) >= len(spec.flows):
            raise ck.fail(f"grid.{key}", f"no such flow (flows are 0..{len(spec.flows) - 1})", grid, key)
        if parts[2] not in changeable:
            raise ck.fail(
                f"grid.{key}",
                f"cannot vary flow field {parts[2]!r} (allowed: {', '.join(changeable)})",
                grid,
                key,
            )
        for v in values:
            if parts[2] == "enabled" and not isinstance(v, bool):
                raise ck.fail(f"grid.{key}", f"values must be true or false, got {v!r}", grid, key)
            if parts[2] in SIZE_UNITS and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
                raise ck.fail(f"grid.{key}", f"values must be numbers > 0, got {v!r}", grid, key)


def _check_protocols(spec: ExperimentSpec, d: Mapping, ck: Checker) -> None:
    """Protocol names and congestion controls against the registry (grid values too)."""
    from protocols import registry

    flows_raw = d["flows"]
    pairs = [(f.index, f.protocol, f.cc, f"flows.{f.index}") for f in spec.flows]
    for key, values in spec.grid.items():
        if key.startswith("flows.") and key.split(".")[2] in ("protocol", "cc"):
            idx, fname = int(key.split(".")[1]), key.split(".")[2]
            base = spec.flows[idx]
            for v in values:
                proto = v if fname == "protocol" else base.protocol
                cc = v if fname == "cc" else base.cc
                pairs.append((idx, proto, cc, f"grid.{key}"))
    for idx, proto, cc, where in pairs:
        obj = flows_raw[idx] if where.startswith("flows.") else d.get("grid")
        okey = "protocol" if where.startswith("flows.") else where[5:]
        if not isinstance(proto, str) or proto not in registry.names():
            raise ck.fail(
                f"{where}.protocol" if where.startswith("flows.") else where,
                f"unknown protocol {proto!r} (known: {', '.join(registry.names())})",
                obj,
                okey,
            )
        try:
            driver = registry.get(proto)
        except ImportError as exc:
            raise ck.fail(
                where if not where.startswith("flows.") else f"{where}.protocol",
                f"protocol {proto!r} cannot be loaded ({type(exc).__name__}: {exc})",
                obj,
                okey,
            ) from None
        try:
            driver.check_cc(cc)
        except ValueError as exc:
            where_cc = f"{where}.cc" if where.startswith("flows.") else where
            raise ck.fail(where_cc, str(exc), obj, "cc" if where.startswith("flows.") else okey) from None


def _check_topology(spec: ExperimentSpec, d: Mapping, ck: Checker) -> None:
    """Grid/override keys name real links and fields; flow endpoints are end systems."""
    from ..topology.spec import load_topology

    grid_raw = d.get("grid") or {}
    structures = {}
    for point in spec.points():
        structures.setdefault(point.structure, point.topology_params)
    for params in structures.values():
        try:
            topo = load_topology(spec.topology, params=params or None)
        except SpecError as exc:
            if exc.source in ("", "<memory>") or exc.source == spec.topology:
                raise ck.fail(
                    "topology", f"{exc.where + ': ' if exc.where else ''}{exc.rule}", d, "topology"
                ) from None
            raise
        links = {lk.label for lk in topo.links}
        for table, raw in (("grid", grid_raw), ("overrides", d.get("overrides") or {})):
            for key in spec.grid if table == "grid" else spec.overrides:
                if key.startswith((TOPO_PREFIX, "flows.")):
                    continue
                link, _direction, fname = split_link_key(key)
                if link not in links:
                    shown = ", ".join(sorted(links)[:12]) + (", ..." if len(links) > 12 else "")
                    raise ck.fail(
                        f"{table}.{key}",
                        f"unknown link {link!r} in topology {topo.name} (links: {shown})",
                        raw,
                        key,
                    )
                values = spec.grid[key] if table == "grid" else [spec.overrides[key]]
                for v in values:
                    _check_link_value(ck, f"{table}.{key}", fname, v, raw, key)
        for ev in spec.events:
            if ev.link not in links:
                raise SpecError(
                    ck.source,
                    f"events.{spec.events.index(ev)}.link",
                    f"unknown link {ev.link!r} in topology {topo.name}",
                    ev.line,
                )
        endpoints = set(topo.endpoints())
        for f in spec.flows:
            for end in ("src", "dst"):
                node = getattr(f, end)
                if node not in endpoints:
                    known = sorted(endpoints)
                    shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
                    raise ck.fail(
                        f"flows.{f.index}.{end}",
                        f"no end system {node!r} in topology {topo.name} (hosts: {shown})",
                        d["flows"][f.index],
                        end,
                    )


__all__ = [
    "ExperimentSpec",
    "FlowSpec",
    "GridPoint",
    "LineDict",
    "LineList",
    "LinkEvent",
    "ProbeSpec",
    "apply_set",
    "experiment_from_dict",
    "load_experiment",
    "loads_experiment",
    "parse_set",
    "split_link_key",
]
