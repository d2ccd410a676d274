"""Metrics and grading: pure functions over numpy arrays (see qos.py for the conventions).

`qos`: Y.1540/Y.1541, RFC 3550/5481/7679/7680, G.107/G.109/G.114, RPM, RFC 6349, Jain, policy checks.
`stats`: summaries, bootstrap confidence intervals, paired and unpaired comparisons.
"""

from .qos import (
    TMAX_MS,
    delay_summary,
    efficiency_pct,
    emodel_r,
    interarrival_jitter_ms,
    ipdv_ms,
    iplr,
    iptd_ms,
    jain_index,
    mos_from_r,
    transfer_time_ratio,
    y1541_best_class,
    y1541_classes_met,
)
from .stats import bootstrap_ci, difference, paired_ratio, summarize, summarize_groups

__all__ = [
    "TMAX_MS",
    "bootstrap_ci",
    "delay_summary",
    "difference",
    "efficiency_pct",
    "emodel_r",
    "interarrival_jitter_ms",
    "ipdv_ms",
    "iplr",
    "iptd_ms",
    "jain_index",
    "mos_from_r",
    "paired_ratio",
    "summarize",
    "summarize_groups",
    "transfer_time_ratio",
    "y1541_best_class",
    "y1541_classes_met",
]
