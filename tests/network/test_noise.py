"""Machine noise: the verdict from steal and wake-up lateness, and the real probe process."""
from __future__ import annotations

import time

from testbed.network.noise import Noise, NoiseProbe


def noise(steal: float = 0.0, p99: float = 0.1) -> Noise:
    return Noise(seconds=1.0, steal_pct=steal, wakeups=1000, late_p50_ms=0.07, late_p99_ms=p99,
                 late_max_ms=2.0)


def test_noisy_from_steal_or_late_wakeups():
    assert not noise().noisy
    assert noise(steal=1.0).noisy
    assert noise(p99=0.5).noisy
    assert not noise(steal=0.9, p99=0.49).noisy
    assert "steal 1.0 %" in noise(steal=1.0).describe()
    assert noise().as_dict()["wakeups"] == 1000


def test_probe_ticks_and_reports():
    with NoiseProbe(period_ms=2.0) as probe:
        time.sleep(0.4)
    got = probe.result
    assert got is not None
    assert 150 <= got.wakeups <= 205, got  # 200 ticks in 0.4 s; a stall merges missed ticks into one
    assert 0 <= got.late_p50_ms <= got.late_p99_ms <= got.late_max_ms
    assert 0 <= got.steal_pct <= 100 and got.seconds >= 0.4


def test_probe_closed_after_an_error_leaves_no_process():
    probe = NoiseProbe().start()
    proc = probe._proc
    probe.close()
    assert proc is not None and proc.poll() is not None
