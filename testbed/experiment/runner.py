"""Runs an experiment: trials (grid point x repetition) on real emulated networks.

Design choices (recorded in metadata.json under "method"):
- Trial order: repetitions are blocks; inside each block the grid points are shuffled with the
  run's seed. So repetitions interleave and slow drift of the machine spreads over all points.
- One network per topology *structure* (topology parameters, MTUs); link parameters of each
  point are applied with `set_link` before its trials, so a sweep does not rebuild namespaces.
- Per trial: idle phase (ping + UDP probes -> baseline RTT, idle one-way delay), then the flows
  (sequential unless they share a group / `concurrent: true`), probes and ping keep running,
  scheduled link events fire, CPU of every sender, receiver and emulator process is sampled.
- Duration flows: drivers send a fixed size and report nothing when stopped early, so a
  duration flow sends `path rate x duration` bytes (the most the path can carry in that time)
  and runs to completion; `window_goodput_mbps` is what the receiver got during the first
  `duration_s` (from its 100 ms bins): with competing flows, all of them are still sending then.
- Every process we start gets PR_SET_PDEATHSIG(SIGKILL): if the runner dies (even SIGKILL) no
  probe, server or client survives it; on Ctrl-C the network context manager cleans up.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import itertools
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import TestbedError
from ..metrics import qos
from ..network.noise import Noise, NoiseProbe
from ..runformat import NOISY_LATE_P99_MS, NOISY_STEAL_PCT
from . import measure, probe, results
from .spec import ExperimentSpec, FlowSpec, GridPoint, experiment_from_dict, split_link_key

SERVER_PORT_BASE = 5201
PROBE_PORT_BASE = 9301
SERVER_READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 3.0
UNSHAPED_RATE_MBPS = 1000.0  # upper bound used for duration flows on unshaped paths
INTERVAL_S = 0.1
PROBE_CMD = [sys.executable, "-I", str(Path(probe.__file__).resolve())]  # stdlib only: fast start
PROBE_READY_TIMEOUT_S = 10.0
NOISE_PERIOD_MS = 5.0  # the machine-noise probe's wake-up period during trials (< 1 % of a core)


# --------------------------------------------------------------------------- processes

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """preexec: SIGKILL this child when the runner (its parent thread) goes away."""
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(node: Any, argv: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start `argv` inside a Mininet node, output to `log`; dies with the runner."""
    with open(log, "ab") as out:
        return node.popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(cwd) if cwd else None,
            preexec_fn=_die_with_parent,
        )


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, grace_s: float = STOP_GRACE_S) -> None:
    """Signal the process (and its group), wait a little, then SIGKILL."""
    if proc is None or proc.returncode is not None:
        return
    for s, wait in ((sig, grace_s), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(OSError):
            if os.getpgid(proc.pid) == proc.pid:  # its own group (mnexec -d): children too
                os.killpg(proc.pid, s)
            else:
                os.kill(proc.pid, s)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def reap(proc: subprocess.Popen) -> tuple[bool, float | None]:
    """Non-blocking: (exited, CPU seconds from rusage). Reaps it ourselves to get its rusage."""
    if proc.returncode is not None:
        return True, None
    try:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    except ChildProcessError:
        proc.poll()
        return proc.returncode is not None, None
    if pid == 0:
        return False, None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return True, usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- trials


@dataclass
class Trial:
    point: GridPoint
    rep: int
    order: int
    seed: int

    @property
    def id(self) -> str:
        return f"p{self.point.index}-r{self.rep}"


def trial_seed(seed: int, point: int, rep: int) -> int:
    """A stable per-trial seed (str seeding of random.Random is deterministic)."""
    return random.Random(f"{seed}:{point}:{rep}").randrange(1, 2**31 - 1)


def plan_trials(spec: ExperimentSpec) -> list[Trial]:
    """Repetitions as blocks; inside a block the points are shuffled with the run's seed, then
    kept together per topology structure (structures in shuffled order too), so that a block
    brings up each structure's network once. `order` is the execution order."""
    rng = random.Random(spec.seed)
    points = spec.points()
    out = []
    for rep in range(spec.repeat):
        block = list(points)
        rng.shuffle(block)
        structures = list(dict.fromkeys(p.structure for p in block))
        rng.shuffle(structures)
        block.sort(key=lambda p: structures.index(p.structure))
        for point in block:
            out.append(Trial(point, rep, len(out), trial_seed(spec.seed, point.index, rep)))
    return out


@dataclass
class FlowRun:
    """One flow instance within a trial."""

    index: int
    spec: FlowSpec
    instance: int
    group: int
    offset_s: float
    port: int
    size_bytes: int
    duration_s: float | None
    timeout_s: float
    wdir: Path
    server: subprocess.Popen | None = None
    client: subprocess.Popen | None = None
    start: float | None = None
    end: float | None = None
    state: str = "pending"  # pending | running | done
    stopped: str | None = None  # "timeout"
    cpu_client_s: float | None = None
    server_track: measure.CpuTrack | None = None
    argv: list[str] = field(default_factory=list)
    error: str | None = None


def expand_flows(
    spec: ExperimentSpec, flows: list[FlowSpec], trial_dir: Path, rate_mbps: dict
) -> list[FlowRun]:
    """Flow instances in spec order with their group (execution stage) and start offsets."""
    groups: dict[str, int] = {}
    out = []
    for f in flows:
        if not f.enabled or f.count == 0:
            continue
        key = "all" if spec.concurrent else (f.group if f.group is not None else f"_flow{f.index}")
        g = groups.setdefault(key, len(groups))
        rate = rate_mbps.get((f.src, f.dst)) or UNSHAPED_RATE_MBPS
        for k in range(f.count):
            idx = len(out)
            if f.duration_s is not None:
                size = int(rate * 1e6 / 8 * f.duration_s) + 1
                timeout = f.timeout_s or spec.timeout_s or max(60.0, 10 * f.duration_s + 30)
            else:
                size = f.size_bytes or 1
                ideal = size * 8 / (rate * 1e6)
                timeout = f.timeout_s or spec.timeout_s or max(30.0, 20 * ideal + 15)
            wdir = trial_dir / f"flow{idx}"
            wdir.mkdir(parents=True, exist_ok=True)
            out.append(
                FlowRun(
                    idx,
                    f,
                    k,
                    g,
                    f.start_s + k * f.interval_ms / 1000,
                    SERVER_PORT_BASE + f.index,  # one server per flow entry
                    size,
                    f.duration_s,
                    timeout,
                    wdir,
                )
            )
    return out


class TrialExecution:
    """Everything one trial starts and measures; `run()` returns what `measure_rows` needs."""

    def __init__(self, ctx: RunContext, net: Any, plan: Any, trial: Trial, flows: list[FlowRun], tdir: Path):
        self.ctx, self.net, self.plan, self.trial, self.flows, self.tdir = ctx, net, plan, trial, flows, tdir
        self.spec = ctx.spec
        self.procs: list[subprocess.Popen] = []
        self.cpu = measure.CpuSampler()
        self.pairs = list(dict.fromkeys((f.spec.src, f.spec.dst) for f in flows))
        if not self.pairs:
            self.pairs = list(dict.fromkeys((f.src, f.dst) for f in self.spec.flows))
        self.probe_procs: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.ping_procs: dict[tuple[str, str], Any] = {}
        self.events_fired: list[dict] = []
        self.t0 = 0.0
        self.t_end = 0.0
        self.link_before: Any = None
        self.link_after: Any = None
        self.touched_links: set[str] = set()
        self.capture: list[tuple[str, Path, Any]] = []
        self.group_stats: dict[int, list[Any]] = {}  # group -> [link stats at its start, at its end]
        self.noise_probe = NoiseProbe(NOISE_PERIOD_MS)
        self.noise: Noise | None = None

    # -- helpers
    def _spawn(self, node_name: str, argv: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
        proc = spawn(self.net.node(node_name), argv, log, cwd)
        self.procs.append(proc)
        return proc

    def _wait_listening(self, node: str, ports: set[int]) -> None:
        """Poll `ss` inside the node until every port has a listening socket."""
        deadline = time.time() + SERVER_READY_TIMEOUT_S
        pending = set(ports)
        while pending and time.time() < deadline:
            out = self.net.node(node).cmd("ss -Hlntu")
            pending = {p for p in pending if f":{p} " not in out}
            for f in self.flows:
                if f.port in pending and f.server is not None and f.server.poll() is not None:
                    f.error = (
                        f"server exited early (code {f.server.returncode}); see {f.wdir.name}/server.log"
                    )
                    pending.discard(f.port)
            if pending:
                time.sleep(0.05)
        for f in self.flows:
            if f.port in pending and f.error is None:
                f.error = f"server not listening on port {f.port} after {SERVER_READY_TIMEOUT_S:.0f} s"

    # -- phases
    def start_servers(self) -> None:
        from protocols import registry

        by_node: dict[str, set[int]] = {}
        first: dict[int, FlowRun] = {}  # instances of one flow entry share its server
        for f in self.flows:
            if f.spec.index in first:
                f.server, f.server_track = first[f.spec.index].server, first[f.spec.index].server_track
                continue
            first[f.spec.index] = f
            driver = registry.get(f.spec.protocol)
            argv = driver.server_argv(
                f.port, cc=driver.check_cc(f.spec.cc), workdir=str(f.wdir), options=dict(f.spec.options)
            )
            f.server = self._spawn(f.spec.dst, argv, f.wdir / "server.log", f.wdir)
            f.server_track = self.cpu.add(f"server:{f.index}", f.server.pid)
            by_node.setdefault(f.spec.dst, set()).add(f.port)
        for node, ports in by_node.items():
            self._wait_listening(node, ports)

    def start_probes(self) -> None:
        """Probe receivers, ping and probe senders per path; returns once all probes run."""
        p = self.spec.probes
        logs = []
        for k, (src, dst) in enumerate(self.pairs):
            tag = f"{src}-{dst}"
            if p.udp:
                argv = [
                    *PROBE_CMD,
                    "recv",
                    "--port",
                    str(PROBE_PORT_BASE + k),
                    "--out",
                    str(self.tdir / f"probe-{tag}.recv"),
                ]
                recv = self._spawn(dst, argv, self.tdir / f"probe-{tag}.recv.log")
                self.probe_procs[(src, dst)] = (None, recv)
                logs.append(self.tdir / f"probe-{tag}.recv.log")
            if p.ping:
                argv = ["ping", "-D", "-n", "-i", f"{p.ping_interval_ms / 1000:.3f}", self.net.ip(dst)]
                self.ping_procs[(src, dst)] = self._spawn(src, argv, self.tdir / f"ping-{tag}.txt")
        self._wait_started(logs)
        if not p.udp:
            return
        logs = []
        for k, (src, dst) in enumerate(self.pairs):
            tag = f"{src}-{dst}"
            argv = [
                *PROBE_CMD,
                "send",
                "--dst",
                self.net.ip(dst),
                "--port",
                str(PROBE_PORT_BASE + k),
                "--rate",
                str(p.rate_pps),
                "--size",
                str(p.size_bytes),
                "--out",
                str(self.tdir / f"probe-{tag}.sent"),
            ]
            send = self._spawn(src, argv, self.tdir / f"probe-{tag}.send.log")
            self.probe_procs[(src, dst)] = (send, self.probe_procs[(src, dst)][1])
            logs.append(self.tdir / f"probe-{tag}.send.log")
        self._wait_started(logs)

    def _wait_started(self, logs: list[Path]) -> None:
        """Wait until each probe process has logged that it runs (Python start-up takes a moment)."""
        deadline = time.time() + PROBE_READY_TIMEOUT_S
        pending = list(logs)
        while pending and time.time() < deadline:
            pending = [
                p for p in pending if "started" not in (p.read_text(errors="replace") if p.exists() else "")
            ]
            if pending:
                time.sleep(0.02)
        if pending:
            raise TestbedError(f"probe did not start within {PROBE_READY_TIMEOUT_S:.0f} s: see {pending[0]}")

    def start_capture(self) -> None:
        """tcpdump (headers only) on the senders and receivers, without probe/ping traffic."""
        if not self.spec.capture or not shutil.which("tcpdump"):
            return
        nodes = dict.fromkeys(n for f in self.flows for n in (f.spec.src, f.spec.dst))
        ports = " or ".join(f"port {f.port}" for f in self.flows) or "port 0"
        for node in nodes:
            path = self.tdir / f"capture-{node}.pcap"
            proc = self._spawn(
                node,
                ["tcpdump", "-i", "any", "-n", "-s", "128", "-U", "-w", str(path), ports],
                self.tdir / f"tcpdump-{node}.log",
            )
            self.capture.append((node, path, proc))
        time.sleep(0.5)

    def _start_client(self, f: FlowRun) -> None:
        from protocols import registry

        driver = registry.get(f.spec.protocol)
        f.argv = driver.client_argv(
            self.net.ip(f.spec.dst),
            f.port,
            size=f.size_bytes,
            seed=self.trial.seed + f.index,
            cc=driver.check_cc(f.spec.cc),
            stats_path=str(f.wdir / "stats.json"),
            workdir=str(f.wdir),
            options=dict(f.spec.options),
        )
        f.start = time.time()
        f.client = self._spawn(f.spec.src, f.argv, f.wdir / "client.log", f.wdir)
        self.cpu.add(f"client:{f.index}", f.client.pid)
        f.state = "running"

    def _fire(self, ev: Any) -> None:
        now = time.time() - self.t0
        try:
            if ev.action == "set":
                self.net.set_link(ev.link, ev.direction, **ev.fields)
            elif ev.action == "down":
                self.net.link_down(ev.link)
            else:
                self.net.link_up(ev.link)
            self.events_fired.append(
                {
                    "at_s": ev.at_s,
                    "fired_s": round(now, 4),
                    "link": ev.link,
                    "action": ev.action,
                    "fields": ev.fields,
                    "direction": ev.direction,
                }
            )
        except Exception as exc:  # recorded: a failed event must not lose the trial
            self.events_fired.append(
                {"at_s": ev.at_s, "link": ev.link, "action": ev.action, "error": str(exc)}
            )
        self.touched_links.add(ev.link)

    def run_flows(self) -> None:
        """The flow schedule: groups one after another, instances at their offsets; events on time."""
        events = sorted(self.spec.events, key=lambda e: e.at_s)
        n_groups = max((f.group for f in self.flows), default=-1) + 1
        self.t0 = time.time()
        group, group_start = 0, self.t0
        self.group_stats[0] = [_link_stats(self.net), None]
        while True:
            now = time.time()
            while events and now >= self.t0 + events[0].at_s:
                self._fire(events.pop(0))
            active = [f for f in self.flows if f.group == group]
            for f in active:
                if f.state == "pending" and f.error:
                    f.state = "done"
                elif f.state == "pending" and now >= group_start + f.offset_s:
                    self._start_client(f)
                elif f.state == "running":
                    self._check_running(f, now)
            self.cpu.sample()
            if all(f.state == "done" for f in active):
                if self.group_stats[group][1] is None:
                    self.group_stats[group][1] = _link_stats(self.net)
                if group + 1 < n_groups:
                    group += 1
                    time.sleep(self.spec.settle_s)
                    self.group_stats[group] = [_link_stats(self.net), None]
                    group_start = time.time()
                    continue
                if now - self.t0 >= self.spec.min_duration_s:
                    break
            time.sleep(0.01)
        self.t_end = time.time()
        self.events_skipped = [{"at_s": e.at_s, "link": e.link, "action": e.action} for e in events]

    def _check_running(self, f: FlowRun, now: float) -> None:
        exited, cpu = reap(f.client)
        if exited:
            f.cpu_client_s, f.end, f.state = cpu, now, "done"
            return
        if now >= f.start + f.timeout_s:
            f.stopped = "timeout"
        else:
            return
        with contextlib.suppress(OSError):  # SIGINT: the drivers' clients still write their stats
            os.kill(f.client.pid, signal.SIGINT)
        deadline = time.time() + STOP_GRACE_S
        while time.time() < deadline:
            exited, cpu = reap(f.client)
            if exited:
                break
            time.sleep(0.02)
        if not exited:
            with contextlib.suppress(OSError):
                os.kill(f.client.pid, signal.SIGKILL)
            f.client.wait()
        f.cpu_client_s, f.end, f.state = cpu, now, "done"

    def stop_measurements(self) -> None:
        time.sleep(self.spec.probes.tail_s)
        self.cpu.sample(force=True)
        for send, _ in self.probe_procs.values():
            stop(send)
        for ping in self.ping_procs.values():
            stop(ping, signal.SIGINT)
        time.sleep(0.3)  # the last probes in flight arrive
        for _, recv in self.probe_procs.values():
            stop(recv)
        for _, _, proc in self.capture:
            stop(proc, signal.SIGINT)
        for f in self.flows:
            stop(f.server)

    def cleanup(self) -> None:
        for proc in self.procs:
            stop(proc, grace_s=1.0)
        self.noise_probe.close()


# --------------------------------------------------------------------------- analysis


def _read_stats(f: FlowRun):
    from protocols.base import TransferStats

    path = f.wdir / "stats.json"
    if not path.exists():
        return None
    try:
        return TransferStats.read(path)
    except (ValueError, TypeError, OSError):
        return None


def _tail(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def probe_frame(ex: TrialExecution) -> pd.DataFrame:
    """probes.csv rows of the trial: every probe sent, its phase and one-way delay."""
    frames = []
    for src, dst in ex.probe_procs:
        tag = f"{src}-{dst}"
        sent = probe.read_sent(ex.tdir / f"probe-{tag}.sent")
        got = probe.read_received(ex.tdir / f"probe-{tag}.recv")
        if not sent:
            continue
        seqs = np.array(sorted(sent))
        send = np.array([sent[s] for s in seqs])
        recv = np.array([got.get(s, np.nan) for s in seqs])
        frames.append(
            pd.DataFrame(
                {
                    "trial": ex.trial.id,
                    "src": src,
                    "dst": dst,
                    "phase": np.where(send < ex.t0, "idle", "loaded"),
                    "seq": seqs,
                    "send_s": np.round(send - ex.t0, 6),
                    "owd_ms": np.round(qos.one_way_delay_ms(send, recv), 4),
                    "_send": send,
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=[*results.PROBE_COLUMNS, "_send"])
    return pd.concat(frames, ignore_index=True)


def measure_rows(
    ex: TrialExecution, spec: ExperimentSpec, trial: Trial, point_plan: Any, probes_df: pd.DataFrame
) -> tuple[list[dict], pd.DataFrame]:
    """results.csv rows (one per flow instance) and the trial's throughput series."""
    pings = {
        pair: measure.parse_ping((ex.tdir / f"ping-{pair[0]}-{pair[1]}.txt").read_text(errors="replace"))
        for pair in ex.ping_procs
    }
    limited = ex.cpu.limited()
    rows, series = [], []
    for f in ex.flows:
        st = _read_stats(f)
        src, dst = f.spec.src, f.spec.dst
        hops = [(lk.label, d) for lk, d in point_plan.hop_links(src, dst)]
        before, after = ex.group_stats.get(f.group) or (ex.link_before, ex.link_after)
        drops = measure.path_drops(before, after or ex.link_after, hops)
        nodes = point_plan.spec.nodes
        so, do = nodes[src].operator or "", nodes[dst].operator or ""
        row: dict[str, Any] = {
            "trial": trial.id,
            "point": trial.point.index,
            "rep": trial.rep,
            "order": trial.order,
            "seed": trial.seed,
            **trial.point.values,
            "flow": f.index,
            "flow_spec": f.spec.index,
            "label": f.spec.label,
            "protocol": f.spec.protocol,
            "cc": _cc(f.spec),
            "src": src,
            "dst": dst,
            "path_kind": ("intra" if so == do else "cross") if so and do else "",
            "src_operator": so,
            "dst_operator": do,
            "size_bytes": f.size_bytes,
            "duration_s": f.duration_s,
            "start_s": round(f.start - ex.t0, 4) if f.start else None,
            "configured_rate_mbps": point_plan.path_bottleneck_mbps(src, dst),
            "configured_owd_ms": point_plan.path_delay_ms(src, dst),
            "configured_loss_pct": round(point_plan.path_loss_pct(src, dst), 6),
            **drops,
        }
        flags = []
        t_start = st.start if st and st.start else (f.start or ex.t0)
        t_end = st.end if st and st.end else (f.end or ex.t_end)
        if st is None:
            row.update(ok=False, bytes=0, error=f.error or _no_stats_error(f))
        else:
            fct = st.duration_s or (st.end - st.start if st.end else None)
            ok = bool(st.ok) and st.bytes == f.size_bytes
            if f.duration_s is not None:
                row["window_goodput_mbps"] = _window_goodput(st.intervals or [], f.duration_s)
            row.update(
                bytes=st.bytes,
                fct_s=_r(fct),
                ok=ok,
                goodput_mbps=_r(st.bytes * 8 / fct / 1e6) if fct else None,
                error=None if ok else (st.error or f.error or _no_stats_error(f)),
                rtt_min_ms=st.rtt_min_ms,
                rtt_smoothed_ms=st.rtt_smoothed_ms,
                retransmits=st.retransmits,
                packets_sent=st.packets_sent,
                packets_lost=st.packets_lost,
                cwnd_bytes=st.cwnd_bytes,
            )
            for t, nbytes in st.intervals or []:
                series.append(
                    {
                        "trial": trial.id,
                        "flow": f.index,
                        "protocol": f.spec.protocol,
                        "cc": _cc(f.spec),
                        "t_s": round(st.start - ex.t0 + t, 4),
                        "mbps": _r(nbytes * 8 / INTERVAL_S / 1e6),
                    }
                )
        if f.stopped == "timeout":
            flags.append("timeout")
            row["ok"] = False
            said = row.get("error")
            row["error"] = f"timed out after {f.timeout_s:g} s" + (f" (client: {said})" if said else "")
        cpu_client = st.cpu_s_client if st and st.cpu_s_client is not None else f.cpu_client_s
        cpu_server = (
            st.cpu_s_server
            if st and st.cpu_s_server is not None
            else (f.server_track.between(t_start, t_end) if f.server_track else None)
        )
        row.update(cpu_client_s=_r(cpu_client), cpu_server_s=_r(cpu_server), cpu_limited=bool(limited))
        if ex.noise is not None:
            row.update(machine_steal_pct=_r(ex.noise.steal_pct), machine_late_p99_ms=_r(ex.noise.late_p99_ms))
        # latency: idle ping before the flows, loaded ping during this flow
        rtts = pings.get((src, dst), [])
        idle = [r for ts, r in rtts if ts < ex.t0]
        loaded = [r for ts, r in rtts if t_start <= ts <= t_end]
        row["base_rtt_ms"] = _r(min(idle)) if idle else None
        row["loaded_rtt_ms"] = _r(float(np.mean(loaded))) if loaded else None
        if not probes_df.empty:
            mine = probes_df[(probes_df["src"] == src) & (probes_df["dst"] == dst)]
            during = mine[(mine["_send"] >= t_start) & (mine["_send"] <= t_end)]
            if len(during):
                row.update(
                    {
                        k: _r(v)
                        for k, v in qos.delay_summary(during["owd_ms"].to_numpy(float)).items()
                        if k in results.RESULT_COLUMNS_TAIL
                    }
                )
            idle_p = mine[mine["phase"] == "idle"]["owd_ms"].to_numpy(float)
            if idle_p.size:
                s = qos.delay_summary(idle_p)
                row["idle_owd_p50_ms"], row["idle_owd_p95_ms"] = _r(s["owd_p50_ms"]), _r(s["owd_p95_ms"])
        if limited:
            flags.append("cpu_limited")
        if not row.get("ok"):
            flags.append("failed")
        if _out_of_tolerance(ex, hops):
            flags.append("link_out_of_tolerance")
        row["flags"] = ";".join(flags)
        rows.append(row)
    _fairness(rows, ex.flows)
    return rows, pd.DataFrame(series, columns=results.TIMESERIES_COLUMNS)


def _cc(f: FlowSpec) -> str | None:
    from protocols import registry

    try:
        return registry.get(f.protocol).check_cc(f.cc)
    except (ImportError, ValueError, KeyError):
        return f.cc


def _window_goodput(intervals: list, duration_s: float) -> float | None:
    """Receiver goodput over the first `duration_s` of a flow, from its 100 ms bins."""
    if not intervals:
        return None
    nbytes = sum(b for t, b in intervals if t + INTERVAL_S <= duration_s + 1e-9)
    return _r(nbytes * 8 / duration_s / 1e6)


def _no_stats_error(f: FlowRun) -> str:
    code = f.client.returncode if f.client is not None else None
    tail = _tail(f.wdir / "client.log")
    return f"client exited with code {code} without statistics" + (f": {tail}" if tail else "")


def _r(v: Any, nd: int = 4) -> Any:
    if v is None:
        return None
    try:
        fv = float(v)
    except (TypeError, ValueError):
        return v
    return None if not math.isfinite(fv) else round(fv, nd)


def _fairness(rows: list[dict], flows: list[FlowRun]) -> None:
    """Jain's index over the goodputs of the flows that ran concurrently (same group, >1 flow)."""
    by_group: dict[int, list[int]] = {}
    for i, f in enumerate(flows):
        by_group.setdefault(f.group, []).append(i)
    for members in by_group.values():
        if len(members) < 2:
            continue
        key = (
            "window_goodput_mbps"
            if all(rows[i].get("window_goodput_mbps") for i in members)
            else "goodput_mbps"
        )
        values = [rows[i].get(key) for i in members]
        values = [v for v in values if v is not None]
        if len(values) >= 2:
            j = _r(qos.jain_index(values))
            for i in members:
                rows[i]["fairness"] = j


def _out_of_tolerance(ex: TrialExecution, hops: list[tuple[str, str]]) -> bool:
    """True when the network reports a path link direction not applied as configured."""
    applied = ex.applied or {}
    links = applied.get("links") if isinstance(applied, dict) else None
    if not isinstance(links, list):
        return False
    wanted = dict(hops)
    for link in links:
        if not isinstance(link, dict) or link.get("link") not in wanted:
            continue
        entry = link.get(wanted[link["link"]]) or {}
        if isinstance(entry, dict) and entry.get("ok") is False:
            return True
    return False


# --------------------------------------------------------------------------- run


@dataclass
class RunContext:
    spec: ExperimentSpec
    run_dir: Path
    backend: str
    metadata: dict[str, Any]
    plans: dict[int, Any] = field(default_factory=dict)


def _topology(spec: ExperimentSpec, point: GridPoint):
    from ..topology.plan import build_plan
    from ..topology.spec import load_topology

    topo = load_topology(
        spec.topology, params=point.topology_params or None, overrides=point.link_overrides or None
    )
    return build_plan(topo)


def _apply_point(net: Any, point: GridPoint, restore_links: set[str], plan: Any) -> None:
    """Set the point's link parameters on the running network (and undo last trial's events)."""
    for name in sorted(restore_links):
        link = plan.spec.link(name)
        with contextlib.suppress(Exception):
            net.link_up(name)
        for d in ("ab", "ba"):
            net.set_link(name, d, **link.params(d).as_dict())
    for key, value in point.runtime_links.items():
        link, direction, fname = split_link_key(key)
        net.set_link(link, direction, **{fname: value})


def _emulator_pids(net: Any) -> list[int]:
    for getter in ("emulator_pids", "pids"):
        fn = getattr(net, getter, None)
        if callable(fn):
            with contextlib.suppress(Exception):
                return [int(p) for p in fn()]
    backend = getattr(net, "backend", None)
    fn = getattr(backend, "pids", None)
    if callable(fn):
        with contextlib.suppress(Exception):
            return [int(p) for p in fn()]
    return []


def _applied(net: Any) -> Any:
    with contextlib.suppress(Exception):
        return net.applied()
    return None


def _link_stats(net: Any) -> Any:
    with contextlib.suppress(Exception):
        return net.link_stats()
    return None


def run_trial(ctx: RunContext, net: Any, trial: Trial) -> list[dict]:
    """One trial on a running network; writes trials/<trial>/ (done.json last)."""
    spec = ctx.spec
    tdir = results.trial_dir(ctx.run_dir, trial.id)
    for stale in tdir.iterdir():  # a trial interrupted earlier starts afresh
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink()
    plan = ctx.plans[trial.point.index]
    flows_spec = spec.flows_for(trial.point)
    rates = {(f.src, f.dst): plan.path_bottleneck_mbps(f.src, f.dst) for f in flows_spec}
    flows = expand_flows(spec, flows_spec, tdir, rates)
    ex = TrialExecution(ctx, net, plan, trial, flows, tdir)
    ex.applied = None
    started = datetime.now().astimezone().isoformat()
    try:
        _apply_point(net, trial.point, ctx.metadata.setdefault("_touched", set()), plan)
        ctx.metadata["_touched"] = set()
        ex.applied = _applied(net)
        time.sleep(spec.settle_s)
        for pid in _emulator_pids(net):
            ex.cpu.add("emulator", pid)
        ex.link_before = _link_stats(net)
        ex.noise_probe.start()
        ex.start_servers()
        ex.start_capture()
        ex.start_probes()
        idle_end = time.time() + spec.probes.idle_s
        while time.time() < idle_end:
            ex.cpu.sample()
            time.sleep(0.02)
        ex.run_flows()
        ex.stop_measurements()
        ex.noise = ex.noise_probe.stop()
        ex.link_after = _link_stats(net)
    finally:
        ex.cleanup()
        ctx.metadata["_touched"] = set(ex.touched_links)
    probes_df = probe_frame(ex)
    rows, series = measure_rows(ex, spec, trial, plan, probes_df)
    info = {
        "trial": trial.id,
        "point": trial.point.index,
        "values": trial.point.values,
        "rep": trial.rep,
        "order": trial.order,
        "seed": trial.seed,
        "started": started,
        "ended": datetime.now().astimezone().isoformat(),
        "t0_unix": ex.t0,
        "flows_end_unix": ex.t_end,
        "flows": [
            {
                "flow": f.index,
                "flow_spec": f.spec.index,
                "protocol": f.spec.protocol,
                "cc": _cc(f.spec),
                "src": f.spec.src,
                "dst": f.spec.dst,
                "port": f.port,
                "size_bytes": f.size_bytes,
                "duration_s": f.duration_s,
                "group": f.group,
                "offset_s": f.offset_s,
                "argv": f.argv,
                "stopped": f.stopped,
                "returncode": f.client.returncode if f.client else None,
            }
            for f in flows
        ],
        "events": ex.events_fired,
        "events_skipped": getattr(ex, "events_skipped", []),
        "cpu": ex.cpu.summary(),
        "cpu_limited": ex.cpu.limited(),
        "machine_noise": ex.noise.as_dict() if ex.noise else None,
        "link_stats_before": ex.link_before,
        "link_stats_after": ex.link_after,
        "applied": ex.applied,
        "capture": _analyse_capture(ex) if ex.capture else None,
    }
    probes_out = probes_df.drop(columns=["_send"]) if "_send" in probes_df else probes_df
    results.save_trial(tdir, rows, series, probes_out, info)
    return rows


def _analyse_capture(ex: TrialExecution) -> dict[str, Any]:
    """Per flow: IP packets/bytes of its data direction seen at the sender's and the receiver's
    host (the sender's count is before GSO segmentation, so packet counts differ; bytes agree),
    and TCP segments whose sequence number was already sent (retransmissions, sender side)."""
    try:
        from scapy.all import IP, TCP, UDP, PcapReader
    except ImportError as exc:
        return {"error": f"scapy unavailable: {exc}"}
    ports = {f.port: f for f in ex.flows}
    out: dict[str, Any] = {}
    for node, path, _ in ex.capture:
        per: dict[int, dict[str, int]] = {}
        seen: dict[int, set] = {}
        try:
            with PcapReader(str(path)) as reader:
                for pkt in reader:
                    if IP not in pkt:
                        continue
                    l4 = pkt[TCP] if TCP in pkt else pkt.getlayer(UDP)
                    if l4 is None:
                        continue
                    port = l4.dport if l4.dport in ports else (l4.sport if l4.sport in ports else None)
                    if port is None or l4.dport != port:  # data direction only: towards the server port
                        continue
                    f = ports[port]
                    if pkt[IP].src != ex.net.ip(f.spec.src):
                        continue
                    c = per.setdefault(port, {"packets": 0, "bytes": 0, "retransmits": 0})
                    c["packets"] += 1
                    c["bytes"] += int(pkt[IP].len)  # header field: the capture is truncated
                    if TCP in pkt and len(pkt[TCP].payload) > 0:
                        key = (pkt[TCP].sport, pkt[TCP].seq)
                        if key in seen.setdefault(port, set()):
                            c["retransmits"] += 1
                        seen[port].add(key)
        except (OSError, ValueError) as exc:
            out[node] = {"error": str(exc)}
            continue
        out[node] = {str(ports[p].index): c for p, c in per.items()}
    return out


def _git() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
        return {"commit": commit or None, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _versions() -> dict[str, Any]:
    out: dict[str, Any] = {
        "testbed": __version__,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    for pkg in ("aioquic", "mininet", "numpy", "pandas", "scapy", "pyroute2"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        first = subprocess.run(["iperf3", "--version"], capture_output=True, text=True, timeout=5).stdout
        out["iperf3"] = first.split()[1] if first.split() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        out["iperf3"] = None
    return out


def _machine() -> dict[str, Any]:
    model, mem = None, None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = round(kb / 1024 / 1024, 1)
    return {
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": mem,
        "load_avg": list(os.getloadavg()),
    }


def _fidelity_check(backend: str) -> dict[str, Any] | None:
    try:
        from ..check import run_check
    except ImportError as exc:
        return {"skipped": f"testbed.check unavailable: {exc}"}
    try:
        return run_check(backend=None if backend == "auto" else backend, quick=True)
    except Exception as exc:  # recorded, never fatal: the run says what it could not verify
        return {"error": f"{type(exc).__name__}: {exc}"}


METHOD = {
    "order": "repetition blocks; grid points shuffled within each block with the run seed (kept together "
    "per topology structure, structures shuffled too)",
    "network_reuse": "one network per run of consecutive trials with the same topology structure (topology "
    "params, MTUs); each trial first applies "
    "its point's link parameters with set_link (and undoes the previous trial's link events)",
    "baseline_rtt": "minimum ping RTT during the idle phase before the flows",
    "loaded_rtt": "mean ping RTT while the flow ran",
    "one_way_delay": "UDP probe stream, send/receive time.time() on one shared clock (exact one-way delay)",
    "duration_flows": "size = configured path rate x duration (the most the path carries in that time), "
    "run to completion; window_goodput_mbps = receiver bytes in the first duration_s / duration_s; "
    "fairness uses window goodputs when every competing flow has one",
    "cpu": "/proc/<pid>/stat utime+stime sampled every 0.25 s; cpu_limited when a process used >= 90 % of a "
    "core over the trial or any 1-s window",
    "machine_noise": "per trial, from the servers' start to the end of the probes: hypervisor steal from "
    "/proc/stat and how late a real-time process (SCHED_FIFO 1, the emulator's priority) woke up every "
    f"{NOISE_PERIOD_MS:g} ms (p99); a noisy machine (steal >= {NOISY_STEAL_PCT:g} % or p99 >= "
    f"{NOISY_LATE_P99_MS:g} ms) adds its own lateness to delays",
    "loss_pattern_seed": "the network is seeded once per structure (Network seed = run seed); "
    "per-trial seeds drive the payload",
}


def _write_metadata(ctx: RunContext) -> None:
    meta = {k: v for k, v in ctx.metadata.items() if not k.startswith("_")}
    results.write_json(ctx.run_dir / "metadata.json", meta)


def _prepare_run(
    spec: ExperimentSpec, out_dir: str | Path | None, resume: str | Path | None, backend: str, check: bool
) -> RunContext:
    if resume is not None:
        run_dir = Path(resume).resolve()  # processes run with other working directories
        meta = results.read_json(run_dir / "metadata.json")
        if not isinstance(meta, dict):
            raise TestbedError(f"{run_dir}: not a run directory (no readable metadata.json)")
        meta.update(
            status="running",
            pid=os.getpid(),
            resumed=[*meta.get("resumed", []), datetime.now().astimezone().isoformat()],
        )
        return RunContext(spec, run_dir, meta.get("backend_requested", backend), meta)
    run_dir = (Path(out_dir) if out_dir else results.new_run_dir(spec.name)).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "metadata.json").exists():
        raise TestbedError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
    meta: dict[str, Any] = {
        "name": spec.name,
        "spec": spec.raw,
        "resolved": spec.resolved(),
        "spec_file": spec.source,
        "sets": spec.sets,
        "seed": spec.seed,
        "repeat": spec.repeat,
        "grid_keys": list(spec.grid),
        "git": _git(),
        "versions": _versions(),
        "machine": _machine(),
        "backend_requested": backend,
        "link_backend": None,
        "fidelity_check": None,
        "topology": None,
        "method": METHOD,
        "started": datetime.now().astimezone().isoformat(),
        "ended": None,
        "status": "running",
        "pid": os.getpid(),
        "trials": {"total": len(spec.points()) * spec.repeat, "done": 0},
    }
    ctx = RunContext(spec, run_dir, backend, meta)
    _write_metadata(ctx)
    if check:
        meta["fidelity_check"] = _fidelity_check(backend)
    else:
        meta["fidelity_check"] = None
        meta["fidelity_check_skipped"] = "--no-check"
    return ctx


def run(
    spec: ExperimentSpec,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    backend: str | None = None,
    check: bool = True,
) -> results.RunResult:
    """Run every trial not yet done; returns the run's tables (also when interrupted: partial)."""
    from ..network.net import Network

    backend = backend or spec.backend
    ctx = _prepare_run(spec, out_dir, resume, backend, check)
    trials = plan_trials(spec)
    done = results.done_trials(ctx.run_dir)
    todo = [t for t in trials if t.id not in done]
    grid_keys = list(spec.grid)
    bar = _progress(len(trials), len(done), progress)
    old_term = _sigterm_as_interrupt()
    status = "partial"
    try:
        # Consecutive trials of one structure share a network (plan_trials keeps them together).
        chunks = [list(g) for _, g in itertools.groupby(todo, key=lambda t: t.point.structure)]
        for group in chunks:
            for t in group:
                if t.point.index not in ctx.plans:
                    ctx.plans[t.point.index] = _topology(spec, t.point)
            first_plan = ctx.plans[group[0].point.index]
            workdir = ctx.run_dir / "net"
            workdir.mkdir(exist_ok=True)
            emulate_all = _needs_emulate_all(spec, group, first_plan)
            ctx.metadata["emulate_all"] = emulate_all
            with Network(
                first_plan, backend=ctx.backend, seed=spec.seed, workdir=str(workdir), emulate_all=emulate_all
            ) as net:
                _record_network(ctx, net, first_plan)
                for t in group:
                    if bar is not None:
                        bar.set_postfix_str(f"{t.id} {t.point.label()}"[:60])
                    run_trial(ctx, net, t)
                    ctx.metadata["trials"]["done"] = len(results.done_trials(ctx.run_dir))
                    _write_metadata(ctx)
                    results.rebuild_tables(ctx.run_dir, grid_keys)
                    if bar is not None:
                        bar.update(1)
        status = "complete" if len(results.done_trials(ctx.run_dir)) >= len(trials) else "partial"
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if bar is not None:
            bar.close()
        ctx.metadata.update(status=status, ended=datetime.now().astimezone().isoformat())
        ctx.metadata["trials"]["done"] = len(results.done_trials(ctx.run_dir))
        res_df, ts, pr = results.rebuild_tables(ctx.run_dir, grid_keys)
        _write_metadata(ctx)
    summary, comps = results.summarize(res_df, grid_keys, seed=spec.seed)
    text = results.format_summary(summary, comps, grid_keys)
    results.write_atomic(ctx.run_dir / "summary.txt", text + "\n")
    if not summary.empty:
        results.write_atomic(ctx.run_dir / "stats.csv", summary.to_csv(index=False))
    if not comps.empty:
        results.write_atomic(ctx.run_dir / "comparisons.csv", comps.to_csv(index=False))
    meta = {k: v for k, v in ctx.metadata.items() if not k.startswith("_")}
    return results.RunResult(ctx.run_dir, res_df, ts, pr, meta, summary, comps)


def resume_run(run_dir: str | Path, **kwargs: Any) -> results.RunResult:
    """Continue a run from its directory: the spec comes from its metadata (as given + --set)."""
    meta = results.read_json(Path(run_dir) / "metadata.json")
    if not isinstance(meta, dict) or "spec" not in meta:
        raise TestbedError(f"{run_dir}: not a run directory (no readable metadata.json)")
    spec_file = meta.get("spec_file") or "<metadata>"
    base = Path(spec_file).parent if spec_file and Path(spec_file).exists() else None
    spec = experiment_from_dict(meta["spec"], spec_file, sets=meta.get("sets", []), base_dir=base)
    return run(spec, resume=run_dir, **kwargs)


def _needs_emulate_all(spec: ExperimentSpec, trials: list[Trial], plan: Any) -> bool:
    """A link that changes at run time (grid, events) but starts unimpaired must go through the
    userspace emulator from the start, or set_link could not change it later."""
    names = {ev.link for ev in spec.events}
    for t in trials:
        names.update(split_link_key(k)[0] for k in t.point.runtime_links)
    for name in names:
        link = plan.spec.link(name)
        if not any(p.bw_mbps is not None or p.impaired for p in (link.ab, link.ba)):
            return True
    return False


def _record_network(ctx: RunContext, net: Any, plan: Any) -> None:
    applied = _applied(net)
    backend_info = applied.get("backend") if isinstance(applied, dict) else None
    ctx.metadata["link_backend"] = backend_info or {"name": getattr(net, "backend_name", None)}
    topo = plan.spec
    networks = ctx.metadata.setdefault("networks", [])
    networks.append({"started": datetime.now().astimezone().isoformat(), "applied": applied})
    ctx.metadata["topology"] = {
        "name": topo.name,
        "source": topo.source,
        "nodes": len(topo.nodes),
        "links": len(topo.links),
        "operators": topo.operators(),
        "params": topo.meta.get("params"),
        "links_applied": (applied or {}).get("links") if isinstance(applied, dict) else None,
    }
    _write_metadata(ctx)


def _progress(total: int, done: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="trial", dynamic_ncols=True, file=sys.stderr)


def _sigterm_as_interrupt():
    """SIGTERM -> KeyboardInterrupt, so finished trials are kept and everything is cleaned."""

    def handler(_signum, _frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return signal.SIG_DFL


__all__ = ["METHOD", "Trial", "plan_trials", "resume_run", "run", "run_trial", "trial_seed"]
