"""The wake-up probe process of `noise.NoiseProbe` (run by path: it imports nothing of ours, so
it starts in milliseconds). At real-time priority it asks to wake up every period (argv[1], ms)
and records how late it woke, the way cyclictest does; it writes "ready" when it ticks and,
when its stdin closes, its lateness samples (ms) as JSON."""
from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import time

PRIORITY = 1  # SCHED_FIFO priority: the emulator's (engine._set_priority)


def tick(period_s: float) -> list[float]:
    """Wake up every period until stdin closes; each wake-up's lateness in ms."""
    late: list[float] = []
    target = time.monotonic() + period_s
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], max(0.0, target - time.monotonic()))
        if ready:
            return late
        now = time.monotonic()
        late.append((now - target) * 1e3)
        target += period_s
        if target < now:  # missed ticks are one late wake-up, not many (as cyclictest counts)
            target = now + period_s


def main() -> int:
    with contextlib.suppress(OSError):  # without the right, it measures at normal priority
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(PRIORITY))
    print("ready", flush=True)
    late = tick(float(sys.argv[1]) / 1e3)
    sys.stdout.write(json.dumps([round(x, 4) for x in late]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
