"""qtp vs naive aioquic vs kernel TCP (cubic, bbr) vs TCP+TLS, side by side in one run.

    .venv/bin/python bench/bench_protocols.py [--quick] [--only LABEL ...]

Scenarios: the `pair` topology (two hosts in their own namespaces, one link) unshaped (plain
veth) and emulated at 100 Mbit/s, 25 ms one-way, 0/1/3 % random loss (both directions).
Every protocol runs through its driver's server/client argv inside the hosts, exactly as
experiments run it. Reported per transfer: goodput (payload bits / time from the client's
start to the receiver's last byte, handshake included), steady-state goodput (the receiver's
100 ms bins after the first STEADY_SKIP_S seconds, last bin excluded) and CPU seconds per GB
(client + server process CPU over payload bytes). Transfers on the shaped link last ~25 s at
the link rate so that start-up (handshake, slow start over a 50 ms RTT) is a small part.
With --reps N every cell is run N times (cases interleaved) and the median is reported.
Writes bench/results/protocols.md; needs root.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols import registry
from protocols.base import TransferStats
from protocols.common import wait_server_ready

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "protocols.md"
LINK = "h1-h2"  # the pair topology's single link


@dataclass
class Scenario:
    label: str
    overrides: dict[str, Any]
    rate_mbps: float | None = None  # link rate, for "% of link"
    loss_pct: float = 0.0


@dataclass
class Case:
    label: str
    protocol: str
    cc: str | None
    options: dict[str, Any] = field(default_factory=dict)
    # payload bytes per scenario kind: a few seconds unshaped, ~25 s at 100 Mbit/s on the
    # link (slow stacks get less)
    size_unshaped: int = 200_000_000
    size_clean: int = 300_000_000
    size_lossy: int = 250_000_000
    unshaped_only: bool = False


def scenarios(quick: bool) -> list[Scenario]:
    link = {"bw_mbps": 100, "delay_ms": 25}
    out = [Scenario("unshaped veth", {f"{LINK}.bw_mbps": None, f"{LINK}.delay_ms": 0, f"{LINK}.loss_pct": 0})]
    for loss in (0, 1) if quick else (0, 1, 3):
        over = {f"{LINK}.{k}": v for k, v in link.items()} | {f"{LINK}.loss_pct": loss}
        out.append(Scenario(f"100 Mbit/s, 25 ms, {loss} %", over, rate_mbps=100, loss_pct=loss))
    return out


CASES = [
    Case("qtp bbr", "qtp", "bbr"),
    Case("qtp cubic", "qtp", "cubic", size_lossy=8_000_000),
    # naive aioquic uses 1200-byte datagrams: qtp at the same size (MTU 1228 = 1200 + IP/UDP)
    Case("qtp cubic, 1200 B datagrams", "qtp", "cubic", {"mtu": 1228}, unshaped_only=True),
    Case("aioquic (naive) cubic", "aioquic", "cubic", size_unshaped=40_000_000, size_clean=30_000_000,
         size_lossy=5_000_000),
    Case("aioquic (naive) bbr", "aioquic", "bbr", size_unshaped=40_000_000, size_clean=30_000_000,
         size_lossy=20_000_000),
    Case("tcp cubic", "tcp", "cubic", size_unshaped=2_000_000_000, size_lossy=8_000_000),
    Case("tcp bbr", "tcp", "bbr", size_unshaped=2_000_000_000),
    Case("tcp-tls cubic", "tcp-tls", "cubic", size_unshaped=1_000_000_000, size_clean=60_000_000,
         size_lossy=8_000_000),
]


STEADY_SKIP_S = 5.0  # steady state: receiver bins from this time on (start-up excluded)
STEADY_MIN_S = 3.0  # ...if they cover at least this long


def steady_goodput(st: TransferStats) -> float | None:
    """Mbit/s over the receiver's 100 ms bins after STEADY_SKIP_S (the last, partial bin
    excluded), or None when the transfer was too short for that."""
    bins = [b for t, b in st.intervals if t >= STEADY_SKIP_S][:-1]
    if len(bins) * 0.1 < STEADY_MIN_S:
        return None
    return sum(bins) * 8 / (len(bins) * 0.1) / 1e6


def size_for(case: Case, sc: Scenario) -> int:
    if sc.rate_mbps is None:
        return case.size_unshaped
    return case.size_lossy if sc.loss_pct else case.size_clean


@dataclass
class Row:
    scenario: Scenario
    case: Case
    stats: TransferStats | None
    note: str = ""

    @property
    def goodput(self) -> float | None:
        return self.stats.goodput_mbps if self.stats and self.stats.ok else None

    @property
    def steady(self) -> float | None:
        return steady_goodput(self.stats) if self.stats and self.stats.ok else None

    @property
    def cpu_per_gb(self) -> float | None:
        st = self.stats
        if not st or not st.ok or not st.bytes or st.cpu_s_client is None:
            return None
        return (st.cpu_s_client + (st.cpu_s_server or 0.0)) / st.bytes * 1e9


def run_case(net: Any, sc: Scenario, case: Case, workdir: Path, port: int, timeout: float) -> Row:
    try:
        driver = registry.get(case.protocol)
    except (KeyError, ImportError) as exc:
        return Row(sc, case, None, f"not available: {exc}")
    wd = workdir / f"{case.protocol}-{port}"
    wd.mkdir(parents=True, exist_ok=True)
    server_ip = net.ip("h2")
    size = size_for(case, sc)
    stats_path = wd / "stats.json"
    try:
        srv_argv = driver.server_argv(port, cc=case.cc, workdir=str(wd), options=case.options)
        cli_argv = driver.client_argv(server_ip, port, size=size, seed=1, cc=case.cc,
                                      stats_path=str(stats_path), workdir=str(wd), options=case.options)
    except ValueError as exc:
        return Row(sc, case, None, f"rejected: {exc}")
    log = wd / "server.log"
    server = net.node_popen("h2", f"exec {shlex.join(srv_argv)} > {shlex.quote(str(log))} 2>&1")
    try:
        try:
            wait_server_ready(server, log)
        except RuntimeError as exc:
            return Row(sc, case, None, str(exc)[:200])
        time.sleep(0.2)
        out = net.node_run("h1", shlex.join(cli_argv), check=False, timeout=timeout)
        if not stats_path.exists():
            tail = out.stderr.strip()[-200:]
            return Row(sc, case, None, f"client wrote no stats (rc {out.returncode}): {tail}")
        st = TransferStats.read(stats_path)
        return Row(sc, case, st, "" if st.ok else (st.error or "failed"))
    except Exception as exc:  # a timeout or a crash of one case must not end the benchmark
        return Row(sc, case, None, f"{type(exc).__name__}: {exc}"[:200])
    finally:
        server.terminate()
        try:
            server.wait(5)
        except Exception:
            server.kill()


def cpu_pressure() -> str:
    """The kernel's 5-minute CPU pressure ("some avg300"), a measure of how starved we are."""
    try:
        fields = Path("/proc/pressure/cpu").read_text().split("\n")[0].split()
        return next(f.split("=")[1] for f in fields if f.startswith("avg300=")) + " %"
    except (OSError, StopIteration):
        return "unknown"


def fmt(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def find(rows: list[Row], scenario: str, label: str) -> list[Row]:
    """All repetitions of one cell."""
    return [r for r in rows if r.scenario.label == scenario and r.case.label == label]


def median(rows: list[Row], attr: str) -> float | None:
    """Median of a Row property over the repetitions that produced it."""
    vals = [v for v in (getattr(r, attr) for r in rows) if v is not None]
    return statistics.median(vals) if vals else None


def ratio_line(name: str, num: list[Row], den: list[Row], target: float) -> str:
    cells = []
    verdicts = []
    for attr in ("goodput", "steady"):
        a, b = median(num, attr), median(den, attr)
        if a is None or b is None or b == 0:
            cells.append("–")
            verdicts.append("not measured")
            continue
        r = a / b
        cells.append(f"{r:.2f}x ({a:.1f} / {b:.1f} Mbit/s)")
        verdicts.append("met" if r >= target else "MISSED")
    return f"| {name} | {cells[0]} | {cells[1]} | ≥ {target:g}x | {verdicts[0]} / {verdicts[1]} |"


READING = (
    "Reading: kernel TCP costs 4–40 CPU s/GB, the Python QUIC stacks 50–950 (qtp 50–100 where "
    "it is not loss-limited). A Python row "
    "below the link rate is CPU-bound when goodput (Mbit/s) / 8000 × CPU s/GB approaches the CPU "
    "the two processes could get (under 2 cores, much less at high CPU pressure); a loss-based "
    "row (cubic) at 1–3 % loss is held to a few Mbit/s by the Mathis limit whatever the CPU."
)


def report(rows: list[Row], scs: list[Scenario], meta: dict[str, Any]) -> str:
    lines = [
        "# Protocol benchmark: qtp vs naive aioquic vs kernel TCP vs TCP+TLS",
        "",
        f"Run {meta['when']} on {meta['host']} ({os.cpu_count()} cores), network backend "
        f"`{meta['backend']}`; load average before {meta['load_before']}, after {meta['load_after']}; "
        f"CPU pressure (/proc/pressure/cpu, share of time tasks waited for a CPU, 5 min average) "
        f"before {meta['psi_before']}, after {meta['psi_after']}. "
        "**The machine's cores are shared with other jobs**: absolute numbers are noisy, the "
        "ratios inside one run are what to read. The `pair` topology "
        "(two namespaces, one link), loss applied in both directions. Generated by "
        "`bench/bench_protocols.py`, every protocol driven through its driver argv.",
        "",
        f"Every cell is the median of {meta['reps']} run(s) (cases interleaved).",
        "",
        "**whole** = goodput over the whole transfer: payload bits / (receiver's last byte − "
        "client start), handshake and slow start included. **steady** = steady-state goodput: "
        f"the receiver's 100 ms bins from {STEADY_SKIP_S:g} s after the start on (last partial bin "
        "excluded; – when the transfer was too short). CPU/GB = (client + server process CPU "
        "seconds) / payload GB. The most a 100 Mbit/s link carries as payload (the emulator, like tc, "
        "counts 1514-byte Ethernet frames): TCP 95.6 Mbit/s (1448 bytes a frame), QUIC with "
        "1472-byte datagrams ~94.8 (~1436 bytes after the short header, STREAM frame header and "
        "AEAD tag).",
        "",
    ]
    header = "| protocol | " + " | ".join(
        f"{sc.label}: whole Mbit/s | steady | CPU s/GB" for sc in scs) + " |"
    lines += [header, "|---" * (1 + 3 * len(scs)) + "|"]
    notes = []
    for case in CASES:
        cells = []
        for sc in scs:
            rs = find(rows, sc.label, case.label)
            cells += [fmt(median(rs, "goodput")), fmt(median(rs, "steady")), fmt(median(rs, "cpu_per_gb"), 1)]
            notes += [f"- {case.label}, {sc.label}: {r.note}" for r in rs if r.note]
        lines.append(f"| {case.label} | " + " | ".join(cells) + " |")
    lines += ["", "Datagram size / sender stats:", ""]
    for r in rows:
        if r.stats and r.stats.ok:
            st = r.stats
            mds = st.extra.get("max_datagram_size") or st.extra.get("datagram_size")
            lines.append(
                f"- {r.case.label}, {r.scenario.label}: {st.bytes / 1e6:.0f} MB in {st.duration_s:.1f} s "
                f"({fmt(r.goodput)} whole, {fmt(r.steady)} steady Mbit/s), "
                f"srtt {fmt(st.rtt_smoothed_ms)} ms, retransmits {st.retransmits}, "
                f"CPU {(st.cpu_s_client or 0) + (st.cpu_s_server or 0):.1f} s (client + server)"
                + (f", datagram {mds} B" if mds else ""))
    unshaped, clean, lossy = scs[0].label, scs[1].label, scs[2].label
    lines += [
        "",
        "## Targets",
        "",
        "| target | whole transfer | steady state | wanted | verdict (whole / steady) |",
        "|---|---|---|---|---|",
        ratio_line(f"qtp vs naive aioquic, {unshaped}, cubic, 1200 B datagrams",
                   find(rows, unshaped, "qtp cubic, 1200 B datagrams"),
                   find(rows, unshaped, "aioquic (naive) cubic"), 2.0),
    ]
    q = find(rows, clean, "qtp bbr")
    g, gs = median(q, "goodput"), median(q, "steady")
    verdicts = ["not measured" if v is None else ("met" if v >= 90 else "MISSED") for v in (g, gs)]
    lines.append(f"| qtp bbr on the clean 100 Mbit/s link | {fmt(g)} Mbit/s ({fmt(g)} % of link) "
                 f"| {fmt(gs)} Mbit/s ({fmt(gs)} %) | ≥ 90 % | {verdicts[0]} / {verdicts[1]} |")
    qtp_lossy = find(rows, lossy, "qtp bbr")
    lines += [
        ratio_line(f"qtp bbr vs tcp cubic, {lossy}", qtp_lossy, find(rows, lossy, "tcp cubic"), 5.0),
        ratio_line(f"qtp bbr vs tcp bbr, {lossy}", qtp_lossy, find(rows, lossy, "tcp bbr"), 0.9),
    ]
    lines += ["", READING]
    if notes:
        lines += ["", "## Failures and notes", "", *notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the 3 %% loss scenario")
    ap.add_argument("--only", nargs="*", help="case labels to run (default: all)")
    ap.add_argument("--timeout", type=float, default=180.0, help="per transfer (s)")
    ap.add_argument("--reps", type=int, default=1, help="runs per cell; the median is reported")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_protocols: needs root (network namespaces)", file=sys.stderr)
        return 1
    from testbed.network.net import Network
    from testbed.topology.plan import build_plan
    from testbed.topology.spec import load_topology

    global CASES
    if args.only:
        CASES = [c for c in CASES if c.label in args.only]
    scs = scenarios(args.quick)
    rows: list[Row] = []
    meta = {"when": time.strftime("%Y-%m-%d %H:%M"), "host": os.uname().nodename, "reps": args.reps,
            "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg()), "backend": "?",
            "psi_before": cpu_pressure()}
    port = 20000 + os.getpid() % 10000
    with tempfile.TemporaryDirectory(prefix="bench-proto-") as tmp:
        for sc in scs:
            plan = build_plan(load_topology("pair", overrides=sc.overrides))
            with Network(plan) as net:
                meta["backend"] = net.backend
                for _ in range(args.reps):
                    for case in CASES:
                        if case.unshaped_only and sc.rate_mbps is not None:
                            continue
                        port += 1
                        row = run_case(net, sc, case, Path(tmp), port, args.timeout)
                        rows.append(row)
                        print(f"{sc.label:28s} {case.label:24s} {fmt(row.goodput):>8s} Mbit/s "
                              f"steady {fmt(row.steady):>6s} {fmt(row.cpu_per_gb, 1):>7s} CPU s/GB "
                              f"{row.note[:80]}", flush=True)
    meta["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    meta["psi_after"] = cpu_pressure()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report(rows, scs, meta))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
