"""`compare_runs(run_a, run_b)`: what changed between two runs, per condition and protocol, with CIs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..errors import TestbedError
from ..metrics import stats
from . import analysis as an
from .build import ReportPaths
from .figures import STYLE  # also selects the Agg backend
from .load import Run, load_run
from .render import Block, fmt, fmt_ci, to_html, to_markdown

# metric -> (label, higher is better)
COMPARE_METRICS = {
    "goodput_mbps": ("goodput Mbit/s", True),
    "fct_s": ("FCT s", False),
    "owd_p95_ms": ("p95 one-way delay ms", False),
    "ttr": ("RFC 6349 TTR", False),
}
MAX_ROWS = 300


def compare_runs(
    run_a: str | Path, run_b: str | Path, out_dir: str | Path | None = None, *, seed: int = 0
) -> ReportPaths:
    """Per condition × protocol present in both runs and per metric: mean(B) − mean(A) over
    repetitions with a 95 % CI (runs are independent: unpaired; bootstrap, Welch's t below 5), flagged when
    the CI excludes 0. Writes compare.md, compare.html, compare.csv and figures/compare_goodput.png
    into ``out_dir`` (default: ``<run_b>/compare-<name of run A>``)."""
    a, b = load_run(run_a), load_run(run_b)
    out = Path(out_dir) if out_dir is not None else b.path / f"compare-{a.path.name}"
    try:
        return _compare(a, b, out, seed)
    except OSError as exc:
        raise TestbedError(
            f"{exc.filename or out}: cannot write the comparison ({exc.strerror or exc})"
        ) from None


def _compare(a: Run, b: Run, out: Path, seed: int) -> ReportPaths:
    out.mkdir(parents=True, exist_ok=True)
    ra = an.per_rep_values(an.add_row_metrics(a), a.condition_cols)
    rb = an.per_rep_values(an.add_row_metrics(b), b.condition_cols)
    table = _differences(ra, rb, seed)
    csv = out / "compare.csv"
    table.to_csv(csv, index=False)
    figs = []
    fig = _figure(table, out / "figures")
    if fig is not None:
        figs.append(fig)
    keys_a = set(zip(ra["scope"].astype(str), ra["variant"], strict=True))
    keys_b = set(zip(rb["scope"].astype(str), rb["variant"], strict=True))
    blocks = _document(a.name, b.name, a.path, b.path, table, keys_a, keys_b, figs)
    title = f"Run comparison: {a.name} → {b.name}"
    md, page = out / "compare.md", out / "compare.html"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    page.write_text(to_html(blocks, title), encoding="utf-8")
    return ReportPaths(md, page, [csv], figs)


def _differences(ra: pd.DataFrame, rb: pd.DataFrame, seed: int) -> pd.DataFrame:
    rows = []
    ra = ra.assign(scope=ra["scope"].astype(str))
    rb = rb.assign(scope=rb["scope"].astype(str))
    gb = dict(iter(rb.groupby(["scope", "variant"], sort=False)))
    for (cond, variant), ga in ra.groupby(["scope", "variant"], sort=True):
        g2 = gb.get((cond, variant))
        if g2 is None:
            continue
        for metric, (label, hib) in COMPARE_METRICS.items():
            if ga[metric].notna().sum() == 0 and g2[metric].notna().sum() == 0:
                continue
            c = stats.difference(ga[metric], g2[metric], higher_is_better=hib, seed=seed)
            mean_a, mean_b = ga[metric].mean(), g2[metric].mean()
            rows.append(
                {
                    "condition": cond,
                    "protocol": variant,
                    "metric": metric,
                    "label": label,
                    "n_a": int(ga[metric].notna().sum()),
                    "n_b": int(g2[metric].notna().sum()),
                    "mean_a": mean_a,
                    "mean_b": mean_b,
                    "diff": c.estimate,
                    "ci_low": c.ci_low,
                    "ci_high": c.ci_high,
                    "diff_pct": c.estimate / mean_a * 100 if mean_a else np.nan,
                    "significant": c.significant,
                    "verdict": c.verdict,
                }
            )
    cols = [
        "condition",
        "protocol",
        "metric",
        "label",
        "n_a",
        "n_b",
        "mean_a",
        "mean_b",
        "diff",
        "ci_low",
        "ci_high",
        "diff_pct",
        "significant",
        "verdict",
    ]
    return pd.DataFrame(rows, columns=cols)


def _figure(table: pd.DataFrame, out: Path) -> Path | None:
    g = table[table["metric"] == "goodput_mbps"].head(40)
    if g.empty:
        return None
    out.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(9, 1.2 + 0.32 * len(g)))
        labels = (g["protocol"] + " · " + g["condition"]).tolist()
        y = np.arange(len(g))
        pct = g["diff_pct"].to_numpy(float)
        scale = 100 / g["mean_a"].to_numpy(float)
        lo = (g["diff"] - g["ci_low"]).to_numpy(float) * scale
        hi = (g["ci_high"] - g["diff"]).to_numpy(float) * scale
        colors = [
            "#b42318" if s and d < 0 else "#116329" if s else "#8c959f"
            for s, d in zip(g["significant"], pct, strict=True)
        ]
        ax.barh(y, pct, color=colors, xerr=np.nan_to_num(np.vstack([lo, hi])), capsize=3)
        ax.axvline(0, color="black", linewidth=1)
        ax.set_yticks(y, labels, fontsize=9)
        ax.invert_yaxis()
        ax.set_xlabel("goodput change B vs A (%), 95 % CI")
        fig.tight_layout()
        path = out / "compare_goodput.png"
        fig.savefig(path, bbox_inches="tight", facecolor="white")
        plt.close(fig)
    return path


def _document(
    name_a: str,
    name_b: str,
    path_a: Path,
    path_b: Path,
    t: pd.DataFrame,
    keys_a: set,
    keys_b: set,
    figs: list[Path],
) -> list[Block]:
    sig = t[t["significant"]]
    blocks = [
        Block("h1", f"Run comparison: {name_a} → {name_b}"),
        Block(
            "kv",
            items=[
                ("run A", str(path_a)),
                ("run B", str(path_b)),
                ("matched condition × protocol", str(len(keys_a & keys_b))),
                ("only in A", str(len(keys_a - keys_b))),
                ("only in B", str(len(keys_b - keys_a))),
                ("significant differences", f"{len(sig)} of {len(t)} metric comparisons"),
            ],
        ),
        Block(
            "p",
            "Difference = mean(B) − mean(A) over repetitions (each averaged over its flows), 95 % "
            "CI resampling each run separately (percentile bootstrap; Welch's t interval when a run has "
            "fewer "
            "than 5 repetitions); **significant** when the CI excludes 0. "
            "The verdict describes B relative to A (higher goodput, lower FCT/delay/TTR are better).",
        ),
    ]
    for f in figs:
        blocks.append(
            Block(
                "figure",
                "Goodput change",
                image=f,
                note="Green: significantly better in B, red: significantly worse, grey: no "
                "significant difference.",
            )
        )
    if t.empty:
        blocks.append(Block("p", "No condition × protocol is present in both runs (different grids?)."))
    else:
        order = t.assign(_s=~t["significant"]).sort_values(["_s", "condition", "protocol"], kind="stable")
        view = pd.DataFrame(
            {
                "condition": order["condition"],
                "protocol": order["protocol"],
                "metric": order["label"],
                "A": order["mean_a"].map(fmt),
                "B": order["mean_b"].map(fmt),
                "B − A [95 % CI]": [
                    fmt_ci(d, lo, hi)
                    for d, lo, hi in zip(order["diff"], order["ci_low"], order["ci_high"], strict=True)
                ],
                "change %": order["diff_pct"].map(fmt),
                "result": [
                    ("✓ " if v == "better" else "✗ " if v == "worse" else "") + v for v in order["verdict"]
                ],
                "n A/B": order["n_a"].astype(str) + "/" + order["n_b"].astype(str),
            }
        )
        note = f"First {MAX_ROWS} of {len(view)} rows; all in compare.csv." if len(view) > MAX_ROWS else ""
        blocks += [
            Block("h2", "Differences (significant first)"),
            Block("table", table=view.head(MAX_ROWS), note=note),
        ]
    missing = sorted(keys_a ^ keys_b)
    if missing:
        rows = pd.DataFrame(
            [(c, v, "A" if (c, v) in keys_a else "B") for c, v in missing],
            columns=["condition", "protocol", "only in"],
        )
        blocks += [Block("h2", "Not compared"), Block("table", table=rows.head(MAX_ROWS))]
    return blocks
