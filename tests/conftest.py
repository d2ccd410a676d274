"""Suite-wide test configuration: network tests need root and the system tools."""
from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable

import pytest

from testbed.network.measure import steal_jiffies

NETWORK_TOOLS = ("mnexec", "ip", "tc", "ping", "iperf3", "ethtool")


def _network_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces (run `sudo make test`)"
    missing = [tool for tool in NETWORK_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing system tools {', '.join(missing)} (run `sudo make setup`)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _network_skip_reason()
    if reason is None:
        return
    for item in items:
        if "network" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def unless_stolen() -> Callable[..., None]:
    """Run a timing measurement and its assertions; measure again (up to `attempts` times) only
    when it failed while the hypervisor stole at least `min_steal_pct` of the machine's CPU time.

    On a shared VM host the virtual CPUs stop for milliseconds now and then (steal: 3-14 % of
    the time in one-second samples here); a real-time emulator is then late by as much, which
    measures the host, not the emulator. Tolerances stay as they are; a failure without steal,
    or in every attempt, fails the test and states the steal seen.
    """

    def run(attempt: Callable[[], None], attempts: int = 3, min_steal_pct: float = 1.0) -> None:
        for i in range(1, attempts + 1):
            steal0, total0 = steal_jiffies()
            try:
                attempt()
                return
            except AssertionError as exc:
                steal1, total1 = steal_jiffies()
                pct = 100 * (steal1 - steal0) / max(1, total1 - total0)
                if pct < min_steal_pct or i == attempts:
                    raise AssertionError(f"{exc}\n(hypervisor steal during this measurement: {pct:.1f} % "
                                         f"of CPU time; attempt {i} of {attempts})") from exc  # fmt: skip
                warnings.warn(f"failed under {pct:.1f} % hypervisor steal, measuring again: {exc}",
                              stacklevel=2)  # fmt: skip

    return run
