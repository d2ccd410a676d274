"""CLI commands: run, ls (a thin layer over testbed.experiment)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import TestbedError


def _report(run_dir: Path) -> str:
    """Build the report; returns where it is. A failing report never hides finished results."""
    from ..report import build_report

    try:
        out = build_report(run_dir)
    except Exception as exc:  # the results are complete: say so and go on
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"report failed: {detail}; the results are complete, rebuild with: testbed report {run_dir}"
    html, md = getattr(out, "html", None), getattr(out, "markdown", None)
    return f"report: {html}" + (f"  (markdown: {md})" if md else "") if html else f"report: {out}"


def finish(result, report: bool) -> None:
    """Print the summary, build the report, say where everything is."""
    from ..experiment.results import format_summary

    grid_keys = list(result.metadata.get("grid_keys") or [])
    click.echo("")
    click.echo(format_summary(result.summary, result.comparisons, grid_keys))
    df = result.results
    if not df.empty and "ok" in df:
        failed = df[df["ok"].astype(str).str.lower() != "true"]
        if len(failed):
            first = failed.iloc[0]
            click.echo(
                f"\n{len(failed)} of {len(df)} flows failed (not in the summary); "
                f"first: trial {first['trial']} flow {first['flow']}: {first.get('error')}"
            )
    done = result.metadata.get("trials", {})
    click.echo(
        f"\nrun: {result.run_dir}  ({result.metadata.get('status')}, "
        f"trials {done.get('done')}/{done.get('total')})"
    )
    if report and result.metadata.get("trials", {}).get("done"):
        click.echo(_report(result.run_dir))


@click.command("run")
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--out", "out", type=click.Path(file_okay=False), help="run directory (default results/<name>-<time>)"
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="change any spec key (repeat=3, flows.0.size_mb=10, grid.bottleneck.loss_pct=[0,2])",
)
@click.option("--repeat", type=click.IntRange(1, 10000), help="repetitions (same as --set repeat=N)")
@click.option(
    "--resume",
    "resume",
    type=click.Path(file_okay=False, exists=True),
    help="continue an interrupted run directory: runs only the missing trials",
)
@click.option("--no-check", is_flag=True, help="skip the link fidelity check (recorded in metadata.json)")
@click.option("--no-report", is_flag=True, help="do not build the report at the end")
@click.option(
    "--backend",
    type=click.Choice(["auto", "netem", "userspace"]),
    default=None,
    help="link backend (default: the spec's, else auto)",
)
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
def run_cmd(spec, out, sets, repeat, resume, no_check, no_report, backend, quiet) -> None:
    """Run an experiment SPEC (YAML) and write results/<name>-<time>/."""
    from ..experiment import load_experiment
    from ..experiment.runner import resume_run, run

    if repeat is not None:
        sets = (*sets, f"repeat={repeat}")
    if resume:
        if spec or sets:
            raise TestbedError("--resume takes the spec from the run directory; give no SPEC or --set")
        result = resume_run(resume, progress=not quiet, backend=backend, check=not no_check)
    else:
        if not spec:
            raise TestbedError("missing SPEC (an experiment YAML file), or --resume DIR")
        if not Path(spec).exists():
            raise TestbedError(f"{spec}: no such file")
        experiment = load_experiment(spec, sets=list(sets))
        result = run(experiment, out_dir=out, progress=not quiet, backend=backend, check=not no_check)
    finish(result, report=not no_report)


@click.command("ls")
@click.argument("directory", required=False, default="results", type=click.Path(file_okay=False))
def ls_cmd(directory) -> None:
    """List experiment runs under DIRECTORY (default results/): status, trials, times."""
    from ..experiment.results import list_runs

    runs = list_runs(directory)
    if not runs:
        click.echo(f"no runs in {directory}")
        return
    width = max(len(r["run"]) for r in runs)
    click.echo(f"{'run':<{width}}  {'status':<9} {'trials':>7}  {'started':<19}  took")
    for r in runs:
        trials = f"{r['done']}/{r['total'] if r['total'] is not None else '?'}"
        started = (r["started"] or "-")[:19].replace("T", " ")
        click.echo(f"{r['run']:<{width}}  {r['status']:<9} {trials:>7}  {started:<19}  {_took(r)}")


def _took(r: dict) -> str:
    from datetime import datetime

    try:
        secs = (datetime.fromisoformat(r["ended"]) - datetime.fromisoformat(r["started"])).total_seconds()
    except (TypeError, ValueError):
        return "-"
    return f"{secs:.0f} s" if secs < 120 else f"{secs / 60:.1f} min"


COMMANDS: list = [run_cmd, ls_cmd]
