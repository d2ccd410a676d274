"""Suite-wide test configuration: network tests need root and the system tools."""
from __future__ import annotations

import os
import shutil

import pytest

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
