"""Synthetic run directories in the results format (docs/results-format.md), for tests and benchmarks.

Numbers are random but plausible (seeded numpy): goodput falls with loss and RTT (Mathis-like for
loss-based protocols), one-way delay = configured + queueing, probes lose packets at the
configured rate. Reports read files only, so this exercises every report path without a network.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics.qos import delay_summary, great_circle_km, jain_index

# A few hubs of hubs.md: name -> (site, operator, lat, lon)
HUBS = {
    "zjk-ct": ("Zhangjiakou", "ct", 40.82, 114.88),
    "yrd-cm": ("YRD", "cm", 31.00, 120.90),
    "sg-ct": ("Shaoguan", "ct", 24.81, 113.60),
    "sg-cm": ("Shaoguan", "cm", 24.81, 113.60),  # same site, other operator: intra vs cross comparable
    "tf-cu": ("Tianfu", "cu", 30.40, 104.07),
    "cq-cm": ("Chongqing", "cm", 29.56, 106.55),
}
PROTO_CC = {"qtp": "bbr", "tcp": "cubic", "tcp-tls": "cubic", "aioquic": "reno"}
PROTO_CEILING = {"qtp": 300.0, "tcp": 2000.0, "tcp-tls": 1500.0, "aioquic": 180.0}  # CPU-bound rates


@dataclass
class SyntheticSpec:
    """What to generate: a dumbbell sweep (grid of loss × delay × protocol) or a hubs run."""

    kind: str = "dumbbell"  # "dumbbell" | "hubs"
    protocols: tuple[str, ...] = ("qtp", "tcp", "aioquic")
    losses: tuple[float, ...] = (0.0, 0.5, 1.0)
    delays_ms: tuple[float, ...] = (10.0, 40.0)  # one-way
    rate_mbps: float = 100.0
    reps: int = 3
    flows: int = 2  # concurrent flows per trial (dumbbell)
    size_bytes: int = 20_000_000
    probes: int = 200  # per phase per trial
    seed: int = 7
    name: str = "synthetic"


def _goodput(
    rng: np.random.Generator, proto: str, rate: float, loss_pct: float, rtt_ms: float, flows: int
) -> float:
    share = rate * 0.94 / flows
    if proto == "qtp":  # model-based: keeps goodput under random loss
        g = share * (1 - loss_pct / 100) * 0.97
    else:
        mathis = 1448 * 8 / (rtt_ms / 1e3) * 1.22 / np.sqrt(max(loss_pct / 100, 1e-9)) / 1e6
        g = min(share, mathis)
    g = min(g, PROTO_CEILING.get(proto, 1e9) / flows)
    return float(max(0.2, g * rng.normal(1.0, 0.05)))


def _paths(spec: SyntheticSpec) -> list[tuple[str, str, str, str, str, float]]:
    """(src, dst, path_kind, src_op, dst_op, configured one-way ms) per flow."""
    if spec.kind == "dumbbell":
        return [(f"h{2 * i + 1}", f"h{2 * i + 2}", "", "", "", 0.0) for i in range(spec.flows)]
    out = []
    for a, b in itertools.combinations(HUBS, 2):
        _, oa, la, lo_a = HUBS[a]
        _, ob, lb, lo_b = HUBS[b]
        km = great_circle_km(la, lo_a, lb, lo_b)
        owd = km * 1.85 * 0.005 + 5.0 + (7.0 if oa != ob else 0.0)  # cross-operator hairpin
        out.append((a, b, "intra" if oa == ob else "cross", oa, ob, owd))
    return out


def write_synthetic_run(run_dir: str | Path, spec: SyntheticSpec | None = None) -> Path:
    """Write results.csv, timeseries.csv, probes.csv, metadata.json and trials/*/done.json."""
    spec = spec or SyntheticSpec()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    if spec.kind == "dumbbell":
        grid = {
            "bottleneck.loss_pct": list(spec.losses),
            "bottleneck.delay_ms": list(spec.delays_ms),
            "protocol": list(spec.protocols),
        }
    else:
        grid = {"protocol": list(spec.protocols)}
    keys = list(grid)
    points = list(itertools.product(*grid.values()))
    paths = _paths(spec)
    trials = [(p, r) for p in range(len(points)) for r in range(spec.reps)]
    order = rng.permutation(len(trials))
    rows, ts_rows, probe_rows = [], [], []
    for (p, r), pos in zip(trials, order, strict=True):
        values = dict(zip(keys, points[p], strict=True))
        proto = values["protocol"]
        trial = f"p{p}-r{r}"
        trial_seed = spec.seed * 1000 + r
        trng = np.random.default_rng([spec.seed, p, r])
        cpu_limited = proto == "aioquic" and trng.random() < 0.5
        nrng = np.random.default_rng([spec.seed, p, r, 1])  # its own stream: other columns unchanged
        steal, late = round(float(nrng.gamma(1.0, 0.6)), 2), round(float(0.1 + nrng.gamma(1.0, 0.2)), 3)
        goodputs = []
        for f, (src, dst, kind, sop, dop, owd_cfg) in enumerate(paths):
            loss = values.get("bottleneck.loss_pct", 0.0 if kind != "cross" else 0.05)
            owd_cfg = values.get("bottleneck.delay_ms", owd_cfg) + (0.1 if spec.kind == "dumbbell" else 0.0)
            rtt = 2 * owd_cfg
            sharing = len(paths) if spec.kind == "dumbbell" else 1  # hub pairs use disjoint paths
            g = _goodput(trng, proto, spec.rate_mbps, loss, rtt, sharing)
            fct = spec.size_bytes * 8 / (g * 1e6) + 3 * rtt / 1e3
            g = spec.size_bytes * 8 / fct / 1e6
            goodputs.append(g)
            queue = trng.gamma(2.0, 1.5 if proto != "qtp" else 0.4)
            owd_loaded = owd_cfg + queue + trng.exponential(0.3, spec.probes)
            lost = trng.random(spec.probes) < loss / 100
            owd_idle = owd_cfg + trng.exponential(0.05, spec.probes)
            lost_idle = trng.random(spec.probes) < loss / 100
            sent = int(spec.size_bytes / 1400)
            retrans = int(sent * (loss / 100) * trng.uniform(1.0, 1.3))
            for phase, arr, lm in (("idle", owd_idle, lost_idle), ("loaded", owd_loaded, lost)):
                t0 = 0.0 if phase == "idle" else 1.0
                for i in range(spec.probes):
                    probe_rows.append((trial, src, dst, phase, i, t0 + i * 0.01, np.nan if lm[i] else arr[i]))
            ds = delay_summary(np.where(lost, np.nan, owd_loaded))
            flags = ["cpu_limited"] if cpu_limited else []
            if spec.kind == "hubs" and f == 0 and r == 0 and p == 0:
                flags.append("link_out_of_tolerance")
            rows.append(
                {
                    "trial": trial,
                    "point": p,
                    "rep": r,
                    "order": int(pos),
                    "seed": trial_seed,
                    **values,
                    "flow": f,
                    "protocol": proto,
                    "cc": PROTO_CC.get(proto, ""),
                    "src": src,
                    "dst": dst,
                    "path_kind": kind,
                    "src_operator": sop,
                    "dst_operator": dop,
                    "size_bytes": spec.size_bytes,
                    "bytes": spec.size_bytes,
                    "start_s": 1.0,
                    "fct_s": fct,
                    "goodput_mbps": g,
                    "ok": True,
                    "error": "",
                    "rtt_min_ms": rtt + 0.05,
                    "rtt_smoothed_ms": rtt + 2 * queue,
                    "retransmits": retrans,
                    "packets_sent": sent + retrans,
                    "packets_lost": retrans,
                    "cwnd_bytes": int(g * 1e6 / 8 * rtt / 1e3),
                    "cpu_client_s": fct * 0.4,
                    "cpu_server_s": fct * 0.3,
                    "cpu_limited": cpu_limited,
                    "configured_rate_mbps": spec.rate_mbps,
                    "configured_owd_ms": owd_cfg,
                    "configured_loss_pct": loss,
                    "base_rtt_ms": rtt + trng.exponential(0.1),
                    "loaded_rtt_ms": rtt + 2 * queue,
                    **{
                        k: ds[k]
                        for k in (
                            "owd_min_ms",
                            "owd_mean_ms",
                            "owd_p50_ms",
                            "owd_p95_ms",
                            "owd_p99_ms",
                            "ipdv_ms",
                            "jitter_ms",
                            "probe_loss_pct",
                        )
                    },
                    "queue_drops": int(trng.poisson(5)),
                    "loss_drops": int(sent * loss / 100),
                    "fairness": np.nan,
                    "machine_steal_pct": steal,
                    "machine_late_p99_ms": late,
                    "flags": ";".join(flags),
                }
            )
            nbins = max(2, int(fct / 0.1))
            base = trng.normal(g, g * 0.15, nbins).clip(0)
            base[0] *= 0.3  # slow start
            for b in range(nbins):
                ts_rows.append((trial, f, proto, PROTO_CC.get(proto, ""), round(1.0 + b * 0.1, 3), base[b]))
        if len(paths) > 1:
            for row in rows[-len(paths) :]:
                row["fairness"] = jain_index(goodputs)
        tdir = run_dir / "trials" / trial
        tdir.mkdir(parents=True, exist_ok=True)
        (tdir / "done.json").write_text(json.dumps({"trial": trial}))
    pd.DataFrame(rows).to_csv(run_dir / "results.csv", index=False)
    pd.DataFrame(ts_rows, columns=["trial", "flow", "protocol", "cc", "t_s", "mbps"]).to_csv(
        run_dir / "timeseries.csv", index=False, float_format="%.4f"
    )
    pd.DataFrame(probe_rows, columns=["trial", "src", "dst", "phase", "seq", "send_s", "owd_ms"]).to_csv(
        run_dir / "probes.csv", index=False, float_format="%.4f"
    )
    (run_dir / "metadata.json").write_text(json.dumps(_metadata(spec, grid, len(trials)), indent=1))
    return run_dir


def _link(name: str, a: str, b: str, bw: float, delay: float, loss: float) -> dict:
    """A links_applied entry as the network layer records it (Network.applied())."""
    params = {
        "bw_mbps": bw,
        "delay_ms": delay,
        "jitter_ms": 0.0,
        "loss_pct": loss,
        "loss_burst": None,
        "queue_pkts": 64,
    }
    return {
        "index": 0,
        "link": name,
        "a": a,
        "b": b,
        "mode": "emulator",
        "mtu": 1500,
        "down": False,
        "root_interfaces": [],
        "ab": dict(params),
        "ba": dict(params),
        "notes": [],
    }


def _fidelity() -> dict:
    """A passed fidelity check in the shape of `testbed check --json` (testbed/check.py)."""
    rows = [
        {
            "name": "delay 20 ms",
            "quantity": "rtt_ms",
            "configured": 20.0,
            "expected": 40.06,
            "measured": 40.3,
            "low": 38.86,
            "high": 41.26,
            "tolerance": "±1.20 ms",
            "passed": True,
            "detail": "median RTT of 50 pings",
        },
        {
            "name": "rate 100 Mbit/s",
            "quantity": "rate_mbps",
            "configured": 100.0,
            "expected": 100.0,
            "measured": 97.1,
            "low": 95.0,
            "high": 105.0,
            "tolerance": "±5 %",
            "passed": True,
            "detail": "TCP goodput 94.2 Mbit/s, L2 rate 97.1",
        },
    ]
    return {
        "backend": {"name": "userspace", "reason": "synthetic"},
        "quick": True,
        "passed": True,
        "backends": [{"backend": "userspace", "base": {"rtt_median_ms": 0.06}, "rows": rows, "passed": True}],
    }


def _metadata(spec: SyntheticSpec, grid: dict, n_trials: int) -> dict:
    if spec.kind == "hubs":
        nodes = {
            n: {"kind": "hub", "operator": op, "site": site, "lat": lat, "lon": lon}
            for n, (site, op, lat, lon) in HUBS.items()
        }
        pairs = list(itertools.combinations(HUBS, 2))[:6]
        links = [_link(f"{a}-{b}", a, b, spec.rate_mbps, 5.0, 0.0) for a, b in pairs]
        topo = {"name": "hubs", "nodes": nodes, "links_applied": links}
    else:
        nodes = {
            **{f"h{i}": {"kind": "host"} for i in range(1, 2 * spec.flows + 1)},
            "r1": {"kind": "router"},
            "r2": {"kind": "router"},
        }
        topo = {
            "name": "dumbbell",
            "nodes": nodes,
            "links_applied": [
                _link("bottleneck", "r1", "r2", spec.rate_mbps, spec.delays_ms[0], spec.losses[0])
            ],
        }
    return {
        "name": spec.name,
        "spec": {"name": spec.name, "topology": spec.kind, "grid": grid},
        "resolved": {"name": spec.name, "topology": spec.kind, "grid": grid, "repeat": spec.reps},
        "spec_file": f"experiments/{spec.name}.yaml",
        "seed": spec.seed,
        "repeat": spec.reps,
        "grid_keys": list(grid),
        "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
        "versions": {
            "testbed": "0.1.0",
            "python": "3.11.2",
            "aioquic": "1.7.2",
            "mininet": "2.3.0",
            "kernel": "6.1.0",
            "iperf3": "3.12",
        },
        "machine": {"hostname": "synthetic", "cpus": 2, "cpu_model": "synthetic CPU", "memory_gb": 24},
        "link_backend": {"name": "userspace", "reason": "sch_netem missing (synthetic)"},
        "fidelity_check": _fidelity(),
        "topology": topo,
        "started": "2026-11-29T10:00:00+00:00",
        "ended": "2026-11-29T10:42:00+00:00",
        "status": "complete",
        "trials": {"total": n_trials, "done": n_trials},
    }
