"""CLI commands: `testbed shell`, `testbed clean`, `testbed check`."""
from __future__ import annotations

import json
import os
import sys

import click
import yaml

from ..errors import TestbedError
from ..network.backend import BACKENDS


def parse_assignments(items: tuple[str, ...], option: str) -> dict:
    """`k=v` words -> {k: v}, with v read as a YAML scalar (numbers, true/false, null)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TestbedError(f"{option} {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def run_cli(net) -> None:
    """Mininet's CLI on the network; from a pipe it runs the piped commands and returns."""
    from ..network.nodes import TestbedCLI, cli_output_on_stdout

    if sys.stdin.isatty():
        TestbedCLI(net.mininet)
        return
    script = net.workdir / "cli-input.txt"
    script.write_text(sys.stdin.read())
    # The CLI also polls its stdin while a command runs and forwards what it reads to the
    # node: give it a pipe that never has data, and the commands as a script.
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd) as idle, os.fdopen(write_fd, "w"), cli_output_on_stdout():
        TestbedCLI(net.mininet, stdin=idle, script=str(script))


@click.command("shell")
@click.argument("topology")
@click.option("--param", "params", multiple=True, metavar="K=V", help="topology parameter")
@click.option("--set", "sets", multiple=True, metavar="LINK.FIELD=V", help="link override: h1-h2.delay_ms=20")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def shell(topology: str, params: tuple[str, ...], sets: tuple[str, ...], backend: str, seed: int) -> None:
    """Bring up TOPOLOGY (built-in name or YAML file) and open the Mininet CLI on it.

    With a pipe as input, runs its commands and exits: printf 'h1 ping -c 3 h2\\n' | testbed shell pair
    """
    from ..network import Network
    from ..topology.plan import build_plan
    from ..topology.spec import load_topology

    spec = load_topology(topology, parse_assignments(params, "--param"), parse_assignments(sets, "--set"))
    with Network(build_plan(spec), backend=backend, seed=seed) as net:
        click.echo(f"*** {spec.name}: {len(spec.nodes)} nodes, {len(spec.links)} links, "
                   f"backend {net.backend} ({net.info.reason}), netid {net.netid}", err=True)
        for link in net.applied()["links"]:
            click.echo(f"*** link {link['link']}: {_describe(link)}", err=True)
        run_cli(net)


def _describe(link: dict) -> str:
    if link["mode"] == "direct":
        return "plain veth, unshaped"
    parts = []
    for d in ("ab", "ba"):
        p = link[d]
        rate = f"{p['bw_mbps']:g} Mbit/s" if p.get("bw_mbps") else "no rate limit"
        parts.append(f"{d}: {rate}, {p['delay_ms']:g} ms, jitter {p['jitter_ms']:g} ms, "
                     f"loss {p['loss_pct']:g} %")
    return f"{link['mode']}; " + "; ".join(parts)


@click.command("clean")
@click.option("--all", "all_networks", is_flag=True, help="also running networks and orphans of ours")
def clean(all_networks: bool) -> None:
    """Remove processes and interfaces left by networks whose owner died."""
    from ..network.cleanup import clean as do_clean

    removed = do_clean(all_networks=all_networks)
    if not removed:
        click.echo("nothing to clean")
        return
    click.echo(f"networks:   {' '.join(removed.networks) or '-'}")
    click.echo(f"processes:  {' '.join(map(str, removed.processes)) or '-'}")
    click.echo(f"interfaces: {' '.join(removed.interfaces) or '-'}")


@click.command("check")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--backend", type=click.Choice(BACKENDS), default=None, help="check only this backend")
@click.option("--quick", is_flag=True, help="fewer rows")
def check(as_json: bool, backend: str | None, quick: bool) -> None:
    """Which link backend this machine uses and why, and how faithfully links apply settings."""
    from ..check import format_check, run_check

    result = run_check(backend=backend, quick=quick)
    click.echo(json.dumps(result, indent=1) if as_json else format_check(result))
    if not result["passed"]:
        sys.exit(1)


COMMANDS: list = [shell, clean, check]
