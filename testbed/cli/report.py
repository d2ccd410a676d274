"""CLI commands: report, compare."""

from __future__ import annotations

from pathlib import Path

import click

COMMANDS: list = []


@click.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output directory (default: the run directory).",
)
def report_cmd(run_dir: Path, out: Path | None) -> None:
    """Write the network quality assessment report of RUN_DIR (report.md, report.html, figures/,
    summary.csv)."""
    from ..report import build_report

    paths = build_report(run_dir, out)
    click.echo(f"report: {paths.html}")
    click.echo(f"        {paths.markdown}")
    click.echo(f"        {paths.summary} ({len(paths.figures)} figures in {paths.html.parent / 'figures'})")


@click.command("compare")
@click.argument("run_a", type=click.Path(path_type=Path))
@click.argument("run_b", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output directory (default: RUN_B/compare-<RUN_A name>).",
)
def compare_cmd(run_a: Path, run_b: Path, out: Path | None) -> None:
    """Compare two runs: per condition and protocol, B − A with 95 % CIs, significant changes flagged."""
    from ..report import compare_runs

    paths = compare_runs(run_a, run_b, out)
    click.echo(f"compare: {paths.html}")
    click.echo(f"         {paths.markdown}")


COMMANDS += [report_cmd, compare_cmd]
