"""QoS metrics and grading against ITU-T / IETF references: pure functions, numpy in, floats out.

Conventions (all functions):
- One-way delays are milliseconds in a 1-D array in *sequence order* (one element per packet
  sent). A lost packet is ``NaN``. A packet whose delay exceeds ``tmax_ms`` (3 s, Y.1540 / RFC
  7680 "Tmax") also counts as lost: :func:`received` applies that rule everywhere.
- Losses are fractions (0..1) where a standard defines a ratio (IPLR), percent where the
  results format uses percent (``loss_pct``); parameter names say which.
- "Undefined" results (nothing received, nothing sent) are ``NaN``, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TMAX_MS = 3000.0  # Y.1540 / RFC 7680: a packet later than this is lost
IPDV_QUANTILE = 1 - 1e-3  # Y.1540 IPDV upper quantile


def _arr(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=float).ravel()


def lost_mask(owd_ms: Sequence[float] | np.ndarray, tmax_ms: float = TMAX_MS) -> np.ndarray:
    """RFC 7680 §2.4 one-way loss per packet: True when the packet never arrived (NaN) or
    arrived later than Tmax (``tmax_ms``, default 3 s as in Y.1540)."""
    d = _arr(owd_ms)
    with np.errstate(invalid="ignore"):
        return np.isnan(d) | (d > tmax_ms)


def received(owd_ms: Sequence[float] | np.ndarray, tmax_ms: float = TMAX_MS) -> np.ndarray:
    """Delays of the packets that count as delivered (RFC 7679 finite one-way delays within Tmax)."""
    d = _arr(owd_ms)
    return d[~lost_mask(d, tmax_ms)]


def one_way_delay_ms(
    send_s: Sequence[float] | np.ndarray, recv_s: Sequence[float] | np.ndarray
) -> np.ndarray:
    """RFC 7679 one-way delay ``recv - send`` in ms per packet; NaN where ``recv`` is NaN (lost).

    Exact here: all emulated hosts share one clock, so no synchronisation error term.
    """
    return (_arr(recv_s) - _arr(send_s)) * 1e3


def iptd_ms(owd_ms: Sequence[float] | np.ndarray, tmax_ms: float = TMAX_MS) -> float:
    """ITU-T Y.1540 §6.2 IPTD: mean one-way transfer delay of the delivered packets (NaN if none)."""
    d = received(owd_ms, tmax_ms)
    return float(d.mean()) if d.size else math.nan


def ipdv_ms(
    owd_ms: Sequence[float] | np.ndarray, quantile: float = IPDV_QUANTILE, tmax_ms: float = TMAX_MS
) -> float:
    """ITU-T Y.1540 §6.2.4 / Y.1541 IPDV: the (1 − 10⁻³) quantile of one-way delay minus the minimum.

    The quantile is numpy's linear-interpolation estimate: with fewer than ~1000 packets it lies
    between the two largest delays. NaN when nothing was delivered.
    """
    d = received(owd_ms, tmax_ms)
    if not d.size:
        return math.nan
    return float(np.quantile(d, quantile) - d.min())


def iplr(owd_ms: Sequence[float] | np.ndarray, tmax_ms: float = TMAX_MS) -> float:
    """ITU-T Y.1540 §6.4 IPLR: lost / sent, as a fraction; late (> 3 s) packets are lost.
    NaN when nothing was sent."""
    lost = lost_mask(owd_ms, tmax_ms)
    return float(lost.mean()) if lost.size else math.nan


def iplr_from_counts(sent: int, lost: int) -> float:
    """Y.1540 IPLR from counters (lost / sent); NaN when nothing was sent."""
    return lost / sent if sent > 0 else math.nan


def iper(errored: int, delivered: int) -> float:
    """ITU-T Y.1540 §6.3 IPER: errored / delivered packets, ``delivered`` counting successful and
    errored ones. NaN when nothing was delivered."""
    return errored / delivered if delivered > 0 else math.nan


def interarrival_jitter_ms(owd_ms: Sequence[float] | np.ndarray, tmax_ms: float = TMAX_MS) -> float:
    """RFC 3550 §6.4.1 interarrival jitter: J += (|D(i−1,i)| − J) / 16 over consecutive received
    packets (lost ones skipped), where D(i−1,i) = transit(i) − transit(i−1) is the difference of
    one-way delays. Returns the final J (0 with fewer than two packets received)."""
    d = received(owd_ms, tmax_ms)
    j = 0.0
    for diff in np.abs(np.diff(d)):
        j += (diff - j) / 16.0
    return float(j)


def pdv_ms(owd_ms: Sequence[float] | np.ndarray, tmax_ms: float = TMAX_MS) -> np.ndarray:
    """RFC 5481 §4.2 packet delay variation: D(i) − D_min per delivered packet (the distribution
    used for de-jitter buffer sizing). Empty when nothing was delivered."""
    d = received(owd_ms, tmax_ms)
    return d - d.min() if d.size else d


def ipdv_pairs_ms(owd_ms: Sequence[float] | np.ndarray, tmax_ms: float = TMAX_MS) -> np.ndarray:
    """RFC 3393 / RFC 5481 §4.1 IPDV: D(i) − D(i−1) for consecutive *sequence numbers* both
    delivered (a pair with a lost packet is undefined and dropped). Signed, in ms."""
    d = _arr(owd_ms)
    lost = lost_mask(d, tmax_ms)
    diffs = np.diff(d)
    ok = ~(lost[1:] | lost[:-1])
    return diffs[ok]


def delay_summary(owd_ms: Sequence[float] | np.ndarray, tmax_ms: float = TMAX_MS) -> dict[str, float]:
    """Per-trial probe statistics under the results.csv column names (docs/results-format.md):
    owd_min/mean/p50/p95/p99_ms, ipdv_ms (Y.1540), jitter_ms (RFC 3550), probe_loss_pct
    (Y.1540 IPLR × 100), probes_sent, probes_received. Delay fields are NaN when nothing arrived."""
    d = _arr(owd_ms)
    r = received(d, tmax_ms)
    q = np.quantile(r, [0.5, 0.95, 0.99]) if r.size else [math.nan] * 3
    return {
        "owd_min_ms": float(r.min()) if r.size else math.nan,
        "owd_mean_ms": iptd_ms(d, tmax_ms),
        "owd_p50_ms": float(q[0]),
        "owd_p95_ms": float(q[1]),
        "owd_p99_ms": float(q[2]),
        "ipdv_ms": ipdv_ms(d, tmax_ms=tmax_ms),
        "jitter_ms": interarrival_jitter_ms(d, tmax_ms) if r.size else math.nan,
        "probe_loss_pct": iplr(d, tmax_ms) * 100.0,
        "probes_sent": float(d.size),
        "probes_received": float(r.size),
    }


# ----------------------------------------------------------------------------- Y.1541 classes


@dataclass(frozen=True)
class Y1541Class:
    """Upper bounds of one Y.1541 QoS class; None = unspecified."""

    number: int
    iptd_ms: float | None
    ipdv_ms: float | None
    iplr: float | None
    use: str


Y1541_CLASSES: dict[int, Y1541Class] = {
    0: Y1541Class(0, 100.0, 50.0, 1e-3, "real-time, jitter sensitive, highly interactive"),
    1: Y1541Class(1, 400.0, 50.0, 1e-3, "real-time, jitter sensitive, interactive"),
    2: Y1541Class(2, 100.0, None, 1e-3, "transaction data, highly interactive"),
    3: Y1541Class(3, 400.0, None, 1e-3, "transaction data, interactive"),
    4: Y1541Class(4, 1000.0, None, 1e-3, "low loss only (bulk data, video streaming)"),
    5: Y1541Class(5, None, None, None, "default IP networks"),
    6: Y1541Class(6, 100.0, 50.0, 1e-5, "high bit-rate, low loss"),
    7: Y1541Class(7, 400.0, 50.0, 1e-5, "high bit-rate, low loss"),
}
# "Best" = strictest first. 6 dominates every class; 0 and 7 are not comparable (0 has the tighter
# delay, 7 the tighter loss): delay ranks first because interactivity is what compute
# interconnection sells. 1 vs 2 likewise (1 bounds IPDV, 2 has the tighter IPTD).
Y1541_PREFERENCE = (6, 0, 7, 1, 2, 3, 4, 5)


def _within(value: float, bound: float | None) -> bool:
    if bound is None:
        return True
    return not math.isnan(value) and value <= bound


def y1541_classes_met(iptd: float, ipdv: float, loss_ratio: float) -> list[int]:
    """ITU-T Y.1541 Table 1: the classes (0–7) whose IPTD, IPDV and IPLR bounds the path meets.

    ``iptd``/``ipdv`` in ms, ``loss_ratio`` a fraction. A NaN metric (e.g. nothing delivered) meets
    only unspecified bounds, so class 5 is always met.
    """
    return sorted(
        c.number
        for c in Y1541_CLASSES.values()
        if _within(iptd, c.iptd_ms) and _within(ipdv, c.ipdv_ms) and _within(loss_ratio, c.iplr)
    )


def y1541_best_class(iptd: float, ipdv: float, loss_ratio: float) -> int:
    """The strictest Y.1541 class met, in the order ``Y1541_PREFERENCE`` (6, 0, 7, 1, 2, 3, 4, 5)."""
    met = set(y1541_classes_met(iptd, ipdv, loss_ratio))
    return next(c for c in Y1541_PREFERENCE if c in met)


# ----------------------------------------------------------------------------- G.107 E-model

EMODEL_R0 = 93.2  # G.107 default Ro − Is + A (A = 0)
G711_BPL = 4.3  # G.113 Appendix I: G.711 without packet loss concealment
G711_BPL_PLC = 25.1  # G.711 with PLC (Appendix I of G.711)


def emodel_id(delay_ms: float) -> float:
    """ITU-T G.107 delay impairment (Cole–Rosenbluth simplification):
    Id = 0.024·d + 0.11·(d − 177.3)·H(d − 177.3), d = one-way mouth-to-ear delay in ms."""
    d = float(delay_ms)
    return 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)


def emodel_ie_eff(loss_pct: float, ie: float = 0.0, bpl: float = G711_BPL, burst_r: float = 1.0) -> float:
    """ITU-T G.107 §7.6 effective equipment impairment:
    Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl), Ppl = packet loss in percent."""
    ppl = float(loss_pct)
    if ppl <= 0:
        return ie
    return ie + (95.0 - ie) * ppl / (ppl / burst_r + bpl)


def emodel_r(
    delay_ms: float,
    loss_pct: float,
    *,
    ie: float = 0.0,
    bpl: float = G711_BPL,
    burst_r: float = 1.0,
    extra_delay_ms: float = 0.0,
) -> float:
    """ITU-T G.107 transmission rating with default parameters: R = 93.2 − Id − Ie,eff.

    Defaults model G.711 without PLC (Ie = 0, Bpl = 4.3; pass ``bpl=G711_BPL_PLC`` for PLC),
    random loss (BurstR = 1). ``delay_ms`` is the network one-way delay; add codec and de-jitter
    buffer delay via ``extra_delay_ms`` to get mouth-to-ear. NaN inputs give NaN.
    """
    if math.isnan(delay_ms) or math.isnan(loss_pct):
        return math.nan
    return EMODEL_R0 - emodel_id(delay_ms + extra_delay_ms) - emodel_ie_eff(loss_pct, ie, bpl, burst_r)


def mos_from_r(r: float) -> float:
    """ITU-T G.107 Annex B: MOS_CQE = 1 + 0.035R + 7·10⁻⁶·R(R − 60)(100 − R) for 0 < R < 100;
    1 for R ≤ 0 and 4.5 for R ≥ 100."""
    if math.isnan(r):
        return math.nan
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)


def g109_band(r: float) -> str:
    """ITU-T G.109 user satisfaction band of an R value."""
    if math.isnan(r):
        return "undefined"
    for low, label in (
        (90, "very satisfied"),
        (80, "satisfied"),
        (70, "some users dissatisfied"),
        (60, "many users dissatisfied"),
        (50, "nearly all users dissatisfied"),
    ):
        if r >= low:
            return label
    return "not recommended"


G114_LIMIT_MS = 150.0


def g114_ok(owd_ms: float, limit_ms: float = G114_LIMIT_MS) -> bool:
    """ITU-T G.114: one-way delay below 150 ms is acceptable for most applications."""
    return not math.isnan(owd_ms) and owd_ms < limit_ms


# ----------------------------------------------------------------------------- Responsiveness (RPM)

# Our pass bands (the draft defines none relative to the baseline): share of the best possible RPM.
RPM_GOOD_SHARE = 0.8  # latency under load <= 1.25 x idle RTT
RPM_FAIR_SHARE = 0.5  # <= 2 x idle RTT


def rpm(latency_under_load_ms: float) -> float:
    """IETF IPPM responsiveness draft: round trips per minute under working conditions,
    RPM = 60 000 / (latency under load, ms). NaN for non-positive or NaN latency."""
    if math.isnan(latency_under_load_ms) or latency_under_load_ms <= 0:
        return math.nan
    return 60000.0 / latency_under_load_ms


def rpm_max(base_rtt_ms: float) -> float:
    """The highest RPM a path allows: 60 000 / idle RTT (a 40 ms path cannot exceed 1 500 RPM)."""
    return rpm(base_rtt_ms)


def rpm_grade(loaded_rtt_ms: float, base_rtt_ms: float) -> tuple[float, str]:
    """RPM graded against the baseline: (share of the maximum = base / loaded RTT, band).
    Bands: ``good`` >= RPM_GOOD_SHARE, ``fair`` >= RPM_FAIR_SHARE, else ``poor``."""
    share = rpm(loaded_rtt_ms) / rpm_max(base_rtt_ms)
    if math.isnan(share):
        return math.nan, "undefined"
    share = min(share, 1.0)  # measurement noise can put loaded a hair below idle
    band = "good" if share >= RPM_GOOD_SHARE else "fair" if share >= RPM_FAIR_SHARE else "poor"
    return share, band


# ----------------------------------------------------------------------------- RFC 6349

# Overhead model per MTU-sized IP packet (bytes).
ETH_L1L2_OVERHEAD = 38  # preamble+SFD 8, MAC header 14, FCS 4, inter-frame gap 12
IP_HEADER = 20
TCP_HEADER = 20
TCP_OPTIONS = 12  # timestamps option (10 B padded to 12), on every segment in Linux
UDP_HEADER = 8
QUIC_OVERHEAD = 1 + 8 + 4 + 16 + 8  # short header flags, 8 B DCID, <=4 B PN, AEAD tag, ~STREAM frame header
TRANSPORT_OVERHEAD = {
    "tcp": TCP_HEADER + TCP_OPTIONS,
    "udp": UDP_HEADER,
    "quic": UDP_HEADER + QUIC_OVERHEAD,
}
# Our pass bands (RFC 6349 sets none).
TTR_PASS = 1.25
EFFICIENCY_PASS_PCT = 98.0
BUFFER_DELAY_PASS_PCT = 50.0


def transport_of(protocol: str) -> str:
    """Overhead family of a protocol registry name: QUIC-based ones ("qtp", "aioquic", names
    containing "quic") are ``quic``; everything else ``tcp``."""
    p = protocol.lower()
    return "quic" if p in ("qtp", "aioquic") or "quic" in p else "tcp"


def ideal_goodput_mbps(
    rate_mbps: float, transport: str = "tcp", packet_bytes: int = 1500, link_overhead: int = ETH_L1L2_OVERHEAD
) -> float:
    """RFC 6349 §3.3.1 maximum achievable goodput of a bottleneck after L1–L4 header overhead:
    rate × payload / wire bytes per packet, where an IP packet of ``packet_bytes`` (MTU) carries
    ``packet_bytes − 20 − transport overhead`` payload and costs ``packet_bytes + 38`` on the wire.
    Example: 100 Mbit/s TCP, MTU 1500 → 100 × 1448 / 1538 = 94.15 Mbit/s."""
    payload = packet_bytes - IP_HEADER - TRANSPORT_OVERHEAD[transport]
    return rate_mbps * payload / (packet_bytes + link_overhead)


def ideal_transfer_time_s(
    size_bytes: float, rate_mbps: float, transport: str = "tcp", packet_bytes: int = 1500
) -> float:
    """RFC 6349 §4.1 ideal transfer time: size / maximum achievable goodput (NaN if unknown rate)."""
    if not rate_mbps or math.isnan(rate_mbps) or rate_mbps <= 0:
        return math.nan
    return size_bytes * 8 / (ideal_goodput_mbps(rate_mbps, transport, packet_bytes) * 1e6)


def transfer_time_ratio(
    actual_s: float, size_bytes: float, rate_mbps: float, transport: str = "tcp", packet_bytes: int = 1500
) -> float:
    """RFC 6349 §4.1 Transfer Time Ratio = actual / ideal transfer time (1.0 = line rate).
    The actual time includes connection set-up, as a user sees it."""
    ideal = ideal_transfer_time_s(size_bytes, rate_mbps, transport, packet_bytes)
    if math.isnan(ideal) or ideal <= 0:
        return math.nan
    return actual_s / ideal


def efficiency_pct(transmitted: float, retransmitted: float) -> float:
    """RFC 6349 §4.2 TCP Efficiency % = (transmitted − retransmitted) / transmitted × 100.
    Works on bytes or packets alike (QUIC: packets sent and packets declared lost)."""
    if not transmitted or math.isnan(transmitted) or math.isnan(retransmitted) or transmitted <= 0:
        return math.nan
    return (transmitted - retransmitted) / transmitted * 100.0


def buffer_delay_pct(mean_rtt_ms: float, base_rtt_ms: float) -> float:
    """RFC 6349 §4.3 Buffer Delay % = (mean RTT during transfer − baseline RTT) / baseline × 100."""
    if math.isnan(mean_rtt_ms) or math.isnan(base_rtt_ms) or base_rtt_ms <= 0:
        return math.nan
    return (mean_rtt_ms - base_rtt_ms) / base_rtt_ms * 100.0


# ----------------------------------------------------------------------------- fairness


def jain_index(x: Sequence[float] | np.ndarray) -> float:
    """Jain's fairness index J = (Σx)² / (n·Σx²), 1/n ≤ J ≤ 1 (R. Jain, DEC-TR-301, 1984).
    NaN values are ignored; NaN when no values remain or all are zero (fairness undefined)."""
    a = _arr(x)
    a = a[~np.isnan(a)]
    sq = float(np.sum(a * a))
    if not a.size or sq == 0:
        return math.nan
    return float(a.sum() ** 2 / (a.size * sq))


# ----------------------------------------------------------------------------- policy (hubs.md)

FIBRE_US_PER_KM = 5.0  # light in fibre: ~5 µs per km, one way
POLICY_LIMITS_MS = {"inter_hub": 20.0, "cluster": 5.0, "metro": 1.0}  # "1-5-20" latency circles
DIRECT_LINK_FACTOR = 1.5
CROSS_OP_LATENCY_MS = 35.0
CROSS_OP_LOSS_PCT = 0.5
CROSS_OP_WORSE_FACTOR = 1.25
LOSS_FLOOR_PCT = 0.01  # losses below this count as this in the "25 % worse" loss comparison


@dataclass(frozen=True)
class PolicyCheck:
    """One policy threshold checked: ``passed`` is None when the value is undefined (NaN)."""

    name: str
    value: float
    limit: float
    unit: str
    passed: bool | None
    source: str


def _check(name: str, value: float, limit: float, unit: str, source: str) -> PolicyCheck:
    passed = None if value is None or math.isnan(value) else bool(value <= limit)
    return PolicyCheck(name, math.nan if value is None else float(value), float(limit), unit, passed, source)


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance on a 6371 km sphere."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def fibre_latency_ms(distance_km: float) -> float:
    """Theoretical one-way fibre latency: great-circle km × 5 µs (hubs.md)."""
    return distance_km * FIBRE_US_PER_KM / 1000.0


def latency_circle_check(owd_ms: float, scope: str = "inter_hub") -> PolicyCheck:
    """ "1-5-20" latency circles (hubs.md): one-way ≤ 20 ms between hubs, ≤ 5 ms cluster to its
    surroundings, ≤ 1 ms inside a metro. ``scope``: inter_hub | cluster | metro."""
    return _check(
        f"{scope} one-way latency", owd_ms, POLICY_LIMITS_MS[scope], "ms", "hubs.md latency circles (1-5-20)"
    )


def direct_link_check(owd_ms: float, distance_km: float) -> PolicyCheck:
    """Computing Infrastructure Action Plan (2023): a direct link's latency ≤ 1.5 × theoretical
    fibre latency (great-circle km × 5 µs)."""
    return _check(
        "≤ 1.5 × fibre latency (direct-link target)",
        owd_ms,
        DIRECT_LINK_FACTOR * fibre_latency_ms(distance_km),
        "ms",
        "Action Plan 2023 (hubs.md)",
    )


def cross_operator_checks(
    owd_ms: float, loss_pct: float, intra_owd_ms: float | None = None, intra_loss_pct: float | None = None
) -> list[PolicyCheck]:
    """Inter-operator quality fault thresholds (MIIT, hubs.md): cross-network latency ≤ 35 ms,
    loss ≤ 0.5 %, and neither more than 25 % worse than the intra-operator figures (when given).
    For the loss comparison both losses are floored at LOSS_FLOOR_PCT (0.01 %), so that a
    lossless intra path does not make any measurable loss a fault."""
    out = [
        _check("cross-operator latency", owd_ms, CROSS_OP_LATENCY_MS, "ms", "MIIT threshold (hubs.md)"),
        _check("cross-operator loss", loss_pct, CROSS_OP_LOSS_PCT, "%", "MIIT threshold (hubs.md)"),
    ]
    if intra_owd_ms is not None and not math.isnan(intra_owd_ms):
        out.append(
            _check(
                "cross latency ≤ 1.25 × intra",
                owd_ms,
                CROSS_OP_WORSE_FACTOR * intra_owd_ms,
                "ms",
                "MIIT threshold (hubs.md)",
            )
        )
    if intra_loss_pct is not None and not math.isnan(intra_loss_pct):
        floor = max(intra_loss_pct, LOSS_FLOOR_PCT)
        value = loss_pct if math.isnan(loss_pct) else max(loss_pct, LOSS_FLOOR_PCT)
        out.append(
            _check(
                "cross loss ≤ 1.25 × intra",
                value,
                CROSS_OP_WORSE_FACTOR * floor,
                "%",
                "MIIT threshold (hubs.md)",
            )
        )
    return out
