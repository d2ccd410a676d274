"""Synthetic run directories (written in the results format) and their reports, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.report import build_report
from testbed.report.synthetic import SyntheticSpec, write_synthetic_run

DUMBBELL = SyntheticSpec(
    kind="dumbbell",
    protocols=("qtp", "tcp", "aioquic"),
    losses=(0.0, 1.0),
    delays_ms=(10.0, 40.0),
    reps=3,
    flows=2,
    probes=60,
    size_bytes=5_000_000,
    seed=3,
)
HUBS = SyntheticSpec(
    kind="hubs",
    protocols=("qtp", "tcp"),
    reps=2,
    probes=40,
    size_bytes=5_000_000,
    seed=5,
    name="hubs-synthetic",
)


@pytest.fixture(scope="session")
def dumbbell_run(tmp_path_factory) -> Path:
    return write_synthetic_run(tmp_path_factory.mktemp("runs") / "dumbbell", DUMBBELL)


@pytest.fixture(scope="session")
def hubs_run(tmp_path_factory) -> Path:
    return write_synthetic_run(tmp_path_factory.mktemp("runs") / "hubs", HUBS)


@pytest.fixture(scope="session")
def dumbbell_report(dumbbell_run, tmp_path_factory):
    return build_report(dumbbell_run, tmp_path_factory.mktemp("reports") / "dumbbell")


@pytest.fixture(scope="session")
def hubs_report(hubs_run, tmp_path_factory):
    return build_report(hubs_run, tmp_path_factory.mktemp("reports") / "hubs")
