"""Report figures (matplotlib Agg, PNG). Each function draws only when its data exists and returns
a Figure record, or None. Fonts and line widths are sized to stay legible on paper."""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..metrics import qos, stats
from .analysis import conditions_in_order
from .load import Run

log = logging.getLogger(__name__)

STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "lines.linewidth": 2.0,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
MAX_PANELS = 4


@dataclass
class Figure:
    name: str  # file stem
    title: str
    caption: str
    path: Path


def _colors(variants: list[str]) -> dict[str, str]:
    cmap = plt.get_cmap("tab10")
    return {v: cmap(i % 10) for i, v in enumerate(sorted(variants))}


def _save(fig: plt.Figure, out: Path, name: str) -> Path:
    path = out / f"{name}.png"
    fig.savefig(path, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def _pick(values: list, k: int = MAX_PANELS) -> list:
    """At most k values, evenly spread (first and last kept)."""
    if len(values) <= k:
        return values
    idx = np.unique(np.linspace(0, len(values) - 1, k).round().astype(int))
    return [values[i] for i in idx]


def _panels(n: int, width: float = 5.2, height: float = 3.8):
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _fmt(v: float) -> str:
    return f"{v:g}"


# ----------------------------------------------------------------------------- goodput vs loss / RTT


def goodput_vs(df: pd.DataFrame, out: Path, x: str, seed: int = 0) -> Figure | None:
    """Goodput vs configured loss or RTT per protocol, mean over repetitions with 95 % CI bands;
    one panel per value of the other dimension (at most four)."""
    d = df[df["ok"]].assign(cfg_rtt_ms=2 * df["configured_owd_ms"])
    xcol, other = (
        ("configured_loss_pct", "cfg_rtt_ms") if x == "loss" else ("cfg_rtt_ms", "configured_loss_pct")
    )
    if d[xcol].nunique() < 2:
        return None
    xlabel = "configured loss (%)" if x == "loss" else "configured RTT (ms, 2 × one-way)"
    olabel = "RTT" if x == "loss" else "loss"
    ounit = "ms" if x == "loss" else "%"
    facets = _pick(sorted(d[other].dropna().unique())) or [None]
    colors = _colors(list(d["variant"].unique()))
    fig, axes = _panels(len(facets))
    logy = False
    for ax, fv in zip(axes, facets, strict=True):
        sub = d if fv is None else d[d[other] == fv]
        per_rep = sub.groupby(["variant", xcol, "rep"])["goodput_mbps"].mean().reset_index()
        for variant, g in per_rep.groupby("variant"):
            pts = []
            for xv, gx in g.groupby(xcol):
                lo, hi, _ = stats.mean_ci(gx["goodput_mbps"], seed=seed)
                m = gx["goodput_mbps"].mean()
                pts.append((xv, m, m if math.isnan(lo) else lo, m if math.isnan(hi) else hi))
            a = np.array(pts)
            ax.plot(a[:, 0], a[:, 1], marker="o", color=colors[variant], label=variant)
            ax.fill_between(a[:, 0], a[:, 2], a[:, 3], color=colors[variant], alpha=0.2, linewidth=0)
        vals = sub["goodput_mbps"]
        if len(vals) and vals.min() > 0 and vals.max() / vals.min() > 30:
            ax.set_yscale("log")
            logy = True
        ax.set_xlabel(xlabel)
        ax.set_ylabel("goodput (Mbit/s)")
        if fv is not None and len(facets) > 1:
            ax.set_title(f"{olabel} = {_fmt(fv)} {ounit}")
    axes[0].legend(title="protocol", frameon=False)
    fig.tight_layout()
    name = f"goodput_vs_{x}"
    cap = (
        f"Goodput vs {xlabel}: mean over repetitions, shaded 95 % CI"
        + (", log scale" if logy else "")
        + (f"; panels by {olabel}" if len(facets) > 1 else "")
        + "."
    )
    return Figure(name, f"Goodput vs {'loss' if x == 'loss' else 'RTT'}", cap, _save(fig, out, name))


# ----------------------------------------------------------------------------- time series


def throughput_over_time(df: pd.DataFrame, ts: pd.DataFrame | None, out: Path) -> Figure | None:
    """Receiver throughput (100 ms bins) over time per protocol, mean over repetitions; one panel
    per condition (at most four, evenly chosen)."""
    if ts is None or ts.empty:
        return None
    t = ts.merge(
        df[["trial", "flow", "condition", "variant"]].drop_duplicates(), on=["trial", "flow"], how="inner"
    )
    if t.empty:
        return None
    conds = _pick(conditions_in_order(t["condition"]))
    colors = _colors(list(t["variant"].unique()))
    fig, axes = _panels(len(conds), height=3.4)
    for ax, cond in zip(axes, conds, strict=True):
        sub = t[t["condition"] == cond]
        per_trial = sub.groupby(["variant", "trial", "t_s"])["mbps"].sum().reset_index()
        for variant, g in per_trial.groupby("variant"):
            m = g.groupby("t_s")["mbps"].mean()
            ax.plot(m.index, m.to_numpy(), color=colors[variant], label=variant, linewidth=1.4)
        ax.set_xlabel("time since trial start (s)")
        ax.set_ylabel("throughput (Mbit/s)")
        if len(conds) > 1 or cond != "all":
            ax.set_title(cond, fontsize=10)
    axes[0].legend(title="protocol", frameon=False)
    fig.tight_layout()
    return Figure(
        "throughput_time",
        "Throughput over time",
        "Receiver throughput in 100 ms bins, summed over a protocol's flows in a trial, mean over "
        "repetitions." + _shown(conditions_in_order(t["condition"]), conds),
        _save(fig, out, "throughput_time"),
    )


def fairness_over_time(df: pd.DataFrame, ts: pd.DataFrame | None, out: Path) -> Figure | None:
    """Jain's index across the concurrent flows of a trial per 100 ms bin, mean over trials of the
    same flow mix; drawn only when some trial has two or more flows."""
    if ts is None or ts.empty:
        return None
    nflows = ts.groupby("trial")["flow"].nunique()
    multi = nflows[nflows >= 2].index
    if not len(multi):
        return None
    t = ts[ts["trial"].isin(multi)]
    mix = df[df["trial"].isin(multi)].groupby("trial")["variant"].agg(lambda s: " + ".join(sorted(s)))
    piv = t.pivot_table(index=["trial", "t_s"], columns="flow", values="mbps", aggfunc="sum")
    a = piv.to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.sum(~np.isnan(a), axis=1)
        s = np.nansum(a, axis=1)
        jain = s**2 / (n * np.nansum(a * a, axis=1))
    j = pd.DataFrame(
        {"trial": piv.index.get_level_values(0), "t_s": piv.index.get_level_values(1), "jain": jain}
    )
    j = j[n >= 2]
    if j.empty:  # flows of a trial ran one after another: nothing concurrent to compare
        return None
    j["mix"] = j["trial"].map(mix)
    j["condition"] = j["trial"].map(df.drop_duplicates("trial").set_index("trial")["condition"])
    mixes = sorted(j["mix"].dropna().unique())
    colors = _colors(mixes)
    all_conds = conditions_in_order(j["condition"])
    conds = _pick(all_conds)
    fig, axes = _panels(len(conds), height=3.4)
    for ax, cond in zip(axes, conds, strict=True):
        sub = j[j["condition"] == cond]
        for m in mixes[:10]:
            g = sub[sub["mix"] == m].groupby("t_s")["jain"].mean()
            if len(g):
                ax.plot(g.index, g.to_numpy(), color=colors[m], label=m, linewidth=1.4)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("time since trial start (s)")
        ax.set_ylabel("Jain's fairness index")
        if len(conds) > 1 or cond != "all":
            ax.set_title(cond, fontsize=10)
    axes[0].legend(frameon=False, loc="lower left")
    fig.tight_layout()
    return Figure(
        "fairness_time",
        "Fairness over time",
        "Jain's index of the concurrent flows' throughput per 100 ms bin (1 = equal shares, "
        "1/n = one flow takes all), mean over the trials of a condition with the same flow mix."
        + _shown(all_conds, conds),
        _save(fig, out, "fairness_time"),
    )


def _ecdf(ax, values: np.ndarray, **kw) -> None:
    v = values[~np.isnan(values)]
    if not v.size:
        return
    q = np.linspace(0, 1, min(v.size, 400))
    ax.plot(np.quantile(v, q), q, **kw)


def owd_cdf(df: pd.DataFrame, probes: pd.DataFrame | None, out: Path) -> Figure | None:
    """CDF of probe one-way delay, idle (dashed) and under load; by intra/cross path when the run
    has operators, else by protocol; one panel per condition (at most four)."""
    if probes is None or probes.empty:
        return None
    # probes belong to a trial's path, not to a flow: label them with the trial's protocol mix on it
    keys = ["trial", "src", "dst"]
    meta = (
        df.groupby(keys, sort=False, observed=True)
        .agg(
            path_kind=("path_kind", "first"),
            condition=("condition", "first"),
            variant=("variant", lambda s: " + ".join(sorted(set(s)))),
        )
        .reset_index()
    )
    p = probes.merge(meta, on=keys, how="inner")
    if p.empty or p["owd_ms"].notna().sum() == 0:
        return None
    by = "path_kind" if (p["path_kind"] != "").any() else "variant"
    conds = _pick(conditions_in_order(p["condition"]))
    groups = sorted(p[by].unique())
    colors = _colors(groups)
    fig, axes = _panels(len(conds), height=3.6)
    for ax, cond in zip(axes, conds, strict=True):
        sub = p[p["condition"] == cond]
        for grp in groups:
            for phase, style in (("loaded", "-"), ("idle", "--")):
                g = sub[(sub[by] == grp) & (sub["phase"] == phase)]
                if by == "variant" and phase == "idle":
                    continue
                if len(g):
                    lost = qos.iplr(g["owd_ms"].to_numpy(float)) * 100
                    _ecdf(
                        ax,
                        g["owd_ms"].to_numpy(float),
                        color=colors[grp],
                        linestyle=style,
                        label=f"{grp or 'path'} {phase} (loss {lost:.2g} %)",
                    )
        if by == "variant":
            idle = sub[sub["phase"] == "idle"]["owd_ms"].to_numpy(float)
            _ecdf(ax, idle, color="black", linestyle="--", label="idle (all)")
        ax.set_xlabel("one-way delay (ms)")
        ax.set_ylabel("fraction of packets")
        if len(conds) > 1 or cond != "all":
            ax.set_title(cond, fontsize=10)
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return Figure(
        "owd_cdf",
        "One-way delay CDFs",
        "Empirical CDF of the UDP probe stream's one-way delay (RFC 7679), idle (dashed) and while the "
        "flows ran (solid); lost probes are excluded from the CDF and counted in the legend."
        + _shown(conditions_in_order(p["condition"]), conds),
        _save(fig, out, "owd_cdf"),
    )


def _shown(conds: list, picked: list) -> str:
    return (
        ""
        if len(picked) == len(conds)
        else f" {len(picked)} of {len(conds)} conditions shown (evenly chosen)."
    )


def throughput_delay_scatter(df: pd.DataFrame, out: Path) -> Figure | None:
    """Pantheon-style, per condition (at most four panels): one point per flow run, 95th-percentile
    one-way delay (x, reversed: better to the right) vs goodput; flagged runs hollow, protocol means
    as diamonds."""
    d = df[df["ok"]].copy()
    d["delay"] = d["owd_p95_ms"].where(d["owd_p95_ms"].notna(), d["loaded_rtt_ms"] / 2)
    d = d[d["delay"].notna() & d["goodput_mbps"].notna()]
    if d.empty:
        return None
    colors = _colors(list(d["variant"].unique()))
    all_conds = conditions_in_order(d["condition"])
    conds = _pick(all_conds)
    fig, axes = _panels(len(conds), width=5.4, height=4.2)
    for ax, cond in zip(axes, conds, strict=True):
        sub = d[d["condition"] == cond]
        for variant, g in sub.groupby("variant"):
            flagged = (g["flag_list"].map(len) > 0).to_numpy()
            c = colors[variant]
            ax.scatter(
                g["delay"][~flagged], g["goodput_mbps"][~flagged], s=24, color=c, alpha=0.6, label=variant
            )
            if flagged.any():
                ax.scatter(
                    g["delay"][flagged], g["goodput_mbps"][flagged], s=28, facecolors="none", edgecolors=c
                )
            ax.scatter(
                [g["delay"].mean()],
                [g["goodput_mbps"].mean()],
                s=150,
                color=c,
                edgecolors="black",
                marker="D",
                zorder=5,
            )
        ax.invert_xaxis()
        v = sub["goodput_mbps"]
        if v.min() > 0 and v.max() / v.min() > 30:
            ax.set_yscale("log")
        ax.set_xlabel("p95 one-way delay (ms, better →)")
        ax.set_ylabel("goodput (Mbit/s)")
        if len(conds) > 1 or cond != "all":
            ax.set_title(cond, fontsize=10)
    axes[0].legend(title="protocol", frameon=False)
    fig.tight_layout()
    return Figure(
        "throughput_delay",
        "Throughput vs delay",
        "One point per flow run (hollow: flagged run), diamond = protocol mean; delay axis reversed: up and "
        "to the right is better." + _shown(all_conds, conds),
        _save(fig, out, "throughput_delay"),
    )


def hub_heatmap(paths: pd.DataFrame, out: Path) -> Figure | None:
    """Hub × hub matrices of one-way delay (idle when measured) and goodput; only for runs with at
    least three endpoints and three distinct pairs."""
    nodes = sorted(set(paths["src"]) | set(paths["dst"]))
    pairs = paths[["src", "dst"]].drop_duplicates()
    if len(nodes) < 3 or len(pairs) < 3:
        return None
    lat = paths["idle_owd_ms"].where(paths["idle_owd_ms"].notna(), paths["owd_p50_ms"])
    p = paths.assign(lat=lat)
    srcs, dsts = sorted(set(paths["src"])), sorted(set(paths["dst"]))
    size = max(5.0, 0.75 * max(len(srcs), len(dsts)) + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size * 0.85))
    for ax, col, title, cmap in (
        (axes[0], "lat", "one-way delay (ms)", "viridis_r"),
        (axes[1], "goodput_mbps", "goodput (Mbit/s)", "viridis"),
    ):
        m = p.pivot_table(index="src", columns="dst", values=col, aggfunc="mean").reindex(
            index=srcs, columns=dsts
        )
        a = m.to_numpy(float)
        im = ax.imshow(a, cmap=cmap)
        ax.set_xticks(range(len(dsts)), dsts, rotation=45, ha="right")
        ax.set_yticks(range(len(srcs)), srcs)
        ax.set_xlabel("destination")
        ax.set_ylabel("source")
        ax.set_title(title)
        ax.grid(False)
        finite = a[np.isfinite(a)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0
        for i in range(len(srcs)):
            for j in range(len(dsts)):
                if np.isfinite(a[i, j]):
                    good = a[i, j] < mid if cmap == "viridis" else a[i, j] > mid
                    ax.text(
                        j,
                        i,
                        f"{a[i, j]:.3g}",
                        ha="center",
                        va="center",
                        fontsize=9,
                        color="white" if good else "black",
                    )
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return Figure(
        "hub_heatmap",
        "Hub × hub latency and goodput",
        "Mean over all trials and protocols; delay is the idle probes' median one-way delay when "
        "measured, else the median under load. Empty cells: pair not measured.",
        _save(fig, out, "hub_heatmap"),
    )


def fct_distribution(df: pd.DataFrame, out: Path) -> Figure | None:
    """Flow completion time distributions per protocol (box plots); one panel per condition (at
    most four, evenly chosen)."""
    d = df[df["ok"] & df["fct_s"].notna()]
    if d.empty:
        return None
    variants = sorted(d["variant"].unique())
    colors = _colors(variants)
    all_conds = conditions_in_order(d["condition"])
    conds = _pick(all_conds)
    fig, axes = _panels(len(conds), height=3.8)
    for ax, cond in zip(axes, conds, strict=True):
        sub = d[d["condition"] == cond]
        data = [sub.loc[sub["variant"] == v, "fct_s"].to_numpy(float) for v in variants]
        bp = ax.boxplot(data, tick_labels=variants, patch_artist=True, showfliers=True)
        for patch, v in zip(bp["boxes"], variants, strict=True):
            patch.set_facecolor(colors[v])
            patch.set_alpha(0.55)
        allv = np.concatenate([x for x in data if x.size]) if any(x.size for x in data) else np.array([1.0])
        if allv.min() > 0 and allv.max() / allv.min() > 30:
            ax.set_yscale("log")
        ax.set_ylabel("flow completion time (s)")
        sizes = sorted(sub["size_bytes"].dropna().unique())
        size = f" ({', '.join(f'{x / 1e6:g}' for x in sizes)} MB)" if sizes else ""
        ax.set_title(("" if cond == "all" else cond) + size, fontsize=10)
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    return Figure(
        "fct",
        "Completion-time distributions",
        "Flow completion time per protocol over the repetitions and flows of each condition (box: quartiles, "
        "whiskers: 1.5 IQR; transfer sizes in the titles)." + _shown(all_conds, conds),
        _save(fig, out, "fct"),
    )


def topology_figure(run: Run, out: Path) -> Figure | None:
    """The topology picture via testbed.topology.draw.draw_topology, when that module exists and the
    run's topology could be rebuilt (load.load_topology_spec); otherwise nothing (logged)."""
    spec = run.topology
    if spec is None:
        return None
    try:
        draw = importlib.import_module("testbed.topology.draw").draw_topology
    except (ImportError, AttributeError):
        return None
    path = out / "topology.png"
    try:
        draw(spec, path)
    except Exception as exc:
        log.warning("topology figure skipped: %s", exc)
        return None
    finally:
        plt.close("all")
    if not path.is_file():
        return None
    return Figure(
        "topology",
        "Topology",
        f"Topology `{getattr(spec, 'name', '')}` as specified "
        "(link labels: configured rate, one-way delay, loss before the grid's overrides).",
        path,
    )


def all_figures(run: Run, df: pd.DataFrame, paths: pd.DataFrame, out: Path, seed: int = 0) -> list[Figure]:
    out.mkdir(parents=True, exist_ok=True)
    figs = []
    with plt.rc_context(STYLE):
        for make in (
            lambda: topology_figure(run, out),
            lambda: goodput_vs(df, out, "loss", seed),
            lambda: goodput_vs(df, out, "rtt", seed),
            lambda: throughput_over_time(df, run.timeseries, out),
            lambda: owd_cdf(df, run.probes, out),
            lambda: throughput_delay_scatter(df, out),
            lambda: fairness_over_time(df, run.timeseries, out),
            lambda: hub_heatmap(paths, out),
            lambda: fct_distribution(df, out),
        ):
            f = make()
            if f is not None:
                figs.append(f)
    return figs
