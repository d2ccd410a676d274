"""Measurements taken around the flows of a trial: CPU of processes, ping, link counters.

CPU comes from /proc/<pid>/stat (utime + stime, clock ticks) so no extra package is needed;
a process counts as CPU-limited when it used >= CPU_LIMIT of one core over the trial or over
any window of about one second (then its results say more about the machine than the path).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
CPU_LIMIT = 0.9  # fraction of one core
WINDOW_S = 1.0


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of `pid` (None when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14, 15


def descendants(pid: int) -> list[int]:
    """`pid` and its descendants (a driver may run its program under a wrapper)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(text[text.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


@dataclass
class CpuTrack:
    """CPU samples of one process: (wall time, cumulative CPU seconds)."""

    role: str  # "client:0", "server:0", "emulator", ...
    pid: int
    samples: list[tuple[float, float]] = field(default_factory=list)
    final_s: float | None = None  # from wait4's rusage when the process was reaped by us

    def used_s(self) -> float:
        if self.final_s is not None:
            return self.final_s
        return self.samples[-1][1] - self.samples[0][1] if len(self.samples) >= 2 else 0.0

    def between(self, t0: float, t1: float) -> float:
        """CPU seconds used between wall times t0 and t1 (nearest samples)."""
        inside = [s for s in self.samples if t0 - 0.3 <= s[0] <= t1 + 0.3]
        return inside[-1][1] - inside[0][1] if len(inside) >= 2 else 0.0

    def peak_fraction(self) -> float:
        """Highest CPU use, as a fraction of one core, over any window of >= WINDOW_S."""
        best, j = 0.0, 0
        s = self.samples
        for i in range(len(s)):
            while j < i and s[i][0] - s[j + 1][0] >= WINDOW_S:
                j += 1
            dt = s[i][0] - s[j][0]
            if dt >= WINDOW_S * 0.9:
                best = max(best, (s[i][1] - s[j][1]) / dt)
        if len(s) >= 2 and s[-1][0] - s[0][0] > 0:
            best = max(best, (s[-1][1] - s[0][1]) / max(s[-1][0] - s[0][0], WINDOW_S))
        return best


class CpuSampler:
    """Samples the CPU of registered processes; call `sample()` from the runner's loop."""

    def __init__(self, period_s: float = 0.25):
        self.period_s = period_s
        self.tracks: list[CpuTrack] = []
        self._last = 0.0

    def add(self, role: str, pid: int) -> CpuTrack:
        track = CpuTrack(role, pid)
        self.tracks.append(track)
        self._take(track, time.time())
        return track

    def _take(self, track: CpuTrack, now: float) -> None:
        if track.final_s is not None:
            return
        cpu = proc_cpu_s(track.pid)
        if cpu is not None:
            track.samples.append((now, cpu))

    def sample(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < self.period_s:
            return
        self._last = now
        for track in self.tracks:
            self._take(track, now)

    def limited(self) -> list[str]:
        """Roles of the processes that saturated a core."""
        return [t.role for t in self.tracks if t.peak_fraction() >= CPU_LIMIT]

    def summary(self) -> list[dict[str, Any]]:
        return [
            {
                "role": t.role,
                "pid": t.pid,
                "cpu_s": round(t.used_s(), 3),
                "peak_core_fraction": round(t.peak_fraction(), 3),
            }
            for t in self.tracks
        ]


# --------------------------------------------------------------------------- ping

_PING_LINE = re.compile(r"^\[(?P<ts>\d+\.\d+)\].*icmp_seq=(?P<seq>\d+).*time=(?P<rtt>[\d.]+) ms")


def parse_ping(text: str) -> list[tuple[float, float]]:
    """`ping -D` output -> [(unix time of the reply, RTT ms)]."""
    out = []
    for line in text.splitlines():
        m = _PING_LINE.match(line.strip())
        if m:
            out.append((float(m["ts"]), float(m["rtt"])))
    return out


# --------------------------------------------------------------------------- link counters

# Counter names: userspace emulator ("dropped_*"); netem has only the qdiscs' total "drops".
DROP_KEYS = {
    "queue_drops": ("dropped_queue", "queue_drops", "drops"),
    "loss_drops": ("dropped_loss", "loss_drops"),
}


def _counter(entry: Mapping[str, Any], kind: str) -> float | None:
    for key in DROP_KEYS[kind]:
        value = entry.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _entry(stats: Any, link: str, direction: str) -> Mapping[str, Any] | None:
    """Counters of one link direction from `Network.link_stats()`: a list of
    {"link": label, "ab": {...}, "ba": {...}} (a mapping keyed by label also works)."""
    per_link = None
    if isinstance(stats, list):
        per_link = next((s for s in stats if isinstance(s, Mapping) and s.get("link") == link), None)
    elif isinstance(stats, Mapping):
        per_link = stats.get(link)
    if isinstance(per_link, Mapping):
        entry = per_link.get(direction)
        if isinstance(entry, Mapping):
            return entry
    return None


def path_drops(before: Any, after: Any, hops: Iterable[tuple[str, str]]) -> dict[str, float | None]:
    """Queue and loss-model drops on the given (link, direction) hops between two snapshots."""
    out: dict[str, float | None] = {}
    for kind in DROP_KEYS:
        total, known = 0.0, False
        for link, direction in hops:
            a, b = _entry(before, link, direction), _entry(after, link, direction)
            if a is None or b is None:
                continue
            va, vb = _counter(a, kind), _counter(b, kind)
            if va is None or vb is None:
                continue
            total += max(0.0, vb - va)
            known = True
        out[kind] = total if known else None
    return out
