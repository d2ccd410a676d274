"""`testbed demo` (what `make demo` runs) finishes in a few minutes with its report. Needs root."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.network, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_and_reports(tmp_path: Path):
    out = tmp_path / "demo"
    started = time.time()
    res = subprocess.run(
        [str(Path(sys.executable).with_name("testbed")), "demo", "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    took = time.time() - started
    assert res.returncode == 0, res.stderr[-3000:]
    assert took < 300, f"demo took {took:.0f} s"
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 16 and df["ok"].all(), df[["trial", "flow", "error"]]
    assert set(df["path_kind"]) == {"intra", "cross"}
    # one-way delay on the shared clock matches the configured path delay (hubs: ~10-20 ms)
    assert ((df["owd_min_ms"] - df["configured_owd_ms"]).between(-0.5, 3)).all()
    assert (out / "report.html").exists() and (out / "report.md").exists()
    assert f"report: {out / 'report.html'}" in res.stdout
