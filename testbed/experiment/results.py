"""The run directory (docs/results-format.md): trials written atomically, tables rebuilt from them.

A trial is done when `trials/<trial>/done.json` exists; it is written last, after the trial's
rows, series and probes. `results.csv`, `timeseries.csv` and `probes.csv` are always rebuilt
from the done trials, so a resumed run never duplicates or loses rows.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..metrics import stats
from ..runformat import (  # noqa: F401 - re-exported for the runner
    PROBE_COLUMNS,
    RESULT_COLUMNS_HEAD,
    RESULT_COLUMNS_TAIL,
    TIMESERIES_COLUMNS,
    result_columns,
)

SUMMARY_METRICS = [("goodput_mbps", True), ("fct_s", False), ("owd_p95_ms", False), ("loaded_rtt_ms", False)]


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers and resumes never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _jsonable(obj.item())
    return obj


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def new_run_dir(name: str, root: str | Path = "results") -> Path:
    """results/<name>-<YYYYmmdd-HHMMSS>/ (a suffix keeps two runs in one second apart)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{name}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def trial_dir(run_dir: Path, trial: str) -> Path:
    path = Path(run_dir) / "trials" / trial
    path.mkdir(parents=True, exist_ok=True)
    return path


def done_trials(run_dir: Path) -> set[str]:
    root = Path(run_dir) / "trials"
    return {p.parent.name for p in root.glob("*/done.json")} if root.exists() else set()


def save_trial(tdir: Path, rows: list[dict], series: pd.DataFrame, probes: pd.DataFrame, info: dict) -> None:
    """The trial's tables, then done.json last (atomically): only then the trial counts."""
    write_json(tdir / "rows.json", rows)
    write_atomic(tdir / "timeseries.csv", series.to_csv(index=False))
    write_atomic(tdir / "probes.csv", probes.to_csv(index=False))
    write_json(tdir / "trial.json", info)
    write_json(
        tdir / "done.json",
        {"trial": info.get("trial"), "ended": datetime.now().astimezone().isoformat(), "rows": len(rows)},
    )


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    df = pd.concat(frames, ignore_index=True)
    return df[[c for c in columns if c in df] + [c for c in df if c not in columns]]


def rebuild_tables(run_dir: Path, grid_keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """results.csv, timeseries.csv, probes.csv from the done trials, in execution order."""
    run_dir = Path(run_dir)
    rows, series, probes = [], [], []
    for trial in sorted(done_trials(run_dir)):
        tdir = run_dir / "trials" / trial
        rows.extend(read_json(tdir / "rows.json", []))
        for name, bucket in (("timeseries.csv", series), ("probes.csv", probes)):
            path = tdir / name
            if path.exists() and path.stat().st_size > 1:
                try:
                    bucket.append(pd.read_csv(path))
                except pd.errors.EmptyDataError:
                    pass
    columns = result_columns(grid_keys)
    results = pd.DataFrame(rows, columns=columns) if rows else pd.DataFrame(columns=columns)
    if not results.empty:
        results = results.sort_values(["order", "flow"], kind="stable").reset_index(drop=True)
    ts = _concat(series, TIMESERIES_COLUMNS)
    pr = _concat(probes, PROBE_COLUMNS)
    write_atomic(run_dir / "results.csv", results.to_csv(index=False))
    write_atomic(run_dir / "timeseries.csv", ts.to_csv(index=False))
    write_atomic(run_dir / "probes.csv", pr.to_csv(index=False))
    return results, ts, pr


# --------------------------------------------------------------------------- summary


def flow_key(df: pd.DataFrame) -> pd.Series:
    """A readable name per flow spec: `qtp/bbr`, its label if it has one, `src>dst` when the run
    has several paths, and `#<spec index>` when that still is ambiguous."""
    named = df["protocol"].astype(str) + "/" + df["cc"].astype(object).fillna("").astype(str)
    if "label" in df:
        label = df["label"].astype(object).fillna("").astype(str)
        named = named.where(label == "", label)
    if {"src", "dst"} <= set(df.columns) and df[["src", "dst"]].drop_duplicates().shape[0] > 1:
        named = named + " " + df["src"].astype(str) + ">" + df["dst"].astype(str)
    if "flow_spec" in df:
        per_key = df.groupby(named)["flow_spec"].nunique()
        ambiguous = named.map(per_key).fillna(1) > 1
        named = named.where(~ambiguous, named + "#" + df["flow_spec"].astype(str))
    return named


def summarize(
    results: pd.DataFrame, grid_keys: list[str], seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per grid point and flow: n, mean, median, p95 and bootstrap CI of the main metrics; and,
    per grid point and path, the paired comparison (ratio of means, paired by repetition) of
    every flow against the path's first flow in spec order."""
    if results.empty:
        return pd.DataFrame(), pd.DataFrame()
    df = results.copy()
    df["flow_name"] = flow_key(df)
    if "ok" in df:  # a failed transfer's goodput says nothing about the protocol: counted apart
        df = df[df["ok"].astype(str).str.lower() == "true"]
        if df.empty:
            return pd.DataFrame(), pd.DataFrame()
    by = ["point", *grid_keys, "flow_name"]
    parts = []
    for metric, _ in SUMMARY_METRICS:
        if metric in df and pd.to_numeric(df[metric], errors="coerce").notna().any():
            df[metric] = pd.to_numeric(df[metric], errors="coerce")
            part = stats.summarize_groups(df, by, metric, seed=seed)
            part.insert(len(by), "metric", metric)
            parts.append(part)
    summary = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    comps = []
    for (point, _src, _dst), group in df.groupby(["point", "src", "dst"], sort=True):
        names = list(dict.fromkeys(group.sort_values("flow_spec")["flow_name"]))
        for metric, higher in SUMMARY_METRICS[:2]:
            if len(names) < 2 or metric not in group:
                continue
            per = group.groupby(["flow_name", "rep"])[metric].mean()
            present = set(per.index.get_level_values(0))
            if names[0] not in present:
                continue
            for other in names[1:]:
                if other in present:
                    c = stats.paired_ratio(
                        per.loc[other], per.loc[names[0]], higher_is_better=higher, seed=seed
                    )
                    comps.append(
                        {
                            "point": point,
                            **{k: group[k].iloc[0] for k in grid_keys},
                            "metric": metric,
                            "a": other,
                            "b": names[0],
                            **c.as_dict(),
                        }
                    )
    return summary, pd.DataFrame(comps)


def format_summary(summary: pd.DataFrame, comparisons: pd.DataFrame, grid_keys: list[str]) -> str:
    """Plain-text tables for the terminal and summary.txt."""
    if summary.empty:
        return "no completed flows"
    lines = []
    keep = summary[summary["metric"].isin(["goodput_mbps", "fct_s"])]
    for point, group in keep.groupby("point", sort=True):
        values = ", ".join(f"{k}={group[k].iloc[0]}" for k in grid_keys) or "single point"
        lines.append(f"point {point}: {values}")
        for _, r in group.iterrows():
            ci = f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}]" if pd.notna(r["ci_low"]) else "[n<2]"
            lines.append(
                f"  {r['flow_name']:<22} {r['metric']:<13} n={int(r['n'])} mean={r['mean']:.4g} "
                f"median={r['median']:.4g} p95={r['p95']:.4g} 95%CI={ci}"
            )
        if not comparisons.empty:
            for _, c in comparisons[comparisons["point"] == point].iterrows():
                ci = f"[{c['ci_low']:.3g}, {c['ci_high']:.3g}]" if pd.notna(c["ci_low"]) else "[n<2]"
                lines.append(
                    f"  {c['a']} vs {c['b']}: {c['metric']} ratio {c['estimate']:.3g} {ci} -> {c['verdict']}"
                )
    return "\n".join(lines)


# --------------------------------------------------------------------------- run listing


@dataclass
class RunResult:
    """What `run()` returns: the run directory and its tables as pandas frames."""

    run_dir: Path
    results: pd.DataFrame
    timeseries: pd.DataFrame
    probes: pd.DataFrame
    metadata: dict[str, Any] = field(default_factory=dict)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)
    report: Path | None = None

    @property
    def complete(self) -> bool:
        return self.metadata.get("status") == "complete"


def load_run(run_dir: str | Path) -> RunResult:
    """Read a finished (or partial) run directory back into frames."""
    run_dir = Path(run_dir)
    meta = read_json(run_dir / "metadata.json", {}) or {}

    def csv(name: str) -> pd.DataFrame:
        try:
            return pd.read_csv(run_dir / name)
        except (OSError, pd.errors.EmptyDataError):
            return pd.DataFrame()

    return RunResult(run_dir, csv("results.csv"), csv("timeseries.csv"), csv("probes.csv"), meta)


def list_runs(root: str | Path = "results") -> list[dict[str, Any]]:
    """Runs under `root` (directories with metadata.json): status, trials done/total, times."""
    out = []
    root = Path(root)
    candidates = (
        [root] if (root / "metadata.json").exists() else sorted(p for p in root.glob("*") if p.is_dir())
    )
    for path in candidates:
        meta = read_json(path / "metadata.json")
        if not isinstance(meta, dict):
            continue
        total = (meta.get("trials") or {}).get("total")
        done = len(done_trials(path))
        status = meta.get("status", "?")
        if status == "running" and not _alive(meta.get("pid")):
            status = "partial"
        if total is not None and done >= total and status != "running":
            status = "complete"
        out.append(
            {
                "run": str(path),
                "name": meta.get("name", path.name),
                "status": status,
                "done": done,
                "total": total,
                "started": meta.get("started"),
                "ended": meta.get("ended"),
            }
        )
    return out


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
