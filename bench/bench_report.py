"""Benchmark of report generation; writes bench/results/report.md.

Run: `python bench/bench_report.py` (about a minute). Writes a synthetic 100-grid-point run
directory (5 loss values × 5 delays × 4 protocols, 2 repetitions, 2 concurrent flows, probes and
time series) and times `build_report` and `compare_runs` on it, plus a small hubs run.
Target: a 100-grid-point run renders in under 30 s on the project's 2-core machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.report import build_report, compare_runs  # noqa: E402
from testbed.report.synthetic import HUBS as HUBS_NODES  # noqa: E402
from testbed.report.synthetic import SyntheticSpec, write_synthetic_run  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "report.md"
TARGET_S = 30.0
GRID_100 = SyntheticSpec(
    kind="dumbbell",
    protocols=("qtp", "tcp", "tcp-tls", "aioquic"),
    losses=(0.0, 0.1, 0.5, 1.0, 2.0),
    delays_ms=(5.0, 10.0, 20.0, 40.0, 80.0),
    reps=2,
    flows=2,
    probes=100,
    size_bytes=5_000_000,
    seed=1,
    name="grid100",
)
HUBS = SyntheticSpec(
    kind="hubs", protocols=("qtp", "tcp", "aioquic"), reps=3, probes=200, seed=2, name="hubs"
)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def timed(fn) -> tuple[object, float, float]:
    """(result, wall seconds, CPU seconds of this process)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        tmp = Path(tmp)
        pairs = len(HUBS_NODES) * (len(HUBS_NODES) - 1) // 2
        for label, spec in (("100 grid points (dumbbell)", GRID_100), (f"hubs ({pairs} hub pairs)", HUBS)):
            run, gen_s, _ = timed(lambda spec=spec: write_synthetic_run(tmp / spec.name, spec))
            size_mb = sum(f.stat().st_size for f in run.glob("*.csv")) / 1e6
            load = loadavg()
            rep, wall, cpu = timed(lambda run=run, spec=spec: build_report(run, tmp / f"{spec.name}-report"))
            rows.append(
                (
                    f"build_report: {label}",
                    f"{size_mb:.1f} MB CSV, {len(rep.figures)} figures",
                    wall,
                    cpu,
                    load,
                )
            )
            print(
                f"{label}: generated in {gen_s:.1f} s; report {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True
            )
        b = tmp / "grid100-b"
        write_synthetic_run(b, SyntheticSpec(**{**GRID_100.__dict__, "seed": 9}))
        load = loadavg()
        _, wall, cpu = timed(lambda: compare_runs(tmp / "grid100", b, tmp / "cmp"))
        rows.append(("compare_runs: 100 grid points × 2 runs", "", wall, cpu, load))
    ok = rows[0][2] < TARGET_S
    lines = [
        "# Report generation benchmark",
        "",
        f"`python bench/bench_report.py` on {os.cpu_count()} CPUs. Target: a 100-grid-point run renders in "
        f"< {TARGET_S:.0f} s. Result: **{'met' if ok else 'NOT met'}** ({rows[0][2]:.1f} s).",
        "Wall time includes reading the CSVs, bootstrap CIs, verdicts, figures and writing the files; the "
        "machine is shared, so the load average at the start of each step is given.",
        "",
        "| step | data | wall s | CPU s | load avg |",
        "|---|---|---|---|---|",
        *[f"| {a} | {b} | {w:.1f} | {c:.1f} | {lo} |" for a, b, w, c, lo in rows],
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
