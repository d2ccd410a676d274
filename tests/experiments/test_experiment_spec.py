"""Experiment spec validation: every breach is one line naming file:line, field and rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.errors import SpecError
from testbed.experiment import load_experiment
from testbed.experiment.runner import plan_trials
from testbed.experiment.spec import loads_experiment

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "experiments" / "quick-compare.yaml"

BASE = """\
name: t
topology: dumbbell
grid:
  bottleneck.bw_mbps: [20]
  bottleneck.loss_pct: [0, 1]
flows:
  - {protocol: tcp, cc: bbr, src: h1, dst: h2, size_mb: 5}
  - {protocol: tcp, cc: cubic, src: h1, dst: h2, size_mb: 5}
repeat: 2
seed: 7
"""


def error_of(text: str, sets=()) -> str:
    with pytest.raises(SpecError) as info:
        loads_experiment(text, "exp.yaml", sets=sets)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_example_loads_as_written():
    spec = load_experiment(EXAMPLE)
    assert spec.name == "quick-compare" and spec.repeat == 2 and spec.seed == 7
    assert [p.values["bottleneck.loss_pct"] for p in spec.points()] == [0, 1]
    assert [(f.protocol, f.cc, f.size_bytes) for f in spec.flows] == [
        ("qtp", "bbr", 5_000_000),
        ("tcp", "cubic", 5_000_000),
    ]


def test_unknown_field_names_line_and_allowed():
    msg = error_of(BASE.replace("seed: 7", "sede: 7"))
    assert msg.startswith("exp.yaml:10: sede: unknown field")


def test_unknown_flow_field():
    msg = error_of(BASE.replace("size_mb: 5}", "size_mb: 5, rate: 3}", 1))
    assert msg.startswith("exp.yaml:7: flows.0.rate: unknown field"), msg


def test_bad_protocol_names_known_ones():
    msg = error_of(BASE.replace("protocol: tcp", "protocol: quic", 1))
    assert msg.startswith("exp.yaml:7: flows.0.protocol: unknown protocol 'quic'"), msg
    assert "tcp" in msg


def test_bad_cc_for_protocol():
    pytest.importorskip("protocols.tcp")
    msg = error_of(BASE.replace("cc: cubic", "cc: vegas"))
    assert "flows.1.cc" in msg and "vegas" in msg, msg


def test_bad_grid_link_named():
    msg = error_of(BASE.replace("bottleneck.bw_mbps: [20]", "bottlenek.bw_mbps: [20]"))
    assert msg.startswith("exp.yaml:4: grid.bottlenek.bw_mbps: unknown link 'bottlenek'"), msg


def test_bad_grid_field_named():
    msg = error_of(BASE.replace("bottleneck.bw_mbps: [20]", "bottleneck.speed: [20]"))
    assert "grid.bottleneck.speed" in msg and "unknown link field 'speed'" in msg, msg


def test_bad_grid_value():
    msg = error_of(BASE.replace("[0, 1]", "[0, 150]"))
    assert "grid.bottleneck.loss_pct" in msg and "150" in msg, msg


def test_unknown_host():
    msg = error_of(
        BASE.replace("dst: h2, size_mb: 5}\n  - {protocol: tcp", "dst: h9, size_mb: 5}\n  - {protocol: tcp")
    )
    assert msg.startswith("exp.yaml:7: flows.0.dst: no end system 'h9'"), msg


def test_size_and_duration_exclusive():
    msg = error_of(BASE.replace("size_mb: 5}", "size_mb: 5, duration_s: 3}", 1))
    assert "flows.0" in msg and "exactly one of" in msg


def test_bad_event_link():
    msg = error_of(BASE + "events:\n  - {at_s: 1, link: nowhere, down: true}\n")
    assert msg.startswith("exp.yaml:12: events.0.link: unknown link 'nowhere'"), msg


def test_set_changes_values():
    spec = loads_experiment(
        BASE,
        "exp.yaml",
        sets=[
            "repeat=3",
            "flows.0.size_mb=1",
            "grid.bottleneck.loss_pct=[0,2,5]",
            "bottleneck.delay_ms=25",
            "probes.rate_pps=50",
        ],
    )
    assert spec.repeat == 3 and spec.flows[0].size_bytes == 1_000_000
    assert spec.grid["bottleneck.loss_pct"] == [0, 2, 5]
    assert spec.overrides == {"bottleneck.delay_ms": 25}
    assert spec.probes.rate_pps == 50
    assert spec.raw["repeat"] == 2  # as given is kept apart from the resolved spec
    assert spec.resolved()["repeat"] == 3


@pytest.mark.parametrize(
    ("sets", "expect"),
    [
        (["repeat"], "--set: repeat: expected key=value"),
        (["repeat=0"], "--set repeat=0: repeat: must be >= 1"),
        (["flows.5.size_mb=1"], "--set flows.5.size_mb: flows.5: no such item"),
        (["colour=red"], "--set colour: colour: unknown field"),
        (
            ["grid.bottleneck.loss_pct=[0, 200]"],
            "--set grid.bottleneck.loss_pct=[0, 200]: grid.bottleneck.loss_pct",
        ),
        (["flows.0.protocol=nope"], "--set flows.0.protocol=nope: flows.0.protocol: unknown protocol"),
    ],
)
def test_bad_set(sets, expect):
    assert error_of(BASE, sets).startswith(expect)


def test_trial_order_seeded_and_interleaved():
    spec = loads_experiment(BASE, "exp.yaml", sets=["repeat=3"])
    trials = plan_trials(spec)
    assert [t.id for t in trials] == [t.id for t in plan_trials(spec)]
    assert [t.order for t in trials] == list(range(6))
    assert [t.rep for t in trials] == [0, 0, 1, 1, 2, 2]  # repetitions are blocks: interleaved
    assert len({t.seed for t in trials}) == 6


def test_shipped_experiments_validate():
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        spec = load_experiment(path)
        assert spec.points() and spec.flows, path


def _testbed(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("testbed")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


@pytest.mark.parametrize(
    ("text", "sets", "expect"),
    [
        (BASE.replace("seed: 7", "sede: 7"), [], "bad.yaml:10: sede: unknown field"),
        (
            BASE.replace("protocol: tcp", "protocol: quic", 1),
            [],
            "bad.yaml:7: flows.0.protocol: unknown protocol",
        ),
        (
            BASE.replace("bottleneck.bw_mbps", "bottlenek.bw_mbps"),
            [],
            "bad.yaml:4: grid.bottlenek.bw_mbps: unknown link",
        ),
        (BASE, ["--set", "flows.9.size_mb=1"], "--set flows.9.size_mb: flows.9: no such item"),
    ],
)
def test_cli_errors_are_one_line_exit_2(tmp_path, text, sets, expect):
    (tmp_path / "bad.yaml").write_text(text)
    out = _testbed("run", "bad.yaml", *sets, cwd=tmp_path)
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"testbed: error: {expect}"), out.stderr
    assert not (tmp_path / "results").exists()
