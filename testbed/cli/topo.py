"""CLI commands: `testbed topo show` and `testbed topo ls`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .netcmds import parse_assignments

LIST_LIMIT = 40  # rows per section of `topo show` before "... (N more; --all)"


@click.group("topo")
def topo() -> None:
    """Topology specs: show a built-in or a YAML file, list the built-ins."""


@topo.command("show")
@click.argument("topology")
@click.option("--json", "as_json", is_flag=True, help="print everything as JSON")
@click.option(
    "--png", "png", metavar="PATH", help="where to draw the topology [default: <name>-topology.png]"
)
@click.option("--no-png", is_flag=True, help="do not draw")
@click.option("--param", "params", multiple=True, metavar="K=V", help="topology parameter (dumbbell: n=4)")
@click.option(
    "--set", "sets", multiple=True, metavar="LINK.FIELD=V", help="link override: bottleneck.bw_mbps=20"
)
@click.option("--all", "show_all", is_flag=True, help="list all routes and paths (default: first few)")
@click.option(
    "--labels/--no-labels", default=None, help="link labels in the drawing [default: small topologies]"
)
def show(
    topology: str,
    as_json: bool,
    png: str | None,
    no_png: bool,
    params: tuple[str, ...],
    sets: tuple[str, ...],
    show_all: bool,
    labels: bool | None,
) -> None:
    """Show TOPOLOGY (built-in name or YAML file): nodes, links, addresses, routes, paths; draw it."""
    from ..topology.plan import build_plan
    from ..topology.spec import load_topology

    spec = load_topology(topology, parse_assignments(params, "--param"), parse_assignments(sets, "--set"))
    plan = build_plan(spec)
    if as_json:
        click.echo(json.dumps(plan_to_dict(plan), indent=2))
    else:
        click.echo(plan_to_text(plan, limit=None if show_all else LIST_LIMIT))
    if not no_png:
        from ..topology.draw import draw_topology

        out = Path(png) if png else Path(f"{spec.name}-topology.png")
        draw_topology(spec, out, plan, link_labels=labels)
        click.echo(f"drawing: {out}", err=True)


@topo.command("ls")
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
def ls(as_json: bool) -> None:
    """List the built-in topologies with their parameters."""
    from ..topology.spec import builtin_description, builtin_names, builtin_params

    rows = [
        {"name": n, "description": builtin_description(n), "params": builtin_params(n)}
        for n in builtin_names()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['description']}")
        if r["params"]:
            text = ", ".join(f"{k}={_scalar(v)}" for k, v in r["params"].items())
            click.echo(f"{'':<{width}}  params: {text}")


# ---------------------------------------------------------------------------- rendering


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _params_text(p) -> str:
    parts = [f"{p.bw_mbps:g} Mbit/s" if p.bw_mbps is not None else "unshaped", f"{p.delay_ms:g} ms"]
    if p.jitter_ms:
        parts.append(f"jitter {p.jitter_ms:g} ms{' (reorder)' if p.reorder else ''}")
    if p.loss_pct:
        burst = f" burst {p.loss_burst:g}" if p.loss_burst else ""
        parts.append(f"loss {p.loss_pct:g} %{burst}")
    for key, unit in (("queue_pkts", "pkts"), ("queue_bytes", "B"), ("queue_ms", "ms")):
        v = getattr(p, key)
        if v is not None:
            parts.append(f"queue {v:g} {unit}")
    return ", ".join(parts)


def plan_to_dict(plan) -> dict[str, Any]:
    """Everything about a planned topology as JSON-ready data."""
    spec = plan.spec
    nodes = []
    for name, n in spec.nodes.items():
        nodes.append(
            {
                "name": name,
                "kind": n.kind,
                "operator": n.operator,
                "region": n.region,
                "site": n.site,
                "lat": n.lat,
                "lon": n.lon,
                "label": n.label,
                "compute": n.compute,
                "attrs": n.attrs,
                "interfaces": [
                    {
                        "name": i.name,
                        "ip": i.cidr,
                        "mac": i.mac,
                        "peer": i.peer,
                        "link": spec.links[i.link_index].label,
                    }
                    for i in plan.interfaces[name]
                ],
            }
        )
    links = [
        {
            "name": lk.label,
            "a": lk.a,
            "b": lk.b,
            "operator": lk.operator,
            "interconnect": _interconnect(spec, lk),
            "mtu": lk.mtu,
            "ab": lk.ab.as_dict(),
            "ba": lk.ba.as_dict(),
        }
        for lk in spec.links
    ]
    paths = [
        {
            "src": s,
            "dst": d,
            "path": p,
            "delay_ms": round(plan.path_delay_ms(s, d), 6),
            "rtt_ms": round(plan.path_delay_ms(s, d) + plan.path_delay_ms(d, s), 6),
            "bottleneck_mbps": plan.path_bottleneck_mbps(s, d),
            "loss_pct": round(plan.path_loss_pct(s, d), 6),
        }
        for (s, d), p in plan.paths.items()
    ]
    return {
        "name": spec.name,
        "description": spec.description,
        "source": spec.source,
        "routing": spec.routing,
        "operators": spec.operators(),
        "meta": spec.meta,
        "warnings": list(plan.warnings),
        "nodes": nodes,
        "links": links,
        "routes": {
            n: [{"dst": r.dst, "via": r.via, "dev": r.dev} for r in rs] for n, rs in plan.routes.items()
        },
        "pinned": [{"src": r.src, "dst": r.dst, "path": r.path} for r in spec.routes],
        "paths": paths,
    }


def _interconnect(spec, link) -> bool:
    oa, ob = spec.nodes[link.a].operator, spec.nodes[link.b].operator
    return oa != ob and (oa is not None or ob is not None)


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _cut(lines: list[str], limit: int | None) -> list[str]:
    if limit is None or len(lines) <= limit:
        return lines
    return [*lines[:limit], f"  ... ({len(lines) - limit} more; --all lists them, --json gives everything)"]


def plan_to_text(plan, limit: int | None = LIST_LIMIT) -> str:
    spec = plan.spec
    out = [f"topology {spec.name} ({spec.source})"]
    if spec.description:
        out.append(f"  {spec.description}")
    ops = spec.operators()
    names = spec.meta.get("operators") if isinstance(spec.meta.get("operators"), dict) else {}
    out.append(
        f"routing: {spec.routing}; operators: "
        + (", ".join(f"{o} ({names[o]})" if o in names else o for o in ops) if ops else "none")
    )
    scale = spec.meta.get("scale")
    if isinstance(scale, dict) and scale.get("note"):
        out.append(f"scale: {scale['note']}")
    if spec.meta.get("params"):
        out.append("params: " + ", ".join(f"{k}={_scalar(v)}" for k, v in spec.meta["params"].items()))
    if spec.meta.get("overrides"):
        out.append("overrides: " + ", ".join(f"{k}={_scalar(v)}" for k, v in spec.meta["overrides"].items()))
    for w in plan.warnings:
        out.append(f"warning: {w}")

    out.append(f"\nnodes ({len(spec.nodes)}):")
    rows = []
    for name, n in spec.nodes.items():
        addrs = " ".join(f"{i.name}={i.cidr}" if i.ip else f"{i.name}" for i in plan.interfaces[name])
        where = n.site or ""
        if n.lat is not None and n.lon is not None:
            where = f"{where} ({n.lat:.2f}, {n.lon:.2f})".strip()
        rows.append([name, n.kind, n.operator or "-", where, addrs])
    out += _table(rows)

    out.append(f"\nlinks ({len(spec.links)}):")
    rows = []
    for lk in spec.links:
        ix = " interconnect" if _interconnect(spec, lk) else ""
        mtu = f" mtu {lk.mtu}" if lk.mtu != 1500 else ""
        if lk.ab == lk.ba:
            rows.append([lk.label, f"{lk.a} <-> {lk.b}", _params_text(lk.ab) + mtu + ix])
        else:
            rows.append([lk.label, f"{lk.a} -> {lk.b}", _params_text(lk.ab) + mtu + ix])
            rows.append(["", f"{lk.b} -> {lk.a}", _params_text(lk.ba)])
    out += _table(rows)

    total = sum(len(r) for r in plan.routes.values())
    out.append(f"\nroutes ({total}; connected subnets not listed):")
    lines = []
    for node, rs in plan.routes.items():
        for r in rs:
            lines.append([node, r.dst, f"via {r.via}", f"dev {r.dev}"])
    out += _cut(_table(lines), limit)

    out.append(f"\npaths ({len(plan.paths)}; one-way delay, bottleneck rate, loss):")
    rows = []
    for (s, d), p in plan.paths.items():
        bn = plan.path_bottleneck_mbps(s, d)
        rows.append(
            [
                f"{s} -> {d}",
                f"{plan.path_delay_ms(s, d):.2f} ms",
                f"{bn:g} Mbit/s" if bn is not None else "unshaped",
                f"{plan.path_loss_pct(s, d):.3g} %",
                " ".join(p),
            ]
        )
    out += _cut(_table(rows), limit)
    return "\n".join(out)


COMMANDS: list = [topo]
