"""`build_report(run_dir)`: the network quality assessment report of one run directory."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import TestbedError
from ..metrics import qos
from . import analysis as an
from .figures import Figure, all_figures
from .load import Run, load_run
from .render import Block, fmt, fmt_ci, to_html, to_markdown

MAX_TABLE_ROWS = 150  # longer tables are cut in report.md/html; the CSV files keep every row


@dataclass
class ReportPaths:
    """Files written by build_report / compare_runs."""

    markdown: Path
    html: Path
    csv: list[Path] = field(default_factory=list)  # summary.csv first
    figures: list[Path] = field(default_factory=list)

    @property
    def summary(self) -> Path:
        return self.csv[0]

    def all(self) -> list[Path]:
        return [self.markdown, self.html, *self.csv, *self.figures]


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, *, seed: int = 0) -> ReportPaths:
    """Write report.md, report.html (self-contained), figures/*.png, summary.csv (per condition ×
    protocol), paths.csv, checks.csv and verdicts.csv into ``out_dir`` (default: the run dir).
    Raises TestbedError (one line) for a missing or invalid run directory or file."""
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path
    try:
        return _build(run, out, seed)
    except OSError as exc:  # read-only run dir, full disk, ...: one line naming the file
        raise TestbedError(
            f"{exc.filename or out}: cannot write the report ({exc.strerror or exc})"
        ) from None


def _build(run: Run, out: Path, seed: int) -> ReportPaths:
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    df = an.add_row_metrics(run)
    paths = an.path_tables(run, df)
    protos = an.protocol_tables(run, df, seed=seed)
    figs = {f.name: f for f in all_figures(run, df, paths.table, fig_dir, seed=seed)}
    csvs = _write_csvs(out, run, paths, protos)
    blocks = _document(run, df, paths, protos, figs)
    title = f"Network quality assessment: {run.name}"
    md = out / "report.md"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    page = out / "report.html"
    page.write_text(to_html(blocks, title), encoding="utf-8")
    return ReportPaths(md, page, csvs, [f.path for f in figs.values()])


def _write_csvs(out: Path, run: Run, paths: an.PathTables, protos: an.ProtocolTables) -> list[Path]:
    files = {
        "summary.csv": protos.table,
        "paths.csv": paths.table,
        "checks.csv": paths.checks,
        "verdicts.csv": protos.verdicts,
    }
    written = []
    for name, table in files.items():
        p = out / name
        table.to_csv(p, index=False)
        written.append(p)
    return written


# ----------------------------------------------------------------------------- document


def _cut(df: pd.DataFrame, what: str, csv: str) -> tuple[pd.DataFrame, str]:
    if len(df) <= MAX_TABLE_ROWS:
        return df, ""
    return df.head(MAX_TABLE_ROWS), f"First {MAX_TABLE_ROWS} of {len(df)} {what}; all rows in `{csv}`."


def _mark(value: str, flags: str) -> str:
    return f"{value} {an.FLAG_MARK}" if flags else value


def _ok(passed: bool | None) -> str:
    return "–" if passed is None else ("✓ pass" if passed else "✗ fail")


def _document(
    run: Run, df: pd.DataFrame, paths: an.PathTables, protos: an.ProtocolTables, figs: dict[str, Figure]
) -> list[Block]:
    b: list[Block] = [Block("h1", f"Network quality assessment: {run.name}")]
    b += _overview(run, df, paths, protos)
    b += _what_was_run(run, figs)
    b += _flags(df)
    b += _paths(run, paths, figs)
    b += _protocols(run, protos, figs)
    b += _definitions()
    return b


def _fig(figs: dict[str, Figure], name: str) -> list[Block]:
    f = figs.get(name)
    return [Block("figure", f.title, image=f.path, note=f.caption)] if f else []


def _overview(run: Run, df: pd.DataFrame, paths: an.PathTables, protos: an.ProtocolTables) -> list[Block]:
    m = run.metadata
    trials = m.get("trials") or {}
    flagged = df[df["flag_list"].map(len) > 0]["trial"].nunique()
    failed = int((~df["ok"]).sum())
    items = [
        f"Status **{m.get('status', 'unknown')}**: {trials.get('done', df['trial'].nunique())} of "
        f"{trials.get('total', '?')} trials done; {df['trial'].nunique()} trials and {len(df)} flows in "
        "results.csv.",
        f"{df['condition'].nunique()} network condition(s) × {df['variant'].nunique()} protocol variant(s) "
        f"({', '.join(sorted(df['variant'].unique()))}); repetitions per condition: "
        f"{int(df.groupby(['condition', 'variant'])['rep'].nunique().max())}.",
        f"Flagged trials: {flagged} (marked {an.FLAG_MARK} beside the affected numbers); failed flows: "
        f"{failed}.",
        f"Fidelity check: {_fidelity_summary(m.get('fidelity_check'), m.get('fidelity_check_skipped'))}.",
    ]
    v = protos.verdicts
    if not v.empty:
        sig = v[v["goodput_mbps_verdict"].isin(["better", "worse"])]
        items.append(
            f"Protocol pairs with a significant goodput difference: {len(sig)} of {len(v)} (paired, 95 % CI)."
        )
        items += _best_per_condition(protos)
    p = paths.table
    if not p.empty and p["y1541_class"].notna().any():
        counts = p["y1541_class"].value_counts().sort_index()
        items.append(
            "Y.1541 strictest class met (path × condition): "
            + ", ".join(f"class {int(k)}: {v}" for k, v in counts.items())
            + "."
        )
    c = paths.checks
    if not c.empty:
        failing = c[c["passed"].eq(False)]
        worst = ", ".join(sorted(set(failing["check"])))
        items.append(
            f"Policy checks (hubs.md): {len(failing)} of {int(c['passed'].notna().sum())} fail"
            + (f" ({worst})." if worst else ".")
        )
    return [Block("h2", "Summary"), Block("list", items=items)]


MAX_HEADLINES = 6


def _best_per_condition(protos: an.ProtocolTables) -> list[str]:
    """Highest mean goodput per condition, and whether it beats each other protocol significantly."""
    t, v = protos.table, protos.verdicts
    out = []
    for cond, g in t.groupby("scope", sort=True, observed=True):
        if g["goodput_mbps"].notna().sum() < 2:
            continue
        best = g.loc[g["goodput_mbps"].idxmax()]
        rows = v[(v["scope"] == cond) & ((v["a"] == best["variant"]) | (v["b"] == best["variant"]))]
        sig = sum(
            1
            for _, r in rows.iterrows()
            if r["goodput_mbps_verdict"] == ("better" if r["a"] == best["variant"] else "worse")
        )
        out.append(
            f"`{cond}`: highest goodput **{best['variant']}** ({fmt(best['goodput_mbps'])} Mbit/s), "
            f"significantly above {sig} of {len(rows)} other protocol(s)."
        )
    if len(out) > MAX_HEADLINES:
        out = [
            *out[:MAX_HEADLINES],
            f"… {len(out) - MAX_HEADLINES} more conditions in the Protocols section.",
        ]
    return out


def _fidelity_summary(fc, skipped: str | None = None) -> str:
    if fc is None:
        return f"skipped ({skipped})" if skipped else "not run"
    if isinstance(fc, dict):
        if "skipped" in fc:
            return f"skipped ({fc['skipped']})"
        if "error" in fc:
            return f"**error**: {fc['error']}"
        for key in ("ok", "passed", "pass"):
            if key in fc:
                return (
                    "passed" if fc[key] else "**FAILED** (numbers below may not reflect the configured links)"
                )
        return "result recorded (see below)"
    return str(fc)


def _emulation_details(m: dict) -> str:
    """How the backend applied the links, from the last network's applied() record: what a
    reader needs to judge the numbers (rate scaling, loss scope, the emulator's timing)."""
    nets = m.get("networks") or []
    applied = (nets[-1].get("applied") if nets and isinstance(nets[-1], dict) else None) or {}
    parts = []
    if applied.get("rate_scale", 1.0) != 1.0:
        parts.append(f"rates scaled by {applied['rate_scale']:g} (recorded per link)")
    if applied.get("loss_applies_to"):
        parts.append(f"loss applies to {applied['loss_applies_to']}")
    if applied.get("emulator_round_us") is not None:
        parts.append(f"userspace emulator rounds of {applied['emulator_round_us']:g} µs while busy "
                     "(a frame leaves at most one round after its due time)")  # fmt: skip
    if applied.get("node_napi"):
        parts.append(f"node-side NAPI {applied['node_napi']}")
    return "; ".join(parts) or "–"


def _what_was_run(run: Run, figs: dict[str, Figure]) -> list[Block]:
    m = run.metadata
    git = m.get("git") or {}
    backend = m.get("link_backend") or {}
    machine = m.get("machine") or {}
    versions = m.get("versions") or {}
    topo = m.get("topology") or {}
    grid = (m.get("resolved") or m.get("spec") or {}).get("grid")
    kv = [
        ("run", f"`{run.name}` ({run.path})"),
        ("spec file", m.get("spec_file", "–")),
        ("started / ended", f"{m.get('started', '–')} / {m.get('ended', '–')}"),
        ("seed / repeat", f"{m.get('seed', '–')} / {m.get('repeat', '–')}"),
        ("git", f"{str(git.get('commit', '–'))[:12]}{' (dirty tree)' if git.get('dirty') else ''}"),
        (
            "link backend",
            f"{backend.get('name', '–')}" + (f": {backend['reason']}" if backend.get("reason") else ""),
        ),
        ("topology", f"{topo.get('name', '–')}"),
        ("link emulation", _emulation_details(m)),
        ("machine", ", ".join(f"{k} {v}" for k, v in machine.items()) or "–"),
        ("machine noise", an.machine_noise(run.results) or "not recorded"),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "–"),
    ]
    if grid:
        kv.append(
            ("grid", "; ".join(f"{k}: {v}" for k, v in grid.items()) if isinstance(grid, dict) else str(grid))
        )
    out = [Block("h2", "What was run"), Block("kv", items=kv)]
    out += _fig(figs, "topology")
    links = _links_applied(topo.get("links_applied"))
    if not links.empty:
        links, note = _cut(links, "link directions", "metadata.json")
        out += [
            Block("h3", "Links as applied"),
            Block(
                "table",
                table=links,
                note=note
                or "What each link direction really got from the backend "
                "when the network started (grid points then change the swept fields per trial).",
            ),
        ]
    fc = m.get("fidelity_check")
    out.append(Block("h3", "Fidelity check"))
    out.append(Block("p", f"Result: {_fidelity_summary(fc, m.get('fidelity_check_skipped'))}."))
    rows = _fidelity_rows(fc)
    if not rows.empty:
        out.append(Block("table", table=rows))
    elif isinstance(fc, dict) and not ({"skipped", "error"} & set(fc)):
        out.append(Block("pre", json.dumps(fc, indent=1, default=str)[:4000]))
    return out


LINK_FIELDS = ("bw_mbps", "delay_ms", "jitter_ms", "loss_pct", "loss_burst", "queue_pkts")


def _links_applied(links) -> pd.DataFrame:
    """metadata.topology.links_applied -> one row per link direction (entries with ``ab``/``ba``
    mappings, as the network layer records them), or the entries as they are."""
    if not isinstance(links, list) or not links or not all(isinstance(x, dict) for x in links):
        return pd.DataFrame()
    rows = []
    for lk in links:
        if isinstance(lk.get("ab"), dict) or isinstance(lk.get("ba"), dict):
            for d in ("ab", "ba"):
                p = lk.get(d) or {}
                a, b = (
                    (lk.get("a", "?"), lk.get("b", "?"))
                    if d == "ab"
                    else (lk.get("b", "?"), lk.get("a", "?"))
                )
                rows.append(
                    {
                        "link": lk.get("link", ""),
                        "direction": f"{a} → {b}",
                        "mode": lk.get("mode", ""),
                        **{f: p.get(f) for f in LINK_FIELDS},
                        "notes": "; ".join(map(str, lk.get("notes") or []))
                        + (" DOWN" if lk.get("down") else ""),
                    }
                )
        else:
            rows.append(dict(lk))
    t = pd.DataFrame(rows)
    return t.map(
        lambda v: (
            "–"
            if v is None or (isinstance(v, float) and np.isnan(v))
            else fmt(v)
            if isinstance(v, float)
            else v
        )
    )


def _fidelity_rows(fc) -> pd.DataFrame:
    """`testbed check --json` rows (per backend) as a table; also accepts a flat ``checks`` list."""
    if not isinstance(fc, dict):
        return pd.DataFrame()
    rows = []
    for b in fc.get("backends") or []:
        if not isinstance(b, dict):
            continue
        for r in b.get("rows") or []:
            if isinstance(r, dict):
                rows.append(
                    {
                        "backend": b.get("backend", ""),
                        "setting": r.get("name", ""),
                        "expected": fmt(r.get("expected")),
                        "measured": fmt(r.get("measured")),
                        "tolerance": r.get("tolerance", ""),
                        "result": _ok(r.get("passed")),
                        "detail": r.get("detail", ""),
                    }
                )
    for r in fc.get("checks") or []:
        if isinstance(r, dict):
            rows.append(
                {
                    k: (fmt(v) if isinstance(v, float) else _ok(v) if isinstance(v, bool) else v)
                    for k, v in r.items()
                }
            )
    return pd.DataFrame(rows)


def _flags(df: pd.DataFrame) -> list[Block]:
    t = an.flagged_trials(df)
    out = [Block("h2", "Flags")]
    if t.empty:
        return [
            *out,
            Block("p", "No trial was flagged (no CPU saturation, no link out of tolerance, no failure)."),
        ]
    t = t.rename(columns={"variant": "protocol"})
    t, note = _cut(t, "flagged trials", "results.csv")
    return [
        *out,
        Block(
            "p",
            f"Numbers that include a flagged trial carry {an.FLAG_MARK}. `cpu_limited`: a process "
            "saturated a core, so the result may measure the CPU rather than the network; "
            "`link_out_of_tolerance`: a link did not reach its configured value; `failed`: the transfer "
            "did not complete.",
        ),
        Block("table", table=t, note=note),
    ]


def _paths(run: Run, paths: an.PathTables, figs: dict[str, Figure]) -> list[Block]:
    p = paths.table
    out = [
        Block("h2", "Path quality"),
        Block(
            "p",
            "Per path (source → destination, intra/cross operator) and network condition, mean over "
            "trials. Delays are one-way (UDP probe stream, one shared clock: exact); *idle* is before the "
            "flows (median), the other delay columns while the flows ran.",
        ),
    ]
    if p.empty:
        return [*out, Block("p", "No path data.")]
    has_kind = (p["path_kind"] != "").any()
    delay = pd.DataFrame(
        {
            "path": p["src"] + " → " + p["dst"],
            **({"kind": p["path_kind"]} if has_kind else {}),
            "condition": p["condition"],
            "n": p["n"],
            "configured ms": p["configured_owd_ms"].map(fmt),
            "idle p50 ms": p["idle_owd_ms"].map(fmt),
            "mean ms": p["owd_mean_ms"].map(fmt),
            "p50": p["owd_p50_ms"].map(fmt),
            "p95": p["owd_p95_ms"].map(fmt),
            "p99": p["owd_p99_ms"].map(fmt),
            "IPDV ms": p["ipdv_ms"].map(fmt),
            "loss %": p["loss_pct"].map(fmt),
            "jitter ms": p["jitter_ms"].map(fmt),
            "goodput Mbit/s": [_mark(fmt(g), f) for g, f in zip(p["goodput_mbps"], p["flags"], strict=True)],
            "flags": p["flags"],
        }
    )
    delay, note = _cut(delay, "paths", "paths.csv")
    out += [Block("h3", "Delay, loss and goodput"), Block("table", table=delay, note=note)]
    grades = pd.DataFrame(
        {
            "path": p["src"] + " → " + p["dst"],
            "condition": p["condition"],
            "Y.1541 class": p["y1541_class"].astype(str),
            "classes met": p["y1541_met"],
            "E-model R": p["emodel_r"].map(fmt),
            "MOS": p["mos"].map(lambda x: fmt(x, 2)),
            "G.109": p["g109"],
            "G.114 (<150 ms)": p["g114_ok"].map(_ok),
            "RPM": [
                f"{fmt(r)} of {fmt(mx)} ({band})"
                for r, mx, band in zip(p["rpm"], p["rpm_max"], p["rpm_band"], strict=True)
            ],
            "policy checks passed": p["policy"],
            "flags": p["flags"],
        }
    )
    grades, note = _cut(grades, "paths", "paths.csv")
    out += [
        Block("h3", "Grades"),
        Block(
            "table",
            table=grades,
            note=note
            or "Y.1541: strictest class met (order 6, 0, 7, 1, 2, 3, 4, 5); E-model: G.711, no PLC, from "
            "the mean "
            "one-way delay and the probe loss under load; RPM: of the maximum the idle RTT allows.",
        ),
    ]
    c = paths.checks
    if not c.empty:
        t = pd.DataFrame(
            {
                "path": c["src"] + " → " + c["dst"],
                "kind": c["path_kind"],
                "condition": c["condition"],
                "check": c["check"],
                "value": c["value"].map(fmt),
                "limit": c["limit"].map(fmt),
                "unit": c["unit"],
                "result": c["passed"].map(_ok),
            }
        )
        t = t.sort_values("result", key=lambda s: s.str.startswith("✓"), kind="stable")  # failures first
        t, note = _cut(t, "checks", "checks.csv")
        fails = int((c["passed"] == False).sum())  # noqa: E712
        out += [
            Block("h3", "Policy checks (hubs.md)"),
            Block(
                "p",
                f"{fails} of {int(c['passed'].notna().sum())} checks fail. Latency checks use the idle "
                "one-way delay (median) when probes measured it, else the median under load.",
            ),
            Block("table", table=t, note=note),
        ]
    out += _fig(figs, "hub_heatmap")
    out += _fig(figs, "owd_cdf")
    return out


def _band(value: float, ok: bool) -> str:
    return "–" if isinstance(value, float) and math.isnan(value) else f"{fmt(value)} {'✓' if ok else '✗'}"


def _protocols(run: Run, protos: an.ProtocolTables, figs: dict[str, Figure]) -> list[Block]:
    t = protos.table
    out = [
        Block("h2", "Protocols"),
        Block(
            "p",
            "Per network condition (and path, in runs with operators) and protocol: mean over repetitions "
            "(each repetition first averaged "
            "over its flows) with 95 % CIs (see Statistics below); RFC 6349 metrics with this report's pass "
            f"bands (TTR ≤ {qos.TTR_PASS}, efficiency ≥ {qos.EFFICIENCY_PASS_PCT} %, buffer delay ≤ "
            f"{qos.BUFFER_DELAY_PASS_PCT} %: ✓/✗).",
        ),
    ]
    if t.empty:
        return [*out, Block("p", "No successful flows.")]
    if run.results["goodput_is_window"].any():
        out.append(
            Block(
                "p",
                "Duration flows: their goodput is the window goodput over the first `duration_s` "
                "(while all competing flows still send; results.csv `window_goodput_mbps`).",
            )
        )
    table = pd.DataFrame(
        {
            "condition": t["scope"],
            "protocol": t["variant"],
            "cc": t["cc"],
            "n": t["n"],
            "goodput Mbit/s [95 % CI]": [
                _mark(fmt_ci(m, lo, hi), f)
                for m, lo, hi, f in zip(
                    t["goodput_mbps"],
                    t["goodput_mbps_ci_low"],
                    t["goodput_mbps_ci_high"],
                    t["flags"],
                    strict=True,
                )
            ],
            "FCT s [95 % CI]": [
                _mark(fmt_ci(m, lo, hi), f)
                for m, lo, hi, f in zip(
                    t["fct_s"], t["fct_s_ci_low"], t["fct_s_ci_high"], t["flags"], strict=True
                )
            ],
            "TTR": [_band(x, x <= qos.TTR_PASS) for x in t["ttr"]],
            "efficiency %": [_band(x, x >= qos.EFFICIENCY_PASS_PCT) for x in t["efficiency_pct"]],
            "buffer delay %": [_band(x, x <= qos.BUFFER_DELAY_PASS_PCT) for x in t["buffer_delay_pct"]],
            "p95 OWD ms": t["owd_p95_ms"].map(fmt),
            "RPM": t["rpm"].map(fmt),
            "fairness": t["fairness"].map(fmt),
            "failed": t["failed"],
            "flags": t["flags"],
        }
    )
    table, note = _cut(table, "rows", "summary.csv")
    out += [Block("table", table=table, note=note)]
    v = protos.verdicts
    if not v.empty:
        flags = {(str(c), str(x)): f for c, x, f in zip(t["scope"], t["variant"], t["flags"], strict=True)}
        pair_flags = [
            "; ".join(f"{x}: {flags[(str(c), x)]}" for x in (a, b) if flags.get((str(c), x)))
            for c, a, b in zip(v["scope"], v["a"], v["b"], strict=True)
        ]
        vt = pd.DataFrame(
            {
                "condition": v["scope"],
                "A vs B": [
                    _mark(f"{a} vs {b}", f) for a, b, f in zip(v["a"], v["b"], pair_flags, strict=True)
                ],
                "pairs": v["n_pairs"],
                "goodput A/B [95 % CI]": [
                    fmt_ci(m, lo, hi)
                    for m, lo, hi in zip(
                        v["goodput_mbps_ratio"],
                        v["goodput_mbps_ci_low"],
                        v["goodput_mbps_ci_high"],
                        strict=True,
                    )
                ],
                "goodput verdict (A)": v["goodput_mbps_verdict"],
                "FCT A/B [95 % CI]": [
                    fmt_ci(m, lo, hi)
                    for m, lo, hi in zip(v["fct_s_ratio"], v["fct_s_ci_low"], v["fct_s_ci_high"], strict=True)
                ],
                "FCT verdict (A)": v["fct_s_verdict"],
                "flags": pair_flags,
            }
        )
        vt, note = _cut(vt, "pairs", "verdicts.csv")
        out += [
            Block("h3", "Verdicts per protocol pair"),
            Block(
                "p",
                "Ratio of means A/B over repetitions paired by rep (same seed, same loss pattern), "
                "95 % CI by bootstrap over pairs, or Student's t on the log ratios below 5 pairs; the "
                "verdict "
                "says whether A is better or worse than B when the CI excludes 1 (higher goodput and lower "
                "FCT are better).",
            ),
            Block("table", table=vt, note=note),
        ]
    for name in (
        "goodput_vs_loss",
        "goodput_vs_rtt",
        "throughput_time",
        "throughput_delay",
        "fairness_time",
        "fct",
    ):
        out += _fig(figs, name)
    return out


def _definitions() -> list[Block]:
    q = qos
    items = [
        "**One-way delay** (RFC 7679): receive time − send time of each UDP probe; all emulated hosts "
        "share one clock, so it is exact. **Loss** (RFC 7680, Y.1540 IPLR): lost / sent; a probe later "
        f"than {q.TMAX_MS / 1000:g} s counts as lost.",
        "**IPTD** (ITU-T Y.1540): mean one-way delay. **IPDV** (Y.1540): the (1 − 10⁻³) quantile of "
        "one-way delay minus the minimum (RFC 5481 calls D(i) − D_min *PDV*; the RFC 3393 IPDV of "
        "consecutive packets is a different figure).",
        "**Jitter** (RFC 3550 §6.4.1): J += (|D(i−1,i)| − J)/16 over consecutive received probes.",
        "**Y.1541 classes** (IPTD / IPDV / IPLR upper bounds): 0: 100 ms / 50 ms / 10⁻³; "
        "1: 400 / 50 / 10⁻³; 2: 100 / – / 10⁻³; 3: 400 / – / 10⁻³; 4: 1 s / – / 10⁻³; 5: unspecified; "
        "6: 100 / 50 / 10⁻⁵; 7: 400 / 50 / 10⁻⁵. The strictest class met is reported, in the order "
        "6, 0, 7, 1, 2, 3, 4, 5.",
        f"**E-model** (ITU-T G.107): R = {q.EMODEL_R0} − Id − Ie,eff with Id = 0.024 d + 0.11 (d − 177.3) "
        "H(d − 177.3) and Ie,eff = Ie + (95 − Ie) Ppl / (Ppl/BurstR + Bpl); G.711: Ie = 0, "
        f"Bpl = {q.G711_BPL} (no PLC), BurstR = 1; d = the network one-way delay (codec and jitter buffer "
        "not included). MOS = 1 + 0.035 R + 7·10⁻⁶ R (R − 60)(100 − R). **G.109** bands: R ≥ 90 very "
        "satisfied, ≥ 80 satisfied, ≥ 70 some users dissatisfied, ≥ 60 many, ≥ 50 nearly all. "
        f"**G.114**: one-way delay < {q.G114_LIMIT_MS:g} ms is acceptable for most applications.",
        "**RPM** (IETF IPPM responsiveness draft): 60 000 / RTT under load (ms), graded against the idle "
        f"RTT (maximum = 60 000 / idle RTT): good ≥ {q.RPM_GOOD_SHARE:.0%} of the maximum, fair ≥ "
        f"{q.RPM_FAIR_SHARE:.0%}, else poor (this report's bands).",
        "**RFC 6349** (applied to QUIC too): Transfer Time Ratio = actual FCT / ideal time; ideal = size / "
        "maximum achievable goodput of the configured bottleneck, shared equally by the flows of the "
        "trial on the same bottleneck whose transfers overlap in time. Overhead model per MTU-sized "
        f"packet: Ethernet L1+L2 {q.ETH_L1L2_OVERHEAD} B, IP {q.IP_HEADER} B, TCP {q.TCP_HEADER} + "
        f"{q.TCP_OPTIONS} B (timestamps), QUIC UDP {q.UDP_HEADER} B + {q.QUIC_OVERHEAD} B (header, packet "
        "number, AEAD tag, STREAM frame): 100 Mbit/s carries 94.1 Mbit/s of TCP payload. FCT includes "
        "connection set-up and slow start, so transfers of a few bandwidth-delay products cannot come "
        "near TTR 1. Efficiency % = (transmitted − retransmitted) / transmitted × 100 (packets; "
        "QUIC: packets declared lost). Buffer delay % = (RTT under load − idle RTT) / idle RTT × 100. The "
        f"RFC sets no pass bands; this report uses TTR ≤ {q.TTR_PASS}, efficiency ≥ "
        f"{q.EFFICIENCY_PASS_PCT} %, buffer delay ≤ {q.BUFFER_DELAY_PASS_PCT} %.",
        "**Fairness** (Jain 1984): J = (Σx)² / (n Σx²), 1/n ≤ J ≤ 1, over the goodputs of a trial's "
        "concurrent flows.",
        f"**Policy thresholds** (hubs.md): one-way latency ≤ {q.POLICY_LIMITS_MS['inter_hub']:g} ms between "
        f"hubs (checked for endpoints at different sites), cluster ≤ {q.POLICY_LIMITS_MS['cluster']:g} ms, "
        f"metro ≤ {q.POLICY_LIMITS_MS['metro']:g} ms; a direct link ≤ {q.DIRECT_LINK_FACTOR} × the "
        f"theoretical fibre latency (great-circle km × {q.FIBRE_US_PER_KM:g} µs; checked for every path "
        f"with coordinates); cross-operator latency ≤ {q.CROSS_OP_LATENCY_MS:g} ms, loss ≤ "
        f"{q.CROSS_OP_LOSS_PCT} %, and neither more than 25 % worse than the intra-operator path between "
        f"the same sites (losses below {q.LOSS_FLOOR_PCT} % count as {q.LOSS_FLOOR_PCT} % there).",
        "**Statistics**: from 5 repetitions (pairs) on, 95 % percentile bootstrap (2 000 resamples, "
        "seeded), with the percentiles expanded for small samples (Hesterberg 2015: α'/2 = "
        "Φ(−√(n/(n−1)) t(0.975, n−1))). Below 5, no bootstrap interval can be wider than the sample "
        "range (a paired bootstrap verdict would be a false positive 49 % of the time at n = 2, 23 % at "
        "n = 3), so the CIs use Student's t: mean ± t·s/√n; for a protocol pair exp(mean ± t·s/√n) of "
        "the per-rep log ratios; between two runs Welch's interval. With one repetition no CI exists "
        "(shown as [n<2]). Few repetitions give wide CIs: more repetitions narrow them.",
    ]
    return [Block("h2", "Definitions and thresholds"), Block("list", items=items)]
