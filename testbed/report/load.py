"""Read and validate a run directory (docs/results-format.md) into DataFrames.

Errors name the file and what is wrong, as one line (TestbedError), so `testbed report` never
shows a traceback for a bad or incomplete run directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import TestbedError
from ..runformat import NUMERIC_RESULT_COLUMNS, STANDARD_RESULT_COLUMNS

REQUIRED_RESULTS = ("trial", "point", "rep", "protocol", "goodput_mbps")
STANDARD_COLUMNS = STANDARD_RESULT_COLUMNS
NUMERIC = NUMERIC_RESULT_COLUMNS
DERIVED = (
    "variant",
    "flag_list",
    "bottleneck_flows",
    "goodput_total_mbps",
    "goodput_is_window",
)  # added by the report, never grid columns
# Grid keys that select the protocol rather than the network condition.
PROTOCOL_KEYS = {"protocol", "protocols", "cc", "congestion_control"}


@dataclass
class Run:
    """One run directory: its tables (None when the optional file is absent) and metadata."""

    path: Path
    metadata: dict[str, Any]
    results: pd.DataFrame
    timeseries: pd.DataFrame | None = None
    probes: pd.DataFrame | None = None
    grid_cols: list[str] = field(default_factory=list)  # all grid columns
    condition_cols: list[str] = field(default_factory=list)  # grid columns minus protocol choice
    topology: Any = None  # TopologySpec rebuilt from metadata.topology, when possible

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or self.path.name)


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TestbedError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise TestbedError(f"{path}: missing column(s) {', '.join(missing)} (see docs/results-format.md)")
    return df


def _bool(series: pd.Series) -> pd.Series:
    return series.astype(str).str.strip().str.lower().isin(("true", "1", "yes"))


def load_run(run_dir: str | Path) -> Run:
    """Load a run directory; raises TestbedError naming the missing/invalid directory or file."""
    path = Path(run_dir)
    if not path.exists():
        raise TestbedError(f"{path}: run directory not found")
    if not path.is_dir():
        raise TestbedError(f"{path}: not a directory (expected a run directory)")
    meta_path = path / "metadata.json"
    if not meta_path.is_file():
        raise TestbedError(f"{meta_path}: missing (not a run directory?)")
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TestbedError(f"{meta_path}: invalid JSON ({exc})") from None
    if not isinstance(metadata, dict):
        raise TestbedError(f"{meta_path}: expected a JSON object")
    res_path = path / "results.csv"
    if not res_path.is_file():
        raise TestbedError(f"{res_path}: missing (no trial finished yet?)")
    raw = _read_csv(res_path, REQUIRED_RESULTS)
    if raw.empty:
        raise TestbedError(f"{res_path}: no rows (no trial has finished yet)")
    results = _prepare_results(raw)
    ts = probes = None
    if (path / "timeseries.csv").is_file():
        ts = _read_csv(path / "timeseries.csv", ("trial", "flow", "protocol", "t_s", "mbps"))
    if (path / "probes.csv").is_file():
        probes = _read_csv(path / "probes.csv", ("trial", "src", "dst", "phase", "seq", "owd_ms"))
        probes["owd_ms"] = pd.to_numeric(probes["owd_ms"], errors="coerce")
    keys = metadata.get("grid_keys")
    if isinstance(keys, list) and all(str(k) in results.columns for k in keys):
        grid = [str(k) for k in keys]  # what the runner says the grid is
    else:  # older or foreign run dirs: every column the format does not define
        grid = [
            c
            for c in results.columns
            if c not in STANDARD_COLUMNS and c not in DERIVED and not c.startswith("_")
        ]
    cond = [c for c in grid if c.split(".")[-1] not in PROTOCOL_KEYS]
    run = Run(path, metadata, results, ts, probes, grid, cond)
    run.topology = load_topology_spec(run)
    return run


def _prepare_results(df: pd.DataFrame) -> pd.DataFrame:
    """Fill optional columns, coerce types and add derived columns (``variant``, ``flag_list``)."""
    df = df.copy()
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else np.nan
    for col in ("cc", "src", "dst", "path_kind", "src_operator", "dst_operator", "flags", "error"):
        df[col] = df[col].astype("string").fillna("").astype(str) if col in df else ""
    # duration flows (duration_s set): the goodput that matters is the runner's window goodput over
    # the first duration_s, while all competing flows still send; the whole-transfer one stays as
    # goodput_total_mbps
    df["goodput_total_mbps"] = df["goodput_mbps"]
    if "window_goodput_mbps" in df:
        window = pd.to_numeric(df["window_goodput_mbps"], errors="coerce")
        df["goodput_mbps"] = window.fillna(df["goodput_mbps"])
        df["goodput_is_window"] = window.notna()
    else:
        df["goodput_is_window"] = False
    df["ok"] = _bool(df["ok"]) if "ok" in df else True
    df["cpu_limited"] = _bool(df["cpu_limited"]) if "cpu_limited" in df else False
    df["protocol"] = df["protocol"].astype(str)
    if "flow" not in df or df["flow"].isna().all():
        df["flow"] = 0
    df["rep"] = df["rep"].fillna(0).astype(int)
    df["point"] = df["point"].fillna(0).astype(int)
    # what the report compares: the flow's label when the spec gave one, else protocol, with /cc
    # only when one protocol runs with several congestion controllers
    multi_cc = df.groupby("protocol")["cc"].nunique()
    labels = df["label"].astype("string").fillna("").astype(str).str.strip() if "label" in df else None
    df["variant"] = [
        (lb if labels is not None and lb else f"{p}/{c}" if c and multi_cc.get(p, 0) > 1 else p)
        for p, c, lb in zip(
            df["protocol"], df["cc"], labels if labels is not None else [""] * len(df), strict=True
        )
    ]
    flags = df["flags"].str.split(";").apply(lambda xs: [x.strip() for x in xs if x.strip()])
    extra = np.where(df["cpu_limited"], "cpu_limited", "")
    extra2 = np.where(~df["ok"], "failed", "")
    df["flag_list"] = [
        sorted(set(f) | ({e} if e else set()) | ({e2} if e2 else set()))
        for f, e, e2 in zip(flags, extra, extra2, strict=True)
    ]
    return df


def load_topology_spec(run: Run) -> Any:
    """Rebuild the run's TopologySpec (for the picture and node attributes) from metadata.topology:
    an embedded ``spec`` mapping, else the built-in name or spec file with the recorded params.
    None when the topology package is missing or nothing loads (the report then does without)."""
    topo = run.metadata.get("topology") or {}
    if not isinstance(topo, dict):
        return None
    try:
        from ..topology import spec as tspec
    except ImportError:
        return None
    params = topo.get("params") if isinstance(topo.get("params"), dict) else None
    attempts: list = []
    if isinstance(topo.get("spec"), dict):
        attempts.append(lambda: tspec.topology_from_dict(topo["spec"], str(run.path / "metadata.json")))
    for ref in (topo.get("name"), topo.get("source")):
        if isinstance(ref, str) and ref:
            attempts.append(lambda ref=ref: tspec.load_topology(ref, params=params))
    for attempt in attempts:
        try:
            return attempt()
        except Exception:
            continue
    return None


def topology_nodes(run: Run) -> dict[str, dict[str, Any]]:
    """Node attributes (kind, operator, site, lat, lon): metadata.topology.nodes when it is a
    mapping (or a list of objects with a name), else the rebuilt TopologySpec; {} otherwise."""
    nodes = (run.metadata.get("topology") or {}).get("nodes")
    if isinstance(nodes, dict):
        return {str(k): v for k, v in nodes.items() if isinstance(v, dict)}
    if isinstance(nodes, list):
        return {str(n["name"]): n for n in nodes if isinstance(n, dict) and "name" in n}
    spec = run.topology
    if spec is not None and hasattr(spec, "nodes"):
        return {
            name: {"kind": n.kind, "operator": n.operator, "site": n.site, "lat": n.lat, "lon": n.lon}
            for name, n in spec.nodes.items()
        }
    return {}
