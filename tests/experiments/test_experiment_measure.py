"""Pure parts of the runner: ping parsing, link-counter deltas, CPU windows, probes on loopback,
run-directory tables and summaries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from testbed.experiment import measure, probe, results
from testbed.experiment.runner import PROBE_CMD

PING = """\
PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.
[1700000000.100000] 64 bytes from 10.0.0.2: icmp_seq=1 ttl=62 time=20.3 ms
[1700000000.200000] 64 bytes from 10.0.0.2: icmp_seq=2 ttl=62 time=41.0 ms
--- 10.0.0.2 ping statistics ---
"""


def test_parse_ping():
    assert measure.parse_ping(PING) == [(1700000000.1, 20.3), (1700000000.2, 41.0)]


def test_path_drops_sums_path_directions_only():
    before = [
        {"link": "bottleneck", "ab": {"dropped_queue": 5, "dropped_loss": 1}, "ba": {"dropped_queue": 0}},
        {"link": "h1-r1", "ab": {"dropped_queue": 0, "dropped_loss": 0}, "ba": {}},
    ]
    after = [
        {"link": "bottleneck", "ab": {"dropped_queue": 12, "dropped_loss": 4}, "ba": {"dropped_queue": 100}},
        {"link": "h1-r1", "ab": {"dropped_queue": 2, "dropped_loss": 0}, "ba": {}},
    ]
    drops = measure.path_drops(before, after, [("h1-r1", "ab"), ("bottleneck", "ab")])
    assert drops == {"queue_drops": 9.0, "loss_drops": 3.0}
    assert measure.path_drops(None, None, [("x", "ab")]) == {"queue_drops": None, "loss_drops": None}


def test_cpu_track_peak_window():
    t = measure.CpuTrack("client:0", 1)
    t.samples = [(i * 0.25, 0.0) for i in range(8)] + [(2.0 + i * 0.25, i * 0.25) for i in range(1, 9)]
    assert t.peak_fraction() == pytest.approx(1.0, abs=0.05)  # one busy second inside an idle trial
    idle = measure.CpuTrack("server:0", 2)
    idle.samples = [(i * 0.25, i * 0.01) for i in range(20)]
    assert idle.peak_fraction() < 0.1


def test_cpu_of_a_real_busy_process():
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        sampler = measure.CpuSampler(period_s=0.1)
        sampler.add("busy", proc.pid)
        end = time.time() + 1.6
        while time.time() < end:
            sampler.sample()
            time.sleep(0.05)
        track = sampler.tracks[0]
        average = (track.samples[-1][1] - track.samples[0][1]) / (track.samples[-1][0] - track.samples[0][0])
        # A busy loop gets up to one core (less when the shared machine is loaded): the peak
        # window is at least the average and never more than one core.
        assert average > 0.2
        assert average * 0.95 <= track.peak_fraction() <= 1.1
    finally:
        proc.kill()
        proc.wait()


def test_probe_stream_on_loopback(tmp_path: Path):
    """Real sockets: 100 probes/s for ~1 s, every probe logged with a small one-way delay."""
    port = 20000 + os.getpid() % 20000
    recv = subprocess.Popen(
        [*PROBE_CMD, "recv", "--port", str(port), "--out", str(tmp_path / "r")], stderr=subprocess.PIPE
    )
    time.sleep(0.3)
    send = subprocess.Popen(
        [
            *PROBE_CMD,
            "send",
            "--dst",
            "127.0.0.1",
            "--port",
            str(port),
            "--rate",
            "100",
            "--duration",
            "1.0",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert send.wait(timeout=10) == 0
    time.sleep(0.2)
    recv.send_signal(signal.SIGTERM)
    assert recv.wait(timeout=10) == 0
    sent, got = probe.read_sent(tmp_path / "s"), probe.read_received(tmp_path / "r")
    assert 95 <= len(sent) <= 102
    assert set(got) == set(sent)
    owd = [(got[s] - sent[s]) * 1e3 for s in sent]
    assert min(owd) >= 0 and sorted(owd)[len(owd) // 2] < 5.0
    gaps = [sent[s + 1] - sent[s] for s in range(len(sent) - 1)]
    assert sum(gaps) / len(gaps) == pytest.approx(0.01, rel=0.1)


def _row(trial, order, flow, proto, cc, rep, goodput, point=0):
    return {
        "trial": trial,
        "point": point,
        "rep": rep,
        "order": order,
        "seed": 1,
        "x.loss_pct": point,
        "flow": flow,
        "flow_spec": flow,
        "src": "h1",
        "dst": "h2",
        "protocol": proto,
        "cc": cc,
        "goodput_mbps": goodput,
        "fct_s": 8 / goodput,
        "ok": True,
    }


def test_rebuild_from_done_trials_only(tmp_path: Path):
    for i, trial in enumerate(["p0-r0", "p0-r1", "p0-r2"]):
        tdir = results.trial_dir(tmp_path, trial)
        rows = [_row(trial, i, 0, "qtp", "bbr", i, 10.0 + i), _row(trial, i, 1, "tcp", "cubic", i, 5.0 + i)]
        series = pd.DataFrame(
            [{"trial": trial, "flow": 0, "protocol": "qtp", "cc": "bbr", "t_s": 0.0, "mbps": 1.0}]
        )
        if trial != "p0-r2":  # p0-r2 was interrupted: rows written, no done.json
            results.save_trial(
                tdir, rows, series, pd.DataFrame(columns=results.PROBE_COLUMNS), {"trial": trial}
            )
        else:
            results.write_json(tdir / "rows.json", rows)
    df, ts, _ = results.rebuild_tables(tmp_path, ["x.loss_pct"])
    assert list(df["trial"]) == ["p0-r0", "p0-r0", "p0-r1", "p0-r1"]
    assert list(df.columns[:6]) == ["trial", "point", "rep", "order", "seed", "x.loss_pct"]
    assert len(ts) == 2
    assert len(pd.read_csv(tmp_path / "results.csv")) == 4
    summary, comps = results.summarize(df, ["x.loss_pct"])
    good = summary[summary["metric"] == "goodput_mbps"].set_index("flow_name")
    assert good.loc["qtp/bbr", "mean"] == pytest.approx(10.5)
    ratio = comps[comps["metric"] == "goodput_mbps"].iloc[0]
    assert ratio["a"] == "tcp/cubic" and ratio["b"] == "qtp/bbr"
    assert ratio["estimate"] == pytest.approx(11 / 21)
    assert "qtp/bbr" in results.format_summary(summary, comps, ["x.loss_pct"])


def test_list_runs(tmp_path: Path):
    run = tmp_path / "r1"
    results.trial_dir(run, "p0-r0")
    results.write_json(run / "trials" / "p0-r0" / "done.json", {})
    results.write_json(
        run / "metadata.json",
        {
            "name": "r1",
            "status": "running",
            "pid": 999999999,
            "trials": {"total": 2},
            "started": "2026-01-01T00:00:00",
        },
    )
    (entry,) = results.list_runs(tmp_path)
    assert entry["status"] == "partial" and entry["done"] == 1 and entry["total"] == 2
