"""QoS metrics and grading against hand-computed examples and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from testbed.metrics import qos

nan = math.nan


def test_iptd_ignores_lost_and_late_packets():
    assert qos.iptd_ms([10, 20, nan, 30]) == pytest.approx(20.0)
    assert qos.iptd_ms([10, 3000.5, 20]) == pytest.approx(15.0)  # > 3 s counts as lost
    assert qos.iptd_ms([10, 3000.0, 20]) == pytest.approx(1010.0)  # exactly Tmax is still delivered


def test_iplr_counts_nan_and_late():
    assert qos.iplr([10, nan, 3500, 20]) == pytest.approx(0.5)
    assert qos.iplr([1, 2, 3]) == 0.0
    assert math.isnan(qos.iplr([]))
    assert qos.iplr_from_counts(1000, 3) == pytest.approx(3e-3)
    assert math.isnan(qos.iplr_from_counts(0, 0))


def test_ipdv_is_upper_quantile_minus_min():
    # sorted 10, 11, 12, 50: position 3 * 0.999 = 2.997 -> 12 + 0.997 * 38 = 49.886; minus 10
    assert qos.ipdv_ms([10, 12, 11, 50]) == pytest.approx(39.886)
    d = 5 + np.arange(10001) / 10  # 10001 packets: the 0.999 quantile is element 9990 exactly
    assert qos.ipdv_ms(d) == pytest.approx(999.0)


def test_rfc3550_jitter_hand_computed():
    # |D| = 2, 1, 4: J = 0.125, 0.1796875, 0.418457...
    assert qos.interarrival_jitter_ms([10, 12, 11, 15]) == pytest.approx(0.41845703125)
    assert qos.interarrival_jitter_ms([10, nan, 12]) == pytest.approx(0.125)  # lost packet skipped
    assert qos.interarrival_jitter_ms([10]) == 0.0
    # constant delay -> no jitter; large constant offset irrelevant
    assert qos.interarrival_jitter_ms(np.full(100, 37.0)) == 0.0


def test_jitter_converges_to_mean_abs_difference():
    d = np.tile([10.0, 12.0], 500)  # |D| = 2 always -> J -> 2
    assert qos.interarrival_jitter_ms(d) == pytest.approx(2.0, rel=1e-6)


def test_pdv_and_ipdv_pairs_rfc5481():
    np.testing.assert_allclose(qos.pdv_ms([12, 10, nan, 15]), [2, 0, 5])
    np.testing.assert_allclose(qos.ipdv_pairs_ms([10, 12, nan, 11, 15]), [2, 4])  # pairs with a loss drop
    assert qos.pdv_ms([nan, nan]).size == 0


def test_one_way_delay_rfc7679():
    owd = qos.one_way_delay_ms([0.0, 0.1, 0.2], [0.010, nan, 0.2155])
    np.testing.assert_allclose(owd, [10, nan, 15.5])
    np.testing.assert_array_equal(qos.lost_mask(owd), [False, True, False])


def test_iper():
    assert qos.iper(2, 1000) == pytest.approx(0.002)
    assert math.isnan(qos.iper(0, 0))


def test_delay_summary_columns_and_all_lost():
    s = qos.delay_summary([10, 12, nan, 11, 15])
    assert s["owd_min_ms"] == 10 and s["owd_mean_ms"] == pytest.approx(12.0)
    assert s["owd_p50_ms"] == pytest.approx(11.5)
    assert s["probe_loss_pct"] == pytest.approx(20.0)
    lost = qos.delay_summary([nan, nan, nan])
    assert lost["probe_loss_pct"] == 100.0
    assert all(math.isnan(lost[k]) for k in ("owd_mean_ms", "owd_p99_ms", "ipdv_ms", "jitter_ms"))
    empty = qos.delay_summary([])
    assert math.isnan(empty["probe_loss_pct"]) and empty["probes_sent"] == 0


def test_zero_delay_path():
    s = qos.delay_summary(np.zeros(50))
    assert s["owd_mean_ms"] == 0 and s["ipdv_ms"] == 0 and s["jitter_ms"] == 0
    assert qos.y1541_best_class(0, 0, 0) == 6


@pytest.mark.parametrize(
    ("iptd", "ipdv", "loss", "met", "best"),
    [
        (50, 10, 0.0, [0, 1, 2, 3, 4, 5, 6, 7], 6),
        (50, 10, 5e-4, [0, 1, 2, 3, 4, 5], 0),
        (300, 10, 5e-6, [1, 3, 4, 5, 7], 7),
        (300, 60, 5e-6, [3, 4, 5], 3),
        (50, 60, 5e-6, [2, 3, 4, 5], 2),
        (900, 60, 1e-3, [4, 5], 4),  # bounds are inclusive
        (1200, 5, 0.0, [5], 5),
        (nan, nan, 1.0, [5], 5),  # everything lost
    ],
)
def test_y1541_classes(iptd, ipdv, loss, met, best):
    assert qos.y1541_classes_met(iptd, ipdv, loss) == met
    assert qos.y1541_best_class(iptd, ipdv, loss) == best


def test_emodel_hand_computed():
    assert qos.emodel_r(0, 0) == pytest.approx(93.2)
    # Id = 0.024*200 + 0.11*22.7 = 7.297; Ie,eff = 95*1/(1+4.3) = 17.9245
    r = qos.emodel_r(200, 1.0)
    assert r == pytest.approx(93.2 - 7.297 - 95 / 5.3)
    assert qos.g109_band(r) == "many users dissatisfied"
    r_plc = qos.emodel_r(200, 1.0, bpl=qos.G711_BPL_PLC)
    assert r_plc == pytest.approx(93.2 - 7.297 - 95 / 26.1)
    assert qos.emodel_id(177.3) == pytest.approx(0.024 * 177.3)  # step starts after 177.3
    assert math.isnan(qos.emodel_r(nan, 0))
    # burstiness lowers R: BurstR = 2
    assert qos.emodel_r(20, 2.0, burst_r=2) < qos.emodel_r(20, 2.0)


def test_mos_and_bands():
    assert qos.mos_from_r(93.2) == pytest.approx(1 + 0.035 * 93.2 + 7e-6 * 93.2 * 33.2 * 6.8)
    assert qos.mos_from_r(93.2) == pytest.approx(4.409, abs=1e-3)
    assert qos.mos_from_r(-5) == 1.0 and qos.mos_from_r(120) == 4.5
    assert qos.g109_band(93.2) == "very satisfied"
    assert qos.g109_band(80) == "satisfied"
    assert qos.g109_band(49.9) == "not recommended"
    assert qos.g114_ok(149.9) and not qos.g114_ok(150) and not qos.g114_ok(nan)


def test_rpm():
    assert qos.rpm(40) == pytest.approx(1500)
    assert qos.rpm_max(40) == pytest.approx(1500)
    assert qos.rpm_grade(80, 40) == (pytest.approx(0.5), "fair")
    assert qos.rpm_grade(45, 40)[1] == "good"
    assert qos.rpm_grade(200, 40) == (pytest.approx(0.2), "poor")
    assert qos.rpm_grade(39, 40)[0] == 1.0  # capped
    assert math.isnan(qos.rpm(0)) and qos.rpm_grade(nan, 40)[1] == "undefined"


def test_rfc6349_hand_computed():
    assert qos.ideal_goodput_mbps(100) == pytest.approx(100 * 1448 / 1538)
    assert qos.ideal_goodput_mbps(100, "udp") == pytest.approx(100 * 1472 / 1538)
    assert qos.ideal_goodput_mbps(100, "quic") < qos.ideal_goodput_mbps(100, "udp")
    ideal = 10e6 * 8 / (100e6 * 1448 / 1538)
    assert qos.ideal_transfer_time_s(10e6, 100) == pytest.approx(ideal)
    assert qos.transfer_time_ratio(2 * ideal, 10e6, 100) == pytest.approx(2.0)
    assert math.isnan(qos.transfer_time_ratio(1.0, 10e6, nan))  # unshaped path: no ideal
    assert qos.efficiency_pct(1000, 10) == pytest.approx(99.0)
    assert math.isnan(qos.efficiency_pct(0, 0))
    assert qos.buffer_delay_pct(60, 40) == pytest.approx(50.0)
    assert math.isnan(qos.buffer_delay_pct(60, 0))
    assert qos.transport_of("qtp") == "quic" and qos.transport_of("tcp-tls") == "tcp"


def test_jain():
    assert qos.jain_index([1, 1, 1, 1]) == pytest.approx(1.0)
    assert qos.jain_index([1, 0, 0, 0]) == pytest.approx(0.25)
    assert qos.jain_index([1, 2, 3]) == pytest.approx(36 / 42)
    assert qos.jain_index([5]) == 1.0
    assert math.isnan(qos.jain_index([])) and math.isnan(qos.jain_index([0, 0]))
    assert qos.jain_index([2, nan, 2]) == pytest.approx(1.0)


def test_great_circle_matches_hubs_reference():
    # hubs.md: Zhangjiakou-Shaoguan 1,784 km, YRD-Tianfu 1,609 km, Tianfu-Chongqing 256 km
    assert qos.great_circle_km(40.82, 114.88, 24.81, 113.60) == pytest.approx(1784, rel=0.01)
    assert qos.great_circle_km(31.00, 120.90, 30.40, 104.07) == pytest.approx(1609, rel=0.01)
    assert qos.great_circle_km(30.40, 104.07, 29.56, 106.55) == pytest.approx(256, rel=0.02)
    assert qos.fibre_latency_ms(1784) == pytest.approx(8.92)


def test_policy_checks():
    assert qos.latency_circle_check(19.9).passed is True
    assert qos.latency_circle_check(20.1).passed is False
    assert qos.latency_circle_check(4.0, "cluster").passed is True
    assert qos.latency_circle_check(1.2, "metro").passed is False
    assert qos.latency_circle_check(nan).passed is None
    assert qos.direct_link_check(13.0, 1784).passed is True  # limit 13.38 ms
    assert qos.direct_link_check(14.0, 1784).passed is False
    checks = {c.name: c.passed for c in qos.cross_operator_checks(30, 0.1, intra_owd_ms=20, intra_loss_pct=0)}
    assert checks == {
        "cross-operator latency": True,
        "cross-operator loss": True,
        "cross latency ≤ 1.25 × intra": False,
        "cross loss ≤ 1.25 × intra": False,
    }
    checks = {c.name: c.passed for c in qos.cross_operator_checks(36, 0.6, 30, 0.005)}
    assert checks["cross-operator latency"] is False and checks["cross-operator loss"] is False
    assert checks["cross latency ≤ 1.25 × intra"] is True  # 36 <= 37.5
    ok = qos.cross_operator_checks(24, 0.005, 20, 0.0)
    assert all(c.passed for c in ok)
    assert len(qos.cross_operator_checks(24, 0.1)) == 2  # no intra reference: only absolute checks
