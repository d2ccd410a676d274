"""The shipped example runs for real (namespaces, emulated links, real protocol processes), and
a run killed with SIGKILL resumes to the same set of rows. Needs root: marked `network`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "experiments" / "quick-compare.yaml"
TESTBED = str(Path(sys.executable).with_name("testbed"))
RATE_MBPS, OWD_MS, SIZE = 20.0, 10.0, 5_000_000

pytestmark = [pytest.mark.network, pytest.mark.slow]


def run_testbed(*args: str, timeout: float = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([TESTBED, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def my_processes(marker: str) -> list[str]:
    """Command lines of live processes that mention `marker` (our run directory)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd:
                out.append(cmd)
    return out


@pytest.fixture(scope="module")
def example_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quick") / "run"
    started = time.time()
    res = run_testbed("run", str(EXAMPLE), "--out", str(out), "--no-report", "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    print(f"quick-compare took {time.time() - started:.0f} s")
    assert "Traceback" not in res.stderr
    return out


def test_example_rows(example_run: Path):
    df = pd.read_csv(example_run / "results.csv")
    assert len(df) == 8  # 2 points x 2 repetitions x 2 flows
    assert sorted(df.groupby(["point", "rep"]).size().tolist()) == [2, 2, 2, 2]
    assert set(zip(df["protocol"], df["cc"], strict=True)) == {("qtp", "bbr"), ("tcp", "cubic")}
    assert sorted(df["bottleneck.loss_pct"].unique().tolist()) == [0, 1]
    assert df["ok"].all(), df[["trial", "flow", "error"]]
    assert (df["bytes"] == SIZE).all()
    assert sorted(df["order"].unique().tolist()) == [0, 1, 2, 3]


def test_example_values_plausible(example_run: Path):
    df = pd.read_csv(example_run / "results.csv")
    # No goodput above the configured rate (5 % for timing granularity), none absurdly low.
    assert (df["goodput_mbps"] <= RATE_MBPS * 1.05).all(), df["goodput_mbps"]
    assert (df["goodput_mbps"] > 0.5).all()
    # fct consistent with size and goodput, and no faster than the ideal serialisation time.
    assert (
        (df["bytes"] * 8 / df["fct_s"] / 1e6 - df["goodput_mbps"]).abs() < 0.01 * df["goodput_mbps"] + 0.01
    ).all()
    assert (df["fct_s"] >= SIZE * 8 / (RATE_MBPS * 1e6) * 0.95).all()
    # The idle path has the configured 2 x 10 ms RTT; probes see the 10 ms one-way delay.
    assert df["base_rtt_ms"].between(2 * OWD_MS - 0.5, 2 * OWD_MS + 4).all(), df["base_rtt_ms"]
    assert df["owd_min_ms"].between(OWD_MS - 0.5, OWD_MS + 3).all(), df["owd_min_ms"]
    assert (df["configured_rate_mbps"] == RATE_MBPS).all()
    assert (df["configured_owd_ms"] == OWD_MS).all()
    # 1 % random loss slows TCP CUBIC down (Mathis: ~7 Mbit/s at 20 ms RTT).
    cubic = df[df["protocol"] == "tcp"].groupby("bottleneck.loss_pct")["fct_s"].median()
    assert cubic[1] > cubic[0] * 1.2, cubic
    lossy = df[df["bottleneck.loss_pct"] == 1]
    backend = json.loads((example_run / "metadata.json").read_text())["link_backend"]["name"]
    if backend == "userspace":  # netem counts one total of drops, not loss and queue apart
        assert (lossy["loss_drops"] > 0).all()
        assert (df[df["bottleneck.loss_pct"] == 0]["loss_drops"] == 0).all()
    assert (lossy["probe_loss_pct"] > 0).any()
    # the machine's own noise is recorded per trial: steal and real-time wake-up lateness
    assert df["machine_steal_pct"].between(0, 100).all() and (df["machine_late_p99_ms"] >= 0).all()
    trial = json.loads((example_run / "trials" / "p0-r0" / "trial.json").read_text())
    assert trial["machine_noise"]["wakeups"] > 100, trial["machine_noise"]  # every 5 ms, >= 1 s


def test_example_series_and_probes(example_run: Path):
    ts = pd.read_csv(example_run / "timeseries.csv")
    assert set(ts.groupby(["trial", "flow"]).size().index) == {
        (t, f) for t in ["p0-r0", "p0-r1", "p1-r0", "p1-r1"] for f in (0, 1)
    }
    # The 100 ms bins add up to the bytes delivered (bins are the receiver's: bursty, not above it).
    delivered = ts.groupby(["trial", "flow"])["mbps"].sum() * 0.1 * 1e6 / 8
    assert ((delivered - SIZE).abs() < 0.02 * SIZE).all(), delivered
    probes = pd.read_csv(example_run / "probes.csv")
    assert set(probes["phase"]) == {"idle", "loaded"}
    idle = probes[(probes["phase"] == "idle")]["owd_ms"].dropna()
    assert idle.median() == pytest.approx(OWD_MS, abs=2.0)


def test_example_metadata(example_run: Path):
    meta = json.loads((example_run / "metadata.json").read_text())
    for key in (
        "name",
        "spec",
        "resolved",
        "spec_file",
        "seed",
        "repeat",
        "git",
        "versions",
        "machine",
        "link_backend",
        "fidelity_check",
        "topology",
        "started",
        "ended",
        "status",
        "trials",
        "method",
    ):
        assert key in meta, key
    assert meta["status"] == "complete" and meta["trials"] == {"total": 4, "done": 4}
    assert meta["seed"] == 7 and meta["repeat"] == 2 and meta["spec"]["name"] == "quick-compare"
    assert meta["git"]["commit"] and meta["versions"]["kernel"] and meta["versions"]["aioquic"]
    assert meta["link_backend"]["name"] in ("netem", "userspace")
    assert isinstance(meta["fidelity_check"], dict) and meta["fidelity_check"]
    assert meta["topology"]["name"] == "dumbbell" and meta["topology"]["links_applied"]
    assert meta["machine"]["cpus"] >= 1
    for trial in ("p0-r0", "p0-r1", "p1-r0", "p1-r1"):
        assert (example_run / "trials" / trial / "done.json").exists()
    listing = run_testbed("ls", str(example_run.parent))
    assert "complete" in listing.stdout and "4/4" in listing.stdout
    assert not my_processes(str(example_run))


def test_resume_after_sigkill(tmp_path: Path):
    """SIGKILL the runner after its first trial; --resume runs only what is missing."""
    out = tmp_path / "run"
    sets = ["--set", "flows.0.size_mb=2", "--set", "flows.1.size_mb=2"]
    proc = subprocess.Popen(
        [TESTBED, "run", str(EXAMPLE), "--out", "run", "--no-check", "--no-report", "-q", *sets],
        cwd=tmp_path,  # relative --out (and --resume below): processes run in other directories
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not list(out.glob("trials/*/done.json")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "no trial finished in 300 s"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.parent.name: p.stat().st_mtime for p in (out / "trials").glob("*/done.json")}
    assert 1 <= len(done_before) < 4
    time.sleep(1.0)
    assert not my_processes(str(out)), "probe/server/client processes survived the runner"
    run_testbed("clean")  # the killed runner's network (the network layer's own cleanup)
    listing = run_testbed("ls", str(tmp_path))
    assert "partial" in listing.stdout, listing.stdout

    res = run_testbed("run", "--resume", "run", "--no-check", "--no-report", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    df = pd.read_csv(out / "results.csv")
    expected = {(f"p{p}-r{r}", f) for p in (0, 1) for r in (0, 1) for f in (0, 1)}
    assert set(zip(df["trial"], df["flow"], strict=True)) == expected and len(df) == 8
    assert df["ok"].all(), df[["trial", "flow", "error"]]
    for trial, mtime in done_before.items():  # finished trials were kept, not rerun
        assert (out / "trials" / trial / "done.json").stat().st_mtime == mtime
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["status"] == "complete" and meta["trials"]["done"] == 4 and meta.get("resumed")
    assert meta["fidelity_check_skipped"] == "--no-check"
    assert not my_processes(str(out))
