"""Client API of the userspace link emulator, used by the network builder.

The builder creates, for each emulated link a<->b, two veth pairs whose root-namespace ends are
`if_a` and `if_b`, applies `NODE_SIDE_ETHTOOL` to the node-side ends inside the namespaces, and
then runs `Emulator(links, seed, workdir).start()`. Each emulator process serves a subset of the
links and exits by itself when the owner process dies.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TestbedError
from ..topology.model import DEFAULT_MTU, LinkParams
from .engine import (
    NODE_SIDE_ETHTOOL,
    ROUND_S,
    node_side_ethtool_argv,
    node_side_threaded_argv,
    prepare_interfaces,
)
from .model import validate_params

__all__ = [
    "MAX_RATE_MBPS",
    "NODE_SIDE_ETHTOOL",
    "EmuLink",
    "Emulator",
    "direction_seed",
    "node_side_ethtool_argv",
    "node_side_threaded_argv",
    "prepare_interfaces",
]

# The highest per-link rate the emulator honours: one Python process forwards ~1 Gbit/s of
# MTU-sized frames (bench/results/emulator.md); the builder refuses or scales rates above it.
MAX_RATE_MBPS: float = 1000.0
# the longest round allowed: frames may leave this late while the emulator is busy
MAX_ROUND_US = 2000.0
READY_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 5.0
# stop: time for the processes to exit after `shutdown` (they close all sockets in parallel,
# well under 1 s for 100 links), then after SIGTERM
STOP_GRACE_S = 5.0
TERM_GRACE_S = 3.0
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    """Environment for a `python -m testbed...` child: this checkout first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


@dataclass
class EmuLink:
    """One emulated link: frames from `if_a` get `ab` and leave on `if_b`, and vice versa."""

    link_id: int
    if_a: str
    if_b: str
    ab: LinkParams
    ba: LinkParams
    mtu: int = DEFAULT_MTU


def direction_seed(seed: int, link_id: int, direction: str) -> int:
    """Per-direction RNG seed: stable across runs and processes (unlike hash())."""
    digest = hashlib.sha256(f"{seed}:{link_id}:{direction}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _round_from_env() -> float:
    raw = os.environ["TESTBED_EMU_ROUND_US"]
    try:
        return float(raw)
    except ValueError:
        raise TestbedError(f"TESTBED_EMU_ROUND_US: a number of microseconds is allowed, got {raw!r}") \
            from None


def _default_workers(n_links: int) -> int:
    """Processes for `n_links` links: one per two cores, at most 2 (1 for up to 2 links). The
    receiving stacks need CPU too (NAPI threads, see engine.node_side_threaded_argv): on 2 cores
    16 loaded links carried 1.6-2.0 Gbit/s with one worker and 0.9-1.0 with two."""
    return max(1, min(n_links, (os.cpu_count() or 1) // 2, 2)) if n_links > 2 else 1


class _Worker:
    """One emulator process and its control socket."""

    def __init__(self, index: int, links: list[EmuLink], seed: int, workdir: Path, owner_pid: int,
                 priority: str, round_us: float | None = None):  # fmt: skip
        self.index = index
        self.links = links
        self.workdir = workdir
        self.config_path = workdir / f"emulator-{index}.json"
        self.control_path = workdir / f"emulator-{index}.sock"
        self.log_path = workdir / f"emulator-{index}.log"
        self.proc: subprocess.Popen | None = None
        self.final_cpu_s: float | None = None
        self._closed = False
        config = {
            "owner_pid": owner_pid,
            "priority": priority,
            **({"round_us": round_us} if round_us is not None else {}),
            "links": [
                {
                    "link_id": lk.link_id,
                    "if_a": lk.if_a,
                    "if_b": lk.if_b,
                    "mtu": lk.mtu,
                    "ab": lk.ab.as_dict(),
                    "ba": lk.ba.as_dict(),
                    "seed_ab": direction_seed(seed, lk.link_id, "ab"),
                    "seed_ba": direction_seed(seed, lk.link_id, "ba"),
                }
                for lk in links
            ],
        }
        self.config_path.write_text(json.dumps(config, indent=1))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(f"\0testbed-emu-client-{uuid.uuid4().hex}")  # abstract: nothing to clean

    def spawn(self) -> None:
        env = child_env()
        argv = [sys.executable, "-m", "testbed.emulator", "--config", str(self.config_path),
                "--control", str(self.control_path)]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=env, start_new_session=True)  # fmt: skip

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
            return lines[-1] if lines else ""
        return ""

    def request(self, req: dict, timeout: float = REQUEST_TIMEOUT_S) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            raise TestbedError(f"emulator worker {self.index} is not running ({self.log_tail()})")
        self.sock.settimeout(timeout)
        self.sock.sendto(json.dumps(req).encode(), str(self.control_path))
        try:
            data = self.sock.recv(16 << 20)
        except TimeoutError:
            raise TestbedError(f"emulator worker {self.index}: no answer to {req.get('op')}") from None
        reply = json.loads(data)
        if not reply.get("ok"):
            raise TestbedError(f"emulator worker {self.index}: {req.get('op')}: {reply.get('error')}")
        return reply

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TestbedError(f"emulator worker {self.index} exited at start: {self.log_tail()}")
            if self.control_path.exists():
                with contextlib.suppress(TestbedError, OSError):
                    self.request({"op": "ping"}, timeout=0.5)
                    return
            time.sleep(0.02)
        raise TestbedError(f"emulator worker {self.index} not ready after {READY_TIMEOUT_S:.0f} s")

    def cpu_seconds(self) -> float:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return self.final_cpu_s or 0.0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ask_to_stop(self) -> None:
        """Send `shutdown` without waiting (the reply, with the CPU time, is read in close())."""
        if self.running():
            try:
                self.sock.sendto(json.dumps({"op": "shutdown"}).encode(), str(self.control_path))
            except OSError:  # no control socket: the signal does it
                self.signal(signal.SIGTERM)

    def signal(self, signum: int) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)

    def close(self) -> None:
        """After the process has exited: its last reply's CPU time, then our socket and files."""
        if self.proc is not None and self.proc.poll() is not None and not self._closed:
            self.sock.setblocking(False)
            with contextlib.suppress(OSError, ValueError):
                while True:  # the last reply is the shutdown's (or a late stats reply)
                    cpu = json.loads(self.sock.recv(16 << 20)).get("cpu_s")
                    if cpu is not None:
                        self.final_cpu_s = cpu
        self._closed = True
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.control_path.unlink()


def _stop_all(workers: list[_Worker]) -> None:
    """Stop processes together: ask all, wait for all; then SIGTERM, then SIGKILL the late ones.
    One after another, each would cost its own exit time (its sockets' closes)."""
    for w in workers:
        w.ask_to_stop()
    for signum, grace_s in ((None, STOP_GRACE_S), (signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, None)):
        late = [w for w in workers if w.running()]
        if not late:
            break
        if signum is not None:
            for w in late:
                w.signal(signum)
        deadline = time.monotonic() + (grace_s if grace_s is not None else 5.0)
        for w in late:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for w in workers:
        w.close()


class Emulator:
    """The userspace emulator for a set of links: one or more processes in the root namespace."""

    def __init__(
        self,
        links: list[EmuLink],
        seed: int,
        workdir: str | Path,
        owner_pid: int | None = None,
        workers: int | None = None,
        priority: str = "fifo",
        round_us: float | None = None,
    ):
        """`workers`: processes to spread the links over (default: 1 for up to 2 links, else
        one per core, at most 2); `priority`: "fifo" (real-time, default), "nice" or "normal";
        `round_us`: the busy loop's round (engine.ROUND_S, or $TESTBED_EMU_ROUND_US): frames leave
        at most this late while the emulator is busy, 0 for a wake-up per frame."""
        if not links:
            raise TestbedError("emulator: no links to emulate")
        ids = [lk.link_id for lk in links]
        if len(set(ids)) != len(ids):
            raise TestbedError(f"emulator: duplicate link ids in {ids}")
        for lk in links:
            for name in ("ab", "ba"):
                params = getattr(lk, name)
                try:
                    validate_params(params)
                except ValueError as exc:
                    raise TestbedError(f"emulator: link {lk.link_id} {name}: {exc}") from None
                if params.bw_mbps is not None and params.bw_mbps > MAX_RATE_MBPS:
                    raise TestbedError(
                        f"emulator: link {lk.link_id} {name}: bw_mbps={params.bw_mbps} is above "
                        f"what the userspace emulator can honour ({MAX_RATE_MBPS:g})"
                    )
        self.links = list(links)
        self.seed = seed
        self.workdir = Path(workdir)
        self.owner_pid = owner_pid if owner_pid is not None else os.getpid()
        n = workers if workers is not None else _default_workers(len(links))
        self.n_workers = max(1, min(n, len(links)))
        if priority not in ("fifo", "nice", "normal"):
            raise TestbedError(f"emulator: priority must be fifo, nice or normal, got {priority!r}")
        self.priority = priority
        if round_us is None and os.environ.get("TESTBED_EMU_ROUND_US"):
            round_us = _round_from_env()
        if round_us is not None and not 0 <= round_us <= MAX_ROUND_US:
            raise TestbedError(f"emulator: round_us must be within 0..{MAX_ROUND_US:g}, got {round_us}")
        self.round_us = ROUND_S * 1e6 if round_us is None else float(round_us)
        self._workers: list[_Worker] = []
        self._where: dict[int, _Worker] = {}
        self._stopped = False

    def start(self) -> None:
        """Spawn the processes and wait until each answers; raise TestbedError on failure."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        groups = [self.links[i :: self.n_workers] for i in range(self.n_workers)]
        try:
            for i, group in enumerate(groups):
                w = _Worker(i, group, self.seed, self.workdir, self.owner_pid, self.priority, self.round_us)
                self._workers.append(w)
                for lk in group:
                    self._where[lk.link_id] = w
                w.spawn()
            deadline = time.monotonic() + READY_TIMEOUT_S
            for w in self._workers:
                w.wait_ready(deadline)
        except BaseException:
            self.stop()
            raise

    def _worker(self, link_id: int) -> _Worker:
        try:
            return self._where[link_id]
        except KeyError:
            raise TestbedError(f"emulator: no link {link_id}") from None

    def set_params(self, link_id: int, direction: str, params: LinkParams) -> None:
        """Change one direction's parameters at run time (frames already scheduled keep theirs)."""
        if direction not in ("ab", "ba"):
            raise TestbedError(f"emulator: direction must be 'ab' or 'ba', got {direction!r}")
        try:
            validate_params(params)
        except ValueError as exc:
            raise TestbedError(f"emulator: link {link_id} {direction}: {exc}") from None
        if params.bw_mbps is not None and params.bw_mbps > MAX_RATE_MBPS:
            raise TestbedError(f"emulator: bw_mbps={params.bw_mbps} is above {MAX_RATE_MBPS:g}")
        self._worker(link_id).request(
            {"op": "set", "link_id": link_id, "direction": direction, "params": params.as_dict()}
        )

    def set_down(self, link_id: int, down: bool) -> None:
        """Take a link down (both directions drop everything, frames in flight included) or up."""
        self._worker(link_id).request({"op": "down", "link_id": link_id, "down": bool(down)})

    def stats(self, reset: bool = False) -> list[dict[str, Any]]:
        """One dict per link and direction (counters since start or the last reset)."""
        out: list[dict[str, Any]] = []
        for w in self._workers:
            out += w.request({"op": "stats", "reset": reset})["stats"]
        return sorted(out, key=lambda s: (s["link_id"], s["direction"]))

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None and w.proc.poll() is None]

    def wakeups(self) -> int:
        """Rounds of the forwarding loops so far (each costs CPU, whatever it handles)."""
        return sum(int(w.request({"op": "stats"}).get("wakeups", 0)) for w in self._workers)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used by the emulator processes so far."""
        return sum(w.cpu_seconds() for w in self._workers)

    def stop(self) -> None:
        """Stop every process, all at once, and wait for them (idempotent)."""
        _stop_all(self._workers)
        self._stopped = True

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
