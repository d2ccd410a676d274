"""CLI commands: demo (what `make demo` runs).

A short version of the hubs-assessment experiment (experiments/hubs-demo.yaml): a few pairs of
compute hubs on the national topology, paths inside one operator against paths that cross
operators at an interconnection point, small transfers with qtp and TCP, UDP probes and ping;
then the report. A few minutes on a 2-core machine.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import click

from ..errors import TestbedError

DEMO_SPEC = "hubs-demo.yaml"


def demo_spec_path() -> Path:
    """experiments/hubs-demo.yaml, from the source tree or the installed package."""
    try:
        path = Path(str(importlib.resources.files("experiments").joinpath(DEMO_SPEC)))
    except ModuleNotFoundError:
        path = Path(__file__).resolve().parents[2] / "experiments" / DEMO_SPEC
    if not path.exists():
        raise TestbedError(f"demo spec {DEMO_SPEC} not found (expected {path})")
    return path


@click.command("demo")
@click.option(
    "--out", type=click.Path(file_okay=False), help="run directory (default results/hubs-demo-<time>)"
)
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="change the demo spec (e.g. repeat=3)"
)
@click.option("--no-check", is_flag=True, help="skip the link fidelity check")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
def demo_cmd(out, sets, no_check, quiet) -> None:
    """Run the short hubs assessment (intra- vs cross-operator paths) and write its report."""
    from ..experiment import load_experiment
    from ..experiment.runner import run
    from .run import finish

    spec = load_experiment(demo_spec_path(), sets=list(sets))
    click.echo(f"demo: {spec.description.strip().splitlines()[0] if spec.description else spec.name}")
    click.echo(
        f"demo: {len(spec.points()) * spec.repeat} trials of {sum(f.count for f in spec.flows)} flows "
        f"on topology {spec.topology} {spec.topology_params}"
    )
    result = run(spec, out_dir=out, progress=not quiet, check=not no_check)
    finish(result, report=True)
    if not result.complete:
        raise TestbedError(f"demo run incomplete: see {result.run_dir}")


COMMANDS: list = [demo_cmd]
