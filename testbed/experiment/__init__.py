"""Declarative experiments: a spec (topology x grid x flows x repetitions) run on real emulated
networks, measured into tidy tables (docs/results-format.md).

    from testbed.experiment import load_experiment, run
    result = run(load_experiment("experiments/quick-compare.yaml", sets=["repeat=3"]))
    result.results.groupby(["bottleneck.loss_pct", "protocol"]).goodput_mbps.median()
"""

from __future__ import annotations

from .results import RunResult, list_runs, load_run
from .spec import ExperimentSpec, FlowSpec, LinkEvent, ProbeSpec, experiment_from_dict, load_experiment


def run(spec: ExperimentSpec, out_dir=None, resume=None, progress: bool = True, **kwargs) -> RunResult:
    """Run (or resume) an experiment; see `testbed.experiment.runner.run`."""
    from .runner import run as _run

    return _run(spec, out_dir=out_dir, resume=resume, progress=progress, **kwargs)


def resume(run_dir, **kwargs) -> RunResult:
    """Continue an interrupted run from its directory."""
    from .runner import resume_run

    return resume_run(run_dir, **kwargs)


__all__ = [
    "ExperimentSpec",
    "FlowSpec",
    "LinkEvent",
    "ProbeSpec",
    "RunResult",
    "experiment_from_dict",
    "list_runs",
    "load_experiment",
    "load_run",
    "resume",
    "run",
]
