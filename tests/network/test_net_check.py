"""The fidelity check (`testbed check`) measures and grades each row; its result is JSON."""
from __future__ import annotations

import json

import pytest

from testbed.check import (
    QUICK_ROWS,
    SATURATED_CPU_PCT,
    Row,
    _Checker,
    format_check,
    over_capacity,
    rate_queue,
    reference_plan,
    run_check,
)
from testbed.network import Network


def assert_graded_or_over_capacity(row: dict) -> None:
    """A row passes, or (rate rows only) it fell short while the emulator ran out of CPU: then it
    is reported as over the emulator's measured capacity, not graded, never as a silent pass."""
    shown = {k: row.get(k) for k in ("name", "measured", "low", "high", "capacity_mbps", "detail")}
    if row["passed"] is None:
        assert row["quantity"] == "rate_mbps" and row["over_capacity"], shown
        assert row["measured"] < row["low"] and row["capacity_mbps"] == row["measured"], shown
        assert row["emulator_cpu_pct"] >= SATURATED_CPU_PCT, shown
        assert "over the emulator's measured capacity" in row["detail"], shown
    else:
        assert row["passed"], shown
        assert not row.get("over_capacity"), shown


@pytest.mark.network
def test_quick_fidelity_check_passes_and_is_json(unless_noisy):
    unless_noisy(quick_check_once)


def quick_check_once() -> None:
    result = run_check(quick=True)
    json.dumps(result)  # recorded in metadata.json as is
    (backend,) = [b for b in result["backends"] if b["backend"] == "userspace"] or result["backends"][:1]
    assert [r["name"] for r in backend["rows"]] == [r.name for r in QUICK_ROWS]
    for row in backend["rows"]:
        assert row["low"] <= row["expected"] <= row["high"]
        assert 0 <= row["machine_steal_pct"] <= 100 and row["machine_late_p99_ms"] >= 0  # recorded
        assert_graded_or_over_capacity(row)
    # only the rate row may lack the CPU: delay, loss and jitter rows are always graded
    assert all(r["passed"] for r in backend["rows"] if r["quantity"] != "rate_mbps")
    assert result["passed"]
    assert "overall: pass" in format_check(result)


@pytest.mark.network
def test_rate_at_the_emulators_limit_is_graded_or_reported_over_capacity(unless_noisy):
    """1000 Mbit/s is MAX_RATE_MBPS: shaped, on a 2-core machine shared with iperf3, it is beyond
    what the emulator carries; the row must say so (or pass), never fail for it."""
    unless_noisy(rate_limit_once)


def rate_limit_once() -> None:
    with Network(reference_plan(), backend="userspace", seed=1, emulate_all=True) as net:
        checker = _Checker(net, quick=True)
        checker.measure_base()
        row = checker.run(Row("rate 1000 Mbit/s", "rate_mbps", {"bw_mbps": 1000}))
    json.dumps(row)
    cpu = row["emulator_cpu_pct"]
    if row["passed"] is False:  # a shortfall with CPU to spare: the shaper is wrong
        machine = row["machine_cpu_pct"]
        raise AssertionError(f"1000 Mbit/s failed, emulator CPU {cpu:.0f} %, machine {machine:.0f} %: "
                             f"{row['detail']}")
    assert_graded_or_over_capacity(row)


def test_over_capacity_only_for_a_saturated_emulator():
    assert over_capacity(440, 475, emulator_cpu_pct=92)  # short, and the emulator had no CPU left
    assert not over_capacity(440, 475, emulator_cpu_pct=60)  # short with CPU to spare: a FAIL
    assert not over_capacity(480, 475, emulator_cpu_pct=99)  # not short: graded as usual
    assert not over_capacity(440, 475, emulator_cpu_pct=None)  # netem: no emulator
    assert not over_capacity(440, 475, emulator_cpu_pct=120, workers=2)
    # the nodes' stacks (NAPI threads) and the tools took the other CPUs: the machine was full
    assert over_capacity(440, 475, emulator_cpu_pct=70, machine_cpu_pct=95)
    assert not over_capacity(440, 475, emulator_cpu_pct=70, machine_cpu_pct=60)
    result = {"probe": {"kernel": "k", "netem": False, "htb": True, "netem_seed": False},
              "backend": {"name": "userspace", "reason": "r"}, "passed": True, "duration_s": 1.0,
              "backends": [{"backend": "userspace", "base": {"rtt_median_ms": 0.2}, "duration_s": 1.0,
                            "over_capacity": ["rate 500 Mbit/s"],
                            "rows": [{"name": "rate 500 Mbit/s", "expected": 500.0, "measured": 400.0,
                                      "tolerance": "±5 %", "passed": None, "detail": "d"}]}]}  # fmt: skip
    text = format_check(result)
    assert "over capacity" in text and "not graded, over the emulator's measured capacity: rate 500" in text


def test_rate_rows_get_a_queue_tcp_can_fill():
    """5 ms at the rate, never below the default 64 packets; a row's own queue stays."""
    assert rate_queue({"bw_mbps": 10}) == {"queue_pkts": 64}
    assert rate_queue({"bw_mbps": 1000}) == {"queue_pkts": 417}  # 625 kB / 1500 B
    assert rate_queue({"bw_mbps": 1000, "queue_ms": 1}) == {}
    assert rate_queue({"delay_ms": 25}) == {}
