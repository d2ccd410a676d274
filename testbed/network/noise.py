"""How noisy the machine was during a measurement: hypervisor steal and real-time wake-up lateness.

Delays on an emulated link are only as exact as the machine lets the emulator wake up on time.
On a shared VM host the virtual CPUs stop now and then for milliseconds (steal), and a busy host
can delay wake-ups without the guest seeing steal at all. `NoiseProbe` measures both around a
measurement, the second the way cyclictest does: a real-time process (at the emulator's
priority) asks to wake up every `period_ms` and records how late it woke. A run records this
next to its results; a timing test that fails on a noisy machine may measure again.

The probe process itself is `ticker.py`.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..runformat import NOISY_LATE_P99_MS, NOISY_STEAL_PCT
from .measure import steal_jiffies

PERIOD_MS = 1.0
TICKER = Path(__file__).with_name("ticker.py")


@dataclass(frozen=True)
class Noise:
    """Machine noise over one measurement window."""

    seconds: float
    steal_pct: float  # of all CPUs' time
    wakeups: int
    late_p50_ms: float
    late_p99_ms: float
    late_max_ms: float

    @property
    def noisy(self) -> bool:
        """Whether the machine itself was late enough to move delays by tenths of a millisecond."""
        return self.steal_pct >= NOISY_STEAL_PCT or self.late_p99_ms >= NOISY_LATE_P99_MS

    def describe(self) -> str:
        return (f"hypervisor steal {self.steal_pct:.1f} % of CPU time, real-time wake-ups late by "
                f"p50 {self.late_p50_ms:.3f} / p99 {self.late_p99_ms:.3f} / max {self.late_max_ms:.2f} ms "
                f"({self.wakeups} wake-ups in {self.seconds:.1f} s)")  # fmt: skip

    def as_dict(self) -> dict[str, float | int]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


class NoiseProbe:
    """Context manager: `with NoiseProbe() as probe: ...` then `probe.result` (a `Noise`)."""

    def __init__(self, period_ms: float = PERIOD_MS):
        self.period_ms = period_ms
        self.result: Noise | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NoiseProbe:
        self._steal0 = steal_jiffies()
        self._t0 = time.monotonic()
        self._proc = subprocess.Popen([sys.executable, "-I", str(TICKER), str(self.period_ms)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        assert self._proc.stdout is not None
        self._proc.stdout.readline()  # "ready": the window starts when the probe ticks
        return self

    def stop(self) -> Noise:
        if self._proc is None:
            raise RuntimeError("NoiseProbe.stop() before start()")
        out, _ = self._proc.communicate(timeout=10)  # closing stdin ends the probe
        self._proc = None
        steal1, total1 = steal_jiffies()
        steal0, total0 = self._steal0
        late = sorted(json.loads(out or b"[]"))
        self.result = Noise(
            seconds=time.monotonic() - self._t0,
            steal_pct=100 * (steal1 - steal0) / max(1, total1 - total0),
            wakeups=len(late),
            late_p50_ms=_quantile(late, 0.5),
            late_p99_ms=_quantile(late, 0.99),
            late_max_ms=late[-1] if late else 0.0,
        )
        return self.result

    def close(self) -> None:
        """Stop the probe process if it still runs (after an error), without a result."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.communicate()
            self._proc = None

    def __enter__(self) -> NoiseProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self.stop()


def _quantile(sorted_xs: list[float], q: float) -> float:
    return sorted_xs[min(len(sorted_xs) - 1, int(q * len(sorted_xs)))] if sorted_xs else 0.0
