"""Competing duration flows, a short-flow mix and scheduled link events, for real (kernel TCP
on the emulated dumbbell). Needs root: marked `network`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from testbed.experiment import experiment_from_dict, run

pytestmark = pytest.mark.network

SPEC = {
    "name": "features",
    "topology": {"name": "dumbbell", "params": {"n": 2}},
    "overrides": {"bottleneck.bw_mbps": 20, "bottleneck.delay_ms": 10},
    "flows": [
        {"protocol": "tcp", "cc": "cubic", "src": "h1", "dst": "h2", "duration_s": 3, "group": "bulk"},
        {"protocol": "tcp", "cc": "bbr", "src": "h3", "dst": "h4", "duration_s": 3, "group": "bulk"},
        {
            "protocol": "tcp",
            "cc": "cubic",
            "src": "h3",
            "dst": "h4",
            "count": 5,
            "size_kb": 64,
            "interval_ms": 100,
        },
    ],
    "events": [{"at_s": 1.5, "link": "bottleneck", "set": {"bw_mbps": 10}}],
    "probes": {"udp": True, "rate_pps": 50, "ping": False, "idle_s": 0.5},
    "seed": 11,
}


def test_competing_flows_mix_and_events(tmp_path: Path):
    result = run(
        experiment_from_dict(SPEC, "features"), out_dir=tmp_path / "run", progress=False, check=False
    )
    df = result.results
    assert result.complete and len(df) == 7 and df["ok"].all(), df[["flow", "error"]]
    bulk, mix = df[df["flow_spec"] < 2], df[df["flow_spec"] == 2]
    # duration flows: sized for the configured rate x duration, measured over their window
    assert (bulk["size_bytes"] == 20e6 / 8 * 3 + 1).all()
    assert (bulk["window_goodput_mbps"] <= 20 * 1.05).all()
    # together at most what the link carried (1.5 s at 20 + 1.5 s at 10 Mbit/s = 15), and not idle
    assert 7.5 < bulk["window_goodput_mbps"].sum() <= 15 * 1.05
    assert bulk["fairness"].between(0.5, 1.0).all() and bulk["fairness"].nunique() == 1
    assert (bulk["start_s"] < 0.2).all()  # one group: they start together
    # the mix: 5 instances 100 ms apart, after the bulk group, each 64 kB
    assert (mix["bytes"] == 64_000).all() and len(mix) == 5
    starts = mix["start_s"].to_numpy()
    assert starts.min() > bulk["start_s"].max() + 3
    assert pd.Series(starts).diff().dropna().between(0.08, 0.2).all()
    # the event fired on time and the link rate really changed
    info = json.loads((result.run_dir / "trials" / "p0-r0" / "trial.json").read_text())
    (event,) = info["events"]
    assert event["fired_s"] == pytest.approx(1.5, abs=0.1) and "error" not in event
    ts = result.timeseries[result.timeseries["flow"] < 2]
    per_bin = ts.groupby((ts["t_s"] * 10).round().astype(int) / 10)["mbps"].sum()  # both flows per 100 ms
    before = per_bin[(per_bin.index > 0.5) & (per_bin.index < 1.4)].mean()
    after = per_bin[(per_bin.index > 2.5) & (per_bin.index < 4.5)].mean()
    assert 12 < before <= 20 * 1.1, per_bin
    assert after <= 10 * 1.15, per_bin
