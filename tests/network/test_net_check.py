"""The fidelity check (`testbed check`) measures and grades each row; its result is JSON."""
from __future__ import annotations

import json

import pytest

from testbed.check import QUICK_ROWS, format_check, run_check

pytestmark = pytest.mark.network


def test_quick_fidelity_check_passes_and_is_json():
    result = run_check(quick=True)
    json.dumps(result)  # recorded in metadata.json as is
    (backend,) = [b for b in result["backends"] if b["backend"] == "userspace"] or result["backends"][:1]
    assert [r["name"] for r in backend["rows"]] == [r.name for r in QUICK_ROWS]
    for row in backend["rows"]:
        assert row["low"] <= row["expected"] <= row["high"]
        assert row["passed"], {k: row[k] for k in ("name", "measured", "low", "high", "detail")}
    assert result["passed"]
    assert "overall: pass" in format_check(result)
