"""Columns of a run directory's tables (docs/results-format.md).

Written by `testbed.experiment`, read by `testbed.report`: one definition, so writer and reader
cannot drift apart. Grid columns (named as the spec's grid keys) stand between HEAD and TAIL.
"""
from __future__ import annotations

RESULT_COLUMNS_HEAD = ("trial", "point", "rep", "order", "seed")
RESULT_COLUMNS_TAIL = (
    "flow", "flow_spec", "label", "protocol", "cc", "src", "dst", "path_kind", "src_operator",
    "dst_operator", "size_bytes", "duration_s", "bytes", "start_s", "fct_s", "goodput_mbps",
    "window_goodput_mbps", "ok", "error", "rtt_min_ms", "rtt_smoothed_ms", "retransmits",
    "packets_sent", "packets_lost", "cwnd_bytes", "cpu_client_s", "cpu_server_s", "cpu_limited",
    "configured_rate_mbps", "configured_owd_ms", "configured_loss_pct", "base_rtt_ms",
    "loaded_rtt_ms", "owd_min_ms", "owd_mean_ms", "owd_p50_ms", "owd_p95_ms", "owd_p99_ms",
    "ipdv_ms", "jitter_ms", "probe_loss_pct", "idle_owd_p50_ms", "idle_owd_p95_ms",
    "queue_drops", "loss_drops", "fairness", "machine_steal_pct", "machine_late_p99_ms", "flags",
)  # fmt: skip
# Accepted by readers when a writer knows them (RFC 6349 efficiency from byte counts).
OPTIONAL_RESULT_COLUMNS = ("bytes_sent", "bytes_retransmitted")
TEXT_RESULT_COLUMNS = (
    "trial", "flow_spec", "label", "protocol", "cc", "src", "dst", "path_kind",
    "src_operator", "dst_operator", "error", "flags",
)  # fmt: skip
BOOL_RESULT_COLUMNS = ("ok", "cpu_limited")

STANDARD_RESULT_COLUMNS = (*RESULT_COLUMNS_HEAD, *RESULT_COLUMNS_TAIL, *OPTIONAL_RESULT_COLUMNS)
NUMERIC_RESULT_COLUMNS = tuple(
    c for c in STANDARD_RESULT_COLUMNS if c not in TEXT_RESULT_COLUMNS and c not in BOOL_RESULT_COLUMNS
)

# A trial ran on a noisy machine (its delays include the machine's own lateness) from this much
# hypervisor steal or real-time wake-up lateness (machine_steal_pct, machine_late_p99_ms).
NOISY_STEAL_PCT = 1.0
NOISY_LATE_P99_MS = 0.5  # an idle 2-core VM here: p99 0.14-0.3 ms

TIMESERIES_COLUMNS = ("trial", "flow", "protocol", "cc", "t_s", "mbps")
PROBE_COLUMNS = ("trial", "src", "dst", "phase", "seq", "send_s", "owd_ms")


def result_columns(grid_keys: list[str]) -> list[str]:
    """Column order of results.csv for a run with these grid keys."""
    return [*RESULT_COLUMNS_HEAD, *grid_keys, *RESULT_COLUMNS_TAIL]
