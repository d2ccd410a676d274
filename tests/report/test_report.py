"""Reports built from synthetic run directories: sections, figures, numbers, flags, edge cases."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from testbed.cli import main
from testbed.errors import TestbedError
from testbed.report import analysis as an
from testbed.report import build_report, compare_runs
from testbed.report.synthetic import SyntheticSpec, write_synthetic_run

SECTIONS = (
    "## Summary",
    "## What was run",
    "## Flags",
    "## Path quality",
    "## Protocols",
    "### Verdicts per protocol pair",
    "## Definitions and thresholds",
    "### Links as applied",
    "### Fidelity check",
)
PNG = b"\x89PNG\r\n\x1a\n"


def _figs(report) -> set[str]:
    return {p.stem for p in report.figures}


def test_dumbbell_report_sections_and_figures(dumbbell_report):
    md = dumbbell_report.markdown.read_text()
    for s in SECTIONS:
        assert s in md, s
    assert {
        "goodput_vs_loss",
        "goodput_vs_rtt",
        "throughput_time",
        "owd_cdf",
        "throughput_delay",
        "fairness_time",
        "fct",
    } <= _figs(dumbbell_report)
    assert "hub_heatmap" not in _figs(dumbbell_report)  # a dumbbell sweep has no hub matrix
    assert "| bottleneck | r1 → r2 | emulator | 100 |" in md  # links as applied, per direction
    assert "| userspace | rate 100 Mbit/s | 100 | 97.1 | ±5 % | ✓ pass |" in md  # fidelity rows
    assert re.search(r"machine noise.*steal per trial median [\d.]+ %.* of \d+ trials on a noisy", md)
    for p in dumbbell_report.figures:
        assert p.is_file() and p.read_bytes().startswith(PNG) and p.stat().st_size > 5000
        assert f"figures/{p.name}" in md
    for std in (
        "Y.1540",
        "Y.1541",
        "RFC 3550",
        "RFC 5481",
        "RFC 7679",
        "RFC 7680",
        "G.107",
        "G.109",
        "G.114",
        "RFC 6349",
        "Jain",
        "RPM",
    ):
        assert std in md, std


def test_html_is_self_contained(dumbbell_report):
    html = dumbbell_report.html.read_text()
    imgs = re.findall(r"<img src='([^']*)'", html)
    assert len(imgs) == len(dumbbell_report.figures)
    for src in imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    assert "<style>" in html and "@media print" in html
    assert not re.search(r"(src|href)=['\"](https?:|//|figures/)", html)  # nothing fetched


def test_summary_numbers_match_results(dumbbell_run, dumbbell_report):
    """Goodput per condition × protocol = mean over reps of the per-rep mean over flows."""
    res = pd.read_csv(dumbbell_run / "results.csv")
    summary = pd.read_csv(dumbbell_report.summary)
    assert len(summary) == 2 * 2 * 3  # loss × delay × protocol
    per_rep = res.groupby(["bottleneck.loss_pct", "bottleneck.delay_ms", "protocol", "rep"])[
        "goodput_mbps"
    ].mean()
    expected = per_rep.groupby(level=[0, 1, 2]).mean()
    for _, row in summary.iterrows():
        key = (row["bottleneck.loss_pct"], row["bottleneck.delay_ms"], row["protocol"])
        assert row["goodput_mbps"] == pytest.approx(expected[key])
        assert row["goodput_mbps_ci_low"] <= row["goodput_mbps"] <= row["goodput_mbps_ci_high"]
        assert row["n"] == 3
    # RFC 6349 TTR: two flows share 100 Mbit/s -> ideal 47.07 Mbit/s each (TCP); TTR = ideal / goodput-ish
    tcp0 = summary[(summary["protocol"] == "tcp") & (summary["bottleneck.loss_pct"] == 0)]
    assert ((tcp0["ttr"] > 0.9) & (tcp0["ttr"] < 1.5)).all()


def test_verdicts_find_the_planted_difference(dumbbell_report):
    """The synthetic model keeps qtp's goodput under 1 % loss while loss-based TCP collapses."""
    v = pd.read_csv(dumbbell_report.csv[3])
    lossy = v[(v["a"] == "qtp") & (v["b"] == "tcp") & (v["bottleneck.loss_pct"] == 1.0)]
    assert len(lossy) == 2 and (lossy["goodput_mbps_verdict"] == "better").all()
    assert (lossy["goodput_mbps_ratio"] > 3).all()
    assert (lossy["fct_s_verdict"] == "better").all()


def test_flags_beside_numbers(dumbbell_run, dumbbell_report):
    res = pd.read_csv(dumbbell_run / "results.csv")
    assert res["cpu_limited"].any()  # the synthetic aioquic trials are sometimes CPU-bound
    md = dumbbell_report.markdown.read_text()
    flags_section = md.split("## Flags", 1)[1].split("## Path quality", 1)[0]
    assert "cpu_limited" in flags_section
    proto_rows = [
        ln for ln in md.split("## Protocols", 1)[1].splitlines() if ln.startswith("| ") and "aioquic" in ln
    ]
    assert any("⚠" in ln and "cpu_limited" in ln for ln in proto_rows)
    assert not any("⚠" in ln for ln in md.splitlines() if ln.startswith("| ") and "| qtp |" in ln)


def test_hubs_report_grades_and_policy(hubs_report):
    assert "hub_heatmap" in _figs(hubs_report)
    md = hubs_report.markdown.read_text()
    assert "### Policy checks (hubs.md)" in md and "### Grades" in md
    paths = pd.read_csv(hubs_report.csv[1])
    assert set(paths["path_kind"]) == {"intra", "cross"}
    row = paths.iloc[0]
    from testbed.metrics import qos

    assert row["emodel_r"] == pytest.approx(qos.emodel_r(row["owd_mean_ms"], row["loss_pct"]))
    assert row["y1541_class"] == qos.y1541_best_class(
        row["owd_mean_ms"], row["ipdv_ms"], row["loss_pct"] / 100
    )
    checks = pd.read_csv(hubs_report.csv[2])
    # Zhangjiakou -> Shaoguan: intra (ct -> ct) and cross (ct -> cm, +7 ms hairpin) between the same sites
    intra = paths[(paths["src"] == "zjk-ct") & (paths["dst"] == "sg-ct")]["idle_owd_ms"].item()
    rel = checks[
        (checks["src"] == "zjk-ct") & (checks["dst"] == "sg-cm") & checks["check"].str.contains("intra")
    ]
    lat = rel[rel["unit"] == "ms"].iloc[0]
    assert lat["limit"] == pytest.approx(1.25 * intra)
    assert not lat["passed"]  # 7 ms more on ~21.5 ms is > 25 % worse
    circle = checks[checks["check"] == "inter_hub one-way latency"]
    assert len(circle) == len(paths) - 1  # not between sg-ct and sg-cm: same site (metro, not inter-hub)
    assert (circle["passed"] == (circle["value"] <= 20)).all()


def test_single_repetition_and_missing_optional_files(tmp_path):
    run = write_synthetic_run(
        tmp_path / "one",
        SyntheticSpec(protocols=("qtp", "tcp"), losses=(0.0,), delays_ms=(10.0,), reps=1, flows=1, probes=20),
    )
    (run / "probes.csv").unlink()
    (run / "timeseries.csv").unlink()
    out = build_report(run, tmp_path / "out")
    md = out.markdown.read_text()
    assert "[n<2]" in md and "CI undefined (n<2)" in md
    assert not {"owd_cdf", "throughput_time", "fairness_time", "goodput_vs_loss"} & _figs(out)
    assert "fct" in _figs(out)


def test_all_failed_and_all_lost(tmp_path):
    run = write_synthetic_run(
        tmp_path / "bad",
        SyntheticSpec(protocols=("qtp", "tcp"), losses=(0.0,), delays_ms=(10.0,), reps=2, flows=1, probes=20),
    )
    res = pd.read_csv(run / "results.csv")
    res["ok"] = False
    res["goodput_mbps"] = 0.0
    res["bytes"] = 0
    res["error"] = "timeout"
    for c in ("owd_min_ms", "owd_mean_ms", "owd_p50_ms", "owd_p95_ms", "owd_p99_ms", "ipdv_ms", "jitter_ms"):
        res[c] = np.nan
    res["probe_loss_pct"] = 100.0
    res.to_csv(run / "results.csv", index=False)
    pr = pd.read_csv(run / "probes.csv")
    pr["owd_ms"] = np.nan
    pr.to_csv(run / "probes.csv", index=False)
    out = build_report(run, tmp_path / "out")
    md = out.markdown.read_text()
    assert "failed" in md.split("## Flags", 1)[1]
    paths = pd.read_csv(out.csv[1])
    assert (paths["loss_pct"] == 100).all() and (paths["y1541_class"] == 5).all()
    assert paths["emodel_r"].isna().all()


def test_errors_name_the_file(tmp_path):
    with pytest.raises(TestbedError, match="run directory not found"):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TestbedError, match=r"empty/metadata\.json: missing"):
        build_report(tmp_path / "empty")
    (tmp_path / "empty" / "metadata.json").write_text("{}")
    with pytest.raises(TestbedError, match=r"results\.csv: missing"):
        build_report(tmp_path / "empty")
    (tmp_path / "empty" / "results.csv").write_text("trial,point\np0-r0,0\n")
    with pytest.raises(TestbedError, match=r"results\.csv: missing column\(s\) rep, protocol, goodput_mbps"):
        build_report(tmp_path / "empty")
    (tmp_path / "empty" / "results.csv").write_text("trial,point,rep,protocol,goodput_mbps\n")
    with pytest.raises(TestbedError, match=r"results\.csv: no rows"):
        build_report(tmp_path / "empty")
    (tmp_path / "empty" / "metadata.json").write_text("{not json")
    with pytest.raises(TestbedError, match="invalid JSON"):
        build_report(tmp_path / "empty")


def test_cli_report_and_errors(dumbbell_run, tmp_path):
    r = CliRunner().invoke(main, ["report", str(dumbbell_run), "--out", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r" / "report.html").is_file() and (tmp_path / "r" / "summary.csv").is_file()
    r = CliRunner().invoke(main, ["report", str(tmp_path / "missing")])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines == [f"testbed: error: {tmp_path / 'missing'}: run directory not found"]
    r = CliRunner().invoke(main, ["compare", str(dumbbell_run), str(tmp_path / "missing")])
    assert r.exit_code == 2 and "missing" in r.output and "Traceback" not in r.output


def test_compare_flags_significant_changes(dumbbell_run, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(dumbbell_run, b)
    res = pd.read_csv(b / "results.csv")
    res.loc[res["protocol"] == "qtp", "goodput_mbps"] *= 0.5  # qtp got slower in run B
    res.to_csv(b / "results.csv", index=False)
    out = compare_runs(dumbbell_run, b, tmp_path / "cmp")
    t = pd.read_csv(out.csv[0])
    g = t[t["metric"] == "goodput_mbps"]
    assert len(g) == 12
    q = g[g["protocol"] == "qtp"]
    assert q["significant"].all() and (q["verdict"] == "worse").all()
    assert q["diff_pct"].to_numpy() == pytest.approx(-50.0)
    assert not g[g["protocol"] != "qtp"]["significant"].any()  # unchanged data: no difference
    assert "Differences (significant first)" in out.markdown.read_text()
    assert out.html.read_text().count("data:image/png;base64,") == 1


def test_compare_with_itself_and_disjoint_grids(dumbbell_run, hubs_run, tmp_path):
    same = compare_runs(dumbbell_run, dumbbell_run, tmp_path / "same")
    t = pd.read_csv(same.csv[0])
    assert len(t) and not t["significant"].any() and (t["diff"] == 0).all()
    other = compare_runs(dumbbell_run, hubs_run, tmp_path / "other")
    assert "No condition × protocol is present in both runs" in other.markdown.read_text()


def test_metadata_variants_are_tolerated(tmp_path, dumbbell_run):
    """Older/partial metadata: no topology, fidelity check skipped, links as a plain list."""
    run = tmp_path / "r"
    shutil.copytree(dumbbell_run, run)
    meta = json.loads((run / "metadata.json").read_text())
    meta.update(topology=None, fidelity_check={"skipped": "--no-check"}, status="partial")
    failed = {**json.loads((run / "metadata.json").read_text())["fidelity_check"], "passed": False}
    meta.pop("grid_keys")
    (run / "metadata.json").write_text(json.dumps(meta))
    out = build_report(run, tmp_path / "out")
    md = out.markdown.read_text()
    assert "skipped (--no-check)" in md and "Status **partial**" in md
    assert "topology" not in _figs(out)
    assert len(pd.read_csv(out.summary)) == 12  # grid columns still found without grid_keys
    meta["fidelity_check"] = failed
    (run / "metadata.json").write_text(json.dumps(meta))
    assert "Fidelity check: **FAILED**" in build_report(run, tmp_path / "out2").markdown.read_text()


def test_variant_is_flow_label_else_protocol_and_cc(tmp_path, dumbbell_run):
    from testbed.report.load import load_run

    run = tmp_path / "r"
    shutil.copytree(dumbbell_run, run)
    res = pd.read_csv(run / "results.csv")
    res["label"] = np.where(res["protocol"] == "qtp", "qtp-8MB", "")
    res.loc[(res["protocol"] == "tcp") & (res["flow"] == 1), "cc"] = "bbr"
    res.to_csv(run / "results.csv", index=False)
    variants = set(load_run(run).results["variant"])
    assert variants == {"qtp-8MB", "tcp/cubic", "tcp/bbr", "aioquic"}


def test_bottleneck_sharing_needs_overlap():
    from testbed.report.analysis import _sharing_flows

    df = pd.DataFrame(
        {
            "trial": ["t"] * 4,
            "configured_rate_mbps": [20.0] * 3 + [50.0],
            "configured_owd_ms": [10.0] * 4,
            "start_s": [0.0, 0.5, 3.0, 0.0],
            "fct_s": [1.0, 1.0, 1.0, 5.0],
        }
    )
    # flows 0 and 1 overlap on the 20 Mbit/s path; flow 2 runs after them; flow 3 is on another path
    assert _sharing_flows(df).tolist() == [2, 2, 1, 1]


REAL_RUN = Path(__file__).parent / "data" / "quick-compare"


def test_report_of_a_real_run_directory(tmp_path):
    """A run directory written by `testbed run` (experiments/quick-compare.yaml, 1 repetition,
    qtp and tcp one after another over a 20 Mbit/s, 10 ms dumbbell at 0 and 1 % loss)."""
    out = build_report(REAL_RUN, tmp_path)
    md = out.markdown.read_text()
    for s in SECTIONS:
        assert s in md, s
    figs = _figs(out)
    assert {"goodput_vs_loss", "throughput_time", "owd_cdf", "throughput_delay", "fct"} <= figs
    assert "fairness_time" not in figs  # the two flows ran one after another
    assert "hub_heatmap" not in figs
    summary = pd.read_csv(out.summary).set_index(["bottleneck.loss_pct", "variant"])
    assert len(summary) == 4 and (summary["n"] == 1).all()
    # sequential flows each had the whole 20 Mbit/s: TTR a little above 1 for the lossless runs
    assert summary.loc[(0, "qtp"), "ttr"] == pytest.approx(1.1, abs=0.1)
    assert summary.loc[(0, "tcp"), "ttr"] == pytest.approx(1.1, abs=0.1)
    assert summary.loc[(1, "tcp"), "goodput_mbps"] < summary.loc[(1, "qtp"), "goodput_mbps"]
    assert "CI undefined (n<2)" in md  # one repetition: no verdicts
    assert "bw_mbps=20, delay_ms=10, loss_pct=1" in md


def test_duration_flows_use_window_goodput_and_grid_keys(tmp_path):
    run = write_synthetic_run(
        tmp_path / "w",
        SyntheticSpec(protocols=("qtp", "tcp"), losses=(0.0,), delays_ms=(10.0,), reps=2, flows=2, probes=20),
    )
    res = pd.read_csv(run / "results.csv")
    res.insert(res.columns.get_loc("goodput_mbps") + 1, "window_goodput_mbps", res["goodput_mbps"] / 2)
    res.to_csv(run / "results.csv", index=False)
    out = build_report(run, tmp_path / "out")
    summary = pd.read_csv(out.summary).set_index("variant")
    expected = res.groupby(["protocol", "rep"])["window_goodput_mbps"].mean().groupby(level=0).mean()
    assert summary.loc["qtp", "goodput_mbps"] == pytest.approx(expected["qtp"])
    assert "window goodput" in out.markdown.read_text()
    # metadata grid_keys decide the grid: the new measurement column is no grid column
    assert set(summary["condition"]) == {"loss_pct=0, delay_ms=10"}


def test_report_of_a_real_hubs_run(tmp_path):
    """`testbed run experiments/hubs-demo.yaml --repeat 1`: 4 hubs of 2 operators, intra vs cross
    paths between the same sites, qtp and tcp one after another (probes trimmed to 150 per phase)."""
    out = build_report(Path(__file__).parent / "data" / "hubs-demo", tmp_path)
    assert {"hub_heatmap", "owd_cdf", "throughput_delay"} <= _figs(out)
    paths = pd.read_csv(out.csv[1])
    assert sorted(paths["path_kind"]) == ["cross", "cross", "intra", "intra"]
    assert set(paths["condition"]) == {"all"}  # grid_keys = []: one condition
    checks = pd.read_csv(out.csv[2])
    # every cross path is compared with the intra path between the same sites (site from the topology)
    rel = checks[checks["check"] == "cross latency ≤ 1.25 × intra"].set_index("src")
    intra = paths[paths["path_kind"] == "intra"].set_index("src")["idle_owd_ms"]
    assert rel.loc["zjk-ct", "limit"] == pytest.approx(1.25 * intra["zjk-ct"])
    assert rel.loc["yrd-cm", "limit"] == pytest.approx(1.25 * intra["yrd-cm"])
    circle = checks[checks["check"] == "inter_hub one-way latency"]
    assert len(circle) == 4 and (circle["passed"] == (circle["value"] <= 20)).all()
    # protocols are compared per path in runs with operators
    summary = pd.read_csv(out.summary)
    assert len(summary) == 8 and set(summary["path"]) == set(paths["src"] + " → " + paths["dst"])
    verdicts = pd.read_csv(out.csv[3])
    assert len(verdicts) == 4 and (verdicts["goodput_mbps_verdict"] == "CI undefined (n<2)").all()


def test_unwritable_output_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TestbedError, match="cannot write the report"):
        build_report(REAL_RUN, blocker / "out")


def test_machine_noise_line_counts_noisy_trials():
    df = pd.DataFrame({"trial": ["t1", "t1", "t2", "t3"], "machine_steal_pct": [0.2, 0.2, 3.0, 0.1],
                       "machine_late_p99_ms": [0.2, 0.2, 0.3, 0.8]})  # fmt: skip
    line = an.machine_noise(df)
    assert line is not None
    assert "2 of 3 trials on a noisy machine" in line and "max 3.0 %" in line and "max 0.80 ms" in line
    assert an.machine_noise(df.assign(machine_steal_pct=float("nan"))) is None
    assert an.machine_noise(df.drop(columns=["machine_late_p99_ms"])) is None
