"""Numbers of the report: per-path grades, per-protocol RFC 6349 figures with CIs, verdicts.

Pure pandas over a loaded Run; every grade comes from testbed.metrics. Tables keep raw floats;
rendering (rounding, CI brackets, flag marks) happens in render.py.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..metrics import qos, stats
from ..runformat import NOISY_LATE_P99_MS, NOISY_STEAL_PCT
from .load import Run, topology_nodes

FLAG_MARK = "⚠"


def condition_label(row: pd.Series | dict, cols: list[str]) -> str:
    """ "key=value, ..." of the network condition (grid minus protocol choice); "all" if none.
    Keys lose their link prefix ("bottleneck.loss_pct" -> "loss_pct") when that stays unambiguous."""
    if not cols:
        return "all"
    tails = [c.split(".")[-1] for c in cols]
    names = tails if len(set(tails)) == len(tails) else cols
    return ", ".join(f"{n}={_short(row[c])}" for n, c in zip(names, cols, strict=True))


def conditions_in_order(s: pd.Series) -> list[str]:
    """The conditions present in ``s``, in grid order (categorical order), else sorted."""
    present = set(s.dropna().astype(str))
    if isinstance(s.dtype, pd.CategoricalDtype):
        return [c for c in s.cat.categories if c in present]
    return sorted(present)


def _short(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def flag_counts(flag_lists: pd.Series) -> str:
    """ "cpu_limited×3; failed×1" from a column of flag lists ("" when none)."""
    c = Counter(f for fl in flag_lists for f in fl)
    return "; ".join(f"{k}×{v}" for k, v in sorted(c.items()))


def machine_noise(df: pd.DataFrame) -> str | None:
    """One line on the machine's own noise over the trials (None when the run did not record it):
    on a noisy machine measured delays include the machine's lateness, not only the network's."""
    cols = ["machine_steal_pct", "machine_late_p99_ms"]
    if not set(cols) <= set(df.columns):
        return None
    trials = df.groupby("trial")[cols].first().apply(pd.to_numeric, errors="coerce").dropna()
    if trials.empty:
        return None
    steal, late = trials["machine_steal_pct"], trials["machine_late_p99_ms"]
    noisy = int(((steal >= NOISY_STEAL_PCT) | (late >= NOISY_LATE_P99_MS)).sum())
    return (
        f"hypervisor steal per trial median {steal.median():.1f} % (max {steal.max():.1f} %); real-time "
        f"wake-ups late by p99 median {late.median():.2f} ms (max {late.max():.2f} ms); {noisy} of "
        f"{len(trials)} trials on a noisy machine (steal ≥ {NOISY_STEAL_PCT:g} % or p99 ≥ "
        f"{NOISY_LATE_P99_MS:g} ms): their delays include up to that much of the machine's own lateness"
    )


def add_row_metrics(run: Run) -> pd.DataFrame:
    """results.csv plus per-flow RFC 6349 (TTR, efficiency, buffer delay) and RPM columns."""
    df = run.results.copy()
    df["condition"] = (
        [
            condition_label(dict(zip(run.condition_cols, vals, strict=True)), run.condition_cols)
            for vals in df[run.condition_cols].itertuples(index=False)
        ]
        if run.condition_cols
        else "all"
    )
    # grid order (numeric where the grid is numeric), not the labels' alphabetical order
    order = _grid_order(df, run.condition_cols) if run.condition_cols else ["all"]
    df["condition"] = pd.Categorical(df["condition"], categories=order, ordered=True)
    # protocols are compared per condition, and per path (src → dst) in operator-aware (hub) runs,
    # whose paths differ in RTT; dumbbell flows are replicas of one path and pooled
    hub_run = (df["path_kind"] != "").any()
    df["path"] = (df["src"] + " → " + df["dst"]) if hub_run else ""
    scope = [
        c if not p else p if c == "all" else f"{c} · {p}"
        for c, p in zip(df["condition"].astype(str), df["path"], strict=True)
    ]
    scope_order = list(
        dict.fromkeys(
            sc
            for _, sc in sorted(
                zip(df["condition"].cat.codes, scope, strict=True), key=lambda x: (x[0], x[1])
            )
        )
    )
    df["scope"] = pd.Categorical(scope, categories=scope_order, ordered=True)
    if "bottleneck_flows" not in df or df["bottleneck_flows"].isna().all():
        df["bottleneck_flows"] = _sharing_flows(df)
    size = df["bytes"].where(df["bytes"] > 0, df["size_bytes"])
    df["ttr"] = [
        qos.transfer_time_ratio(f, s, r / max(n, 1), qos.transport_of(p))
        for f, s, r, n, p in zip(
            df["fct_s"], size, df["configured_rate_mbps"], df["bottleneck_flows"], df["protocol"], strict=True
        )
    ]
    # RFC 6349 efficiency from byte counts where the protocol reported both, else from packets;
    # an unknown retransmission count is never taken as zero.
    resent = df["retransmits"].where(df["retransmits"].notna(), df["packets_lost"])
    by_bytes = df["bytes_sent"].notna() & df["bytes_retransmitted"].notna()
    df["efficiency_pct"] = [
        qos.efficiency_pct(bs, br) if use_bytes else qos.efficiency_pct(ps, rs)
        for use_bytes, bs, br, ps, rs in zip(
            by_bytes, df["bytes_sent"], df["bytes_retransmitted"], df["packets_sent"], resent, strict=True
        )
    ]
    loaded = df["loaded_rtt_ms"].where(df["loaded_rtt_ms"].notna(), df["rtt_smoothed_ms"])
    base = df["base_rtt_ms"].where(df["base_rtt_ms"].notna(), df["rtt_min_ms"])
    df["buffer_delay_pct"] = [qos.buffer_delay_pct(lo, b) for lo, b in zip(loaded, base, strict=True)]
    df["rpm"] = [qos.rpm(x) for x in loaded]
    df["rpm_share"] = [qos.rpm_grade(lo, b)[0] for lo, b in zip(loaded, base, strict=True)]
    return df


def _grid_order(df: pd.DataFrame, cols: list[str]) -> list[str]:
    """Condition labels sorted by their grid values (numbers numerically; mixed columns as text)."""
    first = df.drop_duplicates("condition")
    try:
        return first.sort_values(cols)["condition"].tolist()
    except TypeError:  # a column mixing numbers and text
        return first.sort_values(cols, key=lambda s: s.astype(str))["condition"].tolist()


def _sharing_flows(df: pd.DataFrame) -> pd.Series:
    """Flows sharing each flow's bottleneck, for the RFC 6349 ideal rate: flows of the same trial with
    the same configured rate and delay (a dumbbell; hub pairs on different paths differ) whose
    [start, start + FCT] intervals overlap this flow's (sequential flows do not share)."""
    out = pd.Series(1, index=df.index, dtype=float)
    keys = ["trial", "configured_rate_mbps", "configured_owd_ms"]
    for _, g in df.groupby(keys, dropna=False, sort=False):
        if len(g) < 2:
            continue
        start = g["start_s"].fillna(0).to_numpy(float)
        end = start + g["fct_s"].fillna(np.inf).to_numpy(float)
        overlap = (start[:, None] < end[None, :]) & (start[None, :] < end[:, None])
        out[g.index] = overlap.sum(axis=1)
    return out


# ----------------------------------------------------------------------------- paths


@dataclass
class PathTables:
    table: pd.DataFrame  # one row per path × condition
    checks: pd.DataFrame  # one row per path × condition × policy check


def _idle_probe_stats(run: Run) -> pd.DataFrame | None:
    """Idle-phase one-way delay and loss per (trial, src, dst) from probes.csv, when present."""
    p = run.probes
    if p is None or p.empty or "phase" not in p:
        return None
    idle = p[p["phase"].astype(str) == "idle"]
    if idle.empty:
        return None
    rows = []
    for (trial, src, dst), g in idle.groupby(["trial", "src", "dst"], sort=False):
        owd = g["owd_ms"].to_numpy(float)
        rows.append(
            {
                "trial": trial,
                "src": src,
                "dst": dst,
                "idle_owd_ms": float(np.median(qos.received(owd))) if qos.received(owd).size else np.nan,
                "idle_loss_pct": qos.iplr(owd) * 100,
            }
        )
    return pd.DataFrame(rows)


def path_tables(run: Run, df: pd.DataFrame) -> PathTables:
    """Per path (src → dst, intra/cross) and condition: delay, loss, jitter, goodput and grades."""
    idle = _idle_probe_stats(run)
    if idle is not None:
        df = df.merge(idle, on=["trial", "src", "dst"], how="left")
    else:
        df = df.assign(idle_owd_ms=np.nan, idle_loss_pct=np.nan)
    if "idle_owd_p50_ms" in df:  # without probes.csv: the runner's own idle median
        df["idle_owd_ms"] = df["idle_owd_ms"].fillna(pd.to_numeric(df["idle_owd_p50_ms"], errors="coerce"))
    keys = ["src", "dst", "path_kind", "condition"]
    agg = (
        df.groupby(keys, sort=False, dropna=False)
        .agg(
            n=("trial", "nunique"),
            configured_owd_ms=("configured_owd_ms", "mean"),
            idle_owd_ms=("idle_owd_ms", "mean"),
            idle_loss_pct=("idle_loss_pct", "mean"),
            owd_mean_ms=("owd_mean_ms", "mean"),
            owd_p50_ms=("owd_p50_ms", "mean"),
            owd_p95_ms=("owd_p95_ms", "mean"),
            owd_p99_ms=("owd_p99_ms", "mean"),
            ipdv_ms=("ipdv_ms", "mean"),
            loss_pct=("probe_loss_pct", "mean"),
            jitter_ms=("jitter_ms", "mean"),
            goodput_mbps=("goodput_mbps", "mean"),
            base_rtt_ms=("base_rtt_ms", "mean"),
            loaded_rtt_ms=("loaded_rtt_ms", "mean"),
            flags=("flag_list", flag_counts),
        )
        .reset_index()
    )
    agg["y1541_class"] = [
        qos.y1541_best_class(t, v, lo / 100 if not math.isnan(lo) else math.nan)
        for t, v, lo in zip(agg["owd_mean_ms"], agg["ipdv_ms"], agg["loss_pct"], strict=True)
    ]
    agg["y1541_met"] = [
        ",".join(map(str, qos.y1541_classes_met(t, v, lo / 100)))
        for t, v, lo in zip(agg["owd_mean_ms"], agg["ipdv_ms"], agg["loss_pct"], strict=True)
    ]
    agg["emodel_r"] = [qos.emodel_r(t, lo) for t, lo in zip(agg["owd_mean_ms"], agg["loss_pct"], strict=True)]
    agg["mos"] = agg["emodel_r"].map(qos.mos_from_r)
    agg["g109"] = agg["emodel_r"].map(qos.g109_band)
    agg["g114_ok"] = agg["owd_mean_ms"].map(qos.g114_ok)
    grades = [qos.rpm_grade(lo, b) for lo, b in zip(agg["loaded_rtt_ms"], agg["base_rtt_ms"], strict=True)]
    agg["rpm"] = agg["loaded_rtt_ms"].map(qos.rpm)
    agg["rpm_max"] = agg["base_rtt_ms"].map(qos.rpm_max)
    agg["rpm_band"] = [g[1] for g in grades]
    agg = agg.sort_values(["condition", "src", "dst"], kind="stable").reset_index(drop=True)
    checks = _policy_checks(run, agg)
    summary = checks.groupby(keys, sort=False, dropna=False)["passed"].agg(
        lambda s: "n/a" if s.isna().all() else f"{int(s.eq(True).sum())}/{int(s.notna().sum())}"
    )
    agg = (
        agg.merge(summary.rename("policy").reset_index(), on=keys, how="left")
        if not checks.empty
        else agg.assign(policy="n/a")
    )
    agg["policy"] = agg["policy"].fillna("n/a")
    return PathTables(agg, checks)


CHECK_COLUMNS = [  # checks.csv
    "src", "dst", "path_kind", "condition", "check", "value", "limit", "unit", "passed", "source",
]  # fmt: skip


def _policy_checks(run: Run, agg: pd.DataFrame) -> pd.DataFrame:
    """hubs.md policy checks per path: latency circle between hubs, direct-link bound (when the
    endpoints have coordinates), cross-operator thresholds vs the intra path of the same sites."""
    nodes = topology_nodes(run)
    hub_run = any(str(n.get("kind")) == "hub" for n in nodes.values()) or (agg["path_kind"] != "").any()
    if not hub_run:
        return pd.DataFrame(columns=CHECK_COLUMNS)

    def site(n: str) -> str:
        return str(nodes.get(n, {}).get("site") or n)

    # latency for policies: the idle median one-way delay (a network property, robust to the emulator's
    # scheduling spikes on a busy machine) when measured, else the median under load
    owd = agg["idle_owd_ms"].where(agg["idle_owd_ms"].notna(), agg["owd_p50_ms"])
    loss = agg["idle_loss_pct"].where(agg["idle_loss_pct"].notna(), agg["loss_pct"])
    intra = {
        (site(s), site(d), c): (o, lo)
        for s, d, k, c, o, lo in zip(
            agg["src"], agg["dst"], agg["path_kind"], agg["condition"], owd, loss, strict=True
        )
        if k == "intra"
    }
    rows = []
    for i, r in agg.iterrows():
        checks: list[qos.PolicyCheck] = []
        ns, nd = nodes.get(r["src"], {}), nodes.get(r["dst"], {})
        if site(r["src"]) != site(r["dst"]):
            checks.append(qos.latency_circle_check(owd[i], "inter_hub"))
        if all(isinstance(x.get(k), (int, float)) for x in (ns, nd) for k in ("lat", "lon")):
            km = qos.great_circle_km(ns["lat"], ns["lon"], nd["lat"], nd["lon"])
            if km > 0:
                checks.append(qos.direct_link_check(owd[i], km))
        if r["path_kind"] == "cross":
            ref = intra.get((site(r["src"]), site(r["dst"]), r["condition"])) or intra.get(
                (site(r["dst"]), site(r["src"]), r["condition"])
            )
            checks += qos.cross_operator_checks(owd[i], loss[i], *(ref or (None, None)))
        for c in checks:
            rows.append(
                {
                    "src": r["src"],
                    "dst": r["dst"],
                    "path_kind": r["path_kind"],
                    "condition": r["condition"],
                    "check": c.name,
                    "value": c.value,
                    "limit": c.limit,
                    "unit": c.unit,
                    "passed": c.passed,
                    "source": c.source,
                }
            )
    return pd.DataFrame(
        rows,
        columns=CHECK_COLUMNS,
    )


# ----------------------------------------------------------------------------- protocols

PROTO_METRICS = (
    "goodput_mbps",
    "fct_s",
    "ttr",
    "efficiency_pct",
    "buffer_delay_pct",
    "owd_p95_ms",
    "rpm",
    "fairness",
)
CI_METRICS = ("goodput_mbps", "fct_s")


@dataclass
class ProtocolTables:
    table: pd.DataFrame  # one row per condition × variant
    verdicts: pd.DataFrame  # one row per condition × variant pair
    per_rep: pd.DataFrame = field(default_factory=pd.DataFrame)  # condition × variant × rep means


def per_rep_values(df: pd.DataFrame, cond_cols: list[str]) -> pd.DataFrame:
    """Mean of each metric per (scope, variant, rep): the unit of replication. The scope is the
    condition, plus the path in hub runs (see add_row_metrics)."""
    keys = ["scope", "condition", "path", *cond_cols, "variant", "protocol", "rep"]
    ok = df[df["ok"]]
    out = ok.groupby(keys, sort=True, dropna=False)[list(PROTO_METRICS)].mean().reset_index()
    return out


def protocol_tables(run: Run, df: pd.DataFrame, seed: int = 0) -> ProtocolTables:
    """RFC 6349 figures, goodput and FCT with 95 % bootstrap CIs per condition × variant, and the
    paired verdict for every variant pair at every condition (repetitions paired by rep)."""
    cond_cols = run.condition_cols
    reps = per_rep_values(df, cond_cols)
    rep_groups = dict(iter(reps.groupby(["scope", "variant"], sort=False, observed=True)))
    rows = []
    for (scope, variant), g in df.groupby(["scope", "variant"], sort=True, observed=True):
        r = rep_groups.get((scope, variant), reps.iloc[:0])
        row = {
            "scope": scope,
            "condition": g["condition"].iloc[0],
            "path": g["path"].iloc[0],
            **{c: g[c].iloc[0] for c in cond_cols},
            "variant": variant,
            "protocol": g["protocol"].iloc[0],
            "cc": g["cc"].iloc[0],
            "n": int(r["rep"].nunique()),
            "failed": int((~g["ok"]).sum()),
        }
        for m in PROTO_METRICS:
            row[m] = float(r[m].mean()) if r[m].notna().any() else math.nan
        for m in CI_METRICS:
            row[f"{m}_ci_low"], row[f"{m}_ci_high"], row["ci_method"] = stats.mean_ci(r[m], seed=seed)
        row["flags"] = flag_counts(g["flag_list"])
        rows.append(row)
    table = pd.DataFrame(rows)
    verdicts = _verdicts(reps, cond_cols, seed)
    return ProtocolTables(table, verdicts, reps)


def _verdicts(reps: pd.DataFrame, cond_cols: list[str], seed: int) -> pd.DataFrame:
    rows = []
    for scope, g in reps.groupby("scope", sort=True, observed=True):
        variants = sorted(g["variant"].unique())
        for a, b in itertools.combinations(variants, 2):
            ga = g[g["variant"] == a].set_index("rep")
            gb = g[g["variant"] == b].set_index("rep")
            row = {
                "scope": scope,
                "condition": g["condition"].iloc[0],
                "path": g["path"].iloc[0],
                **{c: g[c].iloc[0] for c in cond_cols},
                "a": a,
                "b": b,
            }
            for m, hib in (("goodput_mbps", True), ("fct_s", False)):
                c = stats.paired_ratio(ga[m], gb[m], higher_is_better=hib, seed=seed)
                row.update(
                    {
                        f"{m}_ratio": c.estimate,
                        f"{m}_ci_low": c.ci_low,
                        f"{m}_ci_high": c.ci_high,
                        f"{m}_verdict": c.verdict,
                        "ci_method": c.method,
                        "n_pairs": c.n,
                    }
                )
            rows.append(row)
    return pd.DataFrame(rows)


def flagged_trials(df: pd.DataFrame) -> pd.DataFrame:
    """Trials with any flag: which flags and which flows/variants they affect."""
    f = df[df["flag_list"].map(len) > 0]
    if f.empty:
        return pd.DataFrame(columns=["trial", "condition", "variant", "flows", "flags"])
    return (
        f.groupby(["trial", "condition", "variant"], sort=True)
        .agg(
            flows=("flow", lambda s: ",".join(str(int(x)) for x in sorted(s.unique()))),
            flags=("flag_list", lambda s: ", ".join(sorted({x for fl in s for x in fl}))),
        )
        .reset_index()
    )
