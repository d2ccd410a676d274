"""The report states how the links were applied (pure function over run metadata)."""
from __future__ import annotations

from testbed.report.build import _emulation_details


def test_emulation_details_state_rounds_cpus_loss_scope_and_scaling():
    m = {"networks": [{"applied": {"rate_scale": 0.5, "loss_applies_to": "IPv4/IPv6 frames",
                                   "emulator_round_us": 250.0, "node_napi": "threaded"}}]}  # fmt: skip
    text = _emulation_details(m)
    assert "rates scaled by 0.5" in text
    assert "loss applies to IPv4/IPv6 frames" in text
    assert "rounds of 250 µs" in text and "NAPI threaded" in text


def test_emulation_details_without_a_network_record():
    assert _emulation_details({}) == "–"
    assert _emulation_details({"networks": [{"applied": {"rate_scale": 1.0}}]}) == "–"
