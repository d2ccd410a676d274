"""A real network built from a NetworkPlan: Mininet namespace nodes, veths, a link backend.

Everything of a network lives in its nodes' namespaces (switches are Linux bridges inside the
switch node's own namespace), except the userspace emulator's veth ends, which are named
`tb<netid><link><a|b>`; so several networks can run at once. Nodes are Mininet `Node`s (the
CLI and callers use `.cmd()`/`.popen()`), but interfaces, addresses and routes are set up in
one `ip -batch` per node, run for all nodes in parallel, which keeps 100 nodes well under 20 s.
Interfaces get the plan's MACs, and every IP node permanent neighbour entries for its link and
segment peers (switches: static FDB entries), so no ARP or flooding crosses an emulated link
and a seeded loss pattern repeats exactly (`static_l2`).

`stop()` is idempotent and always removes everything (also when `start()` fails or is
interrupted); a record in /run/testbed/<netid>.json lets `testbed clean` finish the job when the
owning process was killed.
"""
from __future__ import annotations

import atexit
import ipaddress
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
from mininet.net import Mininet

from ..errors import TestbedError
from ..topology.model import LINK_PARAM_FIELDS, Interface, NetworkPlan
from .backend import LinkBackend, LinkState, probe
from .nodes import PlanIntf, PlanLink, TestbedNode
from .state import (
    NetRecord,
    ProcRef,
    claim_netid,
    kill_all,
    netns_inode,
    pids_in_netns,
    root_interfaces,
    shell_tag,
    wait_gone,
)

NODE_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": 1,  # no DAD, router solicitations or MLD noise
    "net.ipv6.conf.default.disable_ipv6": 1,
    "net.ipv4.conf.all.rp_filter": 0,  # asymmetric routes across operators are legitimate
    "net.ipv4.conf.default.rp_filter": 0,
    "net.ipv4.tcp_no_metrics_save": 1,  # every flow starts from scratch
}
BRIDGE = "br0"
NODE_START_THREADS = 8  # the bridge inside a switch node's namespace


class Network:
    """A running emulated network; use as a context manager (`with Network(plan) as net:`)."""

    def __init__(
        self,
        plan: NetworkPlan,
        backend: str = "auto",
        seed: int = 0,
        workdir: str | None = None,
        *,
        emulate_all: bool = False,
        scale_rates: bool = False,
    ):
        """emulate_all: (userspace) route even unimpaired links through the emulator, so that
        set_link can change them later. scale_rates: (userspace) when a rate exceeds what the
        emulator sustains, scale all rates down by one recorded factor instead of failing."""
        self.plan = plan
        self.requested_backend = backend
        self.seed = seed
        self.emulate_all = emulate_all
        self.scale_rates = scale_rates
        self.backend: str | None = None  # name of the backend in use, after start()
        self.info = None
        self.mininet: Mininet | None = None
        self.netid: str | None = None
        self.workdir: Path | None = Path(workdir) if workdir else None
        self._own_workdir = workdir is None
        self._impl: LinkBackend | None = None
        self._record: NetRecord | None = None
        self._nodes: dict[str, TestbedNode] = {}
        self._links: list[LinkState] = []
        self._state = "new"  # new -> starting -> running -> stopping -> stopped
        self._record_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.timings: dict[str, float] = {}  # seconds per start-up phase (nodes, veths, configure, links)
        self._l2 = static_l2(plan)

    # --- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> Network:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Network:
        if self._state != "new":
            raise TestbedError("a Network can be started once")
        self._state = "starting"
        _signals.acquire(self)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self._state = "running"
        return self

    def _start(self) -> None:
        self.info = probe(self.requested_backend)
        self.backend = self.info.name
        self._record = claim_netid(self.plan.spec.name, self.backend)
        self.netid = self._record.netid
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"testbed-{self.netid}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._impl = _make_backend(self)
        self._links = self._link_states()
        for link in self._links:
            self._impl.wire(link)
        phases = (
            ("nodes", self._start_nodes),
            ("veths", self._make_veths),
            ("configure", lambda: self._run_in_nodes({n: self._config_script(n) for n in self._nodes})),
            ("links", lambda: self._impl.start(self._links)),
        )
        for phase, run in phases:
            t0 = time.monotonic()
            run()
            self.timings[f"{phase}_s"] = time.monotonic() - t0
        self._record.emulator = [vars(ProcRef.of(pid)) for pid in self._impl.pids()]
        self._record.save()

    def stop(self) -> None:
        """Remove everything this network created; safe to call any number of times."""
        if self._state in ("stopping", "stopped", "new"):
            if self._state == "new":
                self._state = "stopped"
            return
        self._state = "stopping"
        blocked = _block_signals()
        try:
            self._teardown()
        finally:
            self._state = "stopped"
            _signals.release(self)
            _unblock_signals(blocked)

    def _teardown(self) -> None:
        """Kill everything in our namespaces (the kernel then deletes their veths, and with
        them the root ends, in one batch: much faster than deleting veths one by one), while
        the backend stops in parallel; then delete any root interface still there."""
        errors: list[str] = []
        if self._pool is not None:  # node starts still in flight (start() interrupted)
            self._pool.shutdown(wait=True, cancel_futures=True)
        stopper = threading.Thread(target=self._stop_backend, args=(errors,), daemon=True)
        stopper.start()
        record = self._record
        inodes = record.netns_inodes() if record else set()
        kill_all([n.pid for n in self._nodes.values() if n.pid])
        for node in self._nodes.values():
            try:
                node.terminate()  # reaps the shell, closes its pty
            except Exception:  # already gone
                pass
        left: list[int] = []
        for _round in range(3):  # a process may have been forking while we looked
            left = wait_gone(kill_all(pids_in_netns(inodes)))
            if not left and not pids_in_netns(inodes):
                break
        stopper.join(timeout=20)
        helpers = [ProcRef(**p) for p in (record.emulator if record else [])]
        left += wait_gone(kill_all([p.pid for p in helpers if p.alive()]))
        roots = record.root_interfaces if record else []
        if _wait_interfaces_gone(roots, timeout=5.0):
            _delete_root_interfaces(roots)
        left_ifs = _wait_interfaces_gone(roots, timeout=1.0)
        if left or left_ifs:
            errors.append(f"left behind: pids {sorted(set(left))}, interfaces {left_ifs}")
        if record is not None:
            if errors:
                print(f"testbed: network {self.netid}: {'; '.join(errors)}; run `testbed clean`",
                      file=sys.stderr)
            else:
                record.remove()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop_backend(self, errors: list[str]) -> None:
        if self._impl is not None:
            try:
                self._impl.stop()
            except Exception as exc:  # teardown goes on; the leftovers check reports
                errors.append(f"backend stop: {exc}")

    # --- building -------------------------------------------------------------------------

    def _link_states(self) -> list[LinkState]:
        by_link: dict[int, list[Interface]] = {}
        for intfs in self.plan.interfaces.values():
            for intf in intfs:
                by_link.setdefault(intf.link_index, []).append(intf)
        states = []
        for index, spec in enumerate(self.plan.spec.links):
            ends = by_link.get(index, [])
            intf_a = next((i for i in ends if i.node == spec.a), None)
            intf_b = next((i for i in ends if i.node == spec.b and i is not intf_a), None)
            if intf_a is None or intf_b is None:
                raise TestbedError(f"plan has no interfaces for link {spec.label}")
            states.append(LinkState(index, spec, intf_a, intf_b, {"ab": spec.ab, "ba": spec.ba}))
        return states

    def _start_nodes(self) -> None:
        """Node shells (with their sysctls), several at a time: each start mostly waits."""
        self.mininet = Mininet(topo=None, build=False, controller=None, autoSetMacs=False)
        self._pool = ThreadPoolExecutor(max_workers=NODE_START_THREADS)
        futures = [self._pool.submit(self._start_node, name) for name in self.plan.spec.nodes]
        self._pool.shutdown(wait=True)  # interrupted here, stop() waits for the pool itself
        for future in futures:  # every start has ended (and its node is known to stop())
            future.result()
        for name, spec in self.plan.spec.nodes.items():
            node = self._nodes[name]
            self.mininet.nameToNode[name] = node
            (self.mininet.switches if spec.kind == "switch" else self.mininet.hosts).append(node)
        for link in self._links:
            ends = []
            for intf in (link.intf_a, link.intf_b):
                node = self._nodes[intf.node]
                ends.append(PlanIntf(intf.name, node, node.newPort(), intf.ip, intf.prefixlen, intf.mac))
            self.mininet.links.append(PlanLink(*ends))

    def _start_node(self, name: str) -> None:
        if self._state != "starting":  # interrupted: do not start more
            return
        node = TestbedNode(name, netid=self.netid, plan_ip=self._plan_ip(name))
        with self._record_lock:
            self._nodes[name] = node
            self._record.nodes[name] = {"pid": node.pid, "start": ProcRef.of(node.pid).start,
                                        "netns": netns_inode(node.pid)}
            self._record.save()
        out = node.cmd(f"{self._sysctl_script(name)}; echo rc=$?")
        if "rc=0" not in out:
            raise TestbedError(f"{name}: setting up the namespace failed: {out.strip()}")

    def _plan_ip(self, name: str) -> str | None:
        try:
            return self.plan.ip(name)
        except KeyError:
            return None

    def _sysctl_script(self, name: str) -> str:
        sysctls = dict(NODE_SYSCTLS)
        sysctls["net.ipv4.ip_forward"] = int(self.plan.spec.nodes[name].kind == "router")
        settings = " ".join(f"{k}={v}" for k, v in sysctls.items())
        tag = shell_tag(self.netid, name)
        return f"sysctl -qw {settings} && ip link set dev lo alias {tag} up"

    def _make_veths(self) -> None:
        """All veth pairs in one root `ip -batch`; node ends are born inside their namespaces."""
        pid = {name: node.pid for name, node in self._nodes.items()}
        roots = [n for link in self._links for n in (link.root_a, link.root_b) if n]
        self._record.root_interfaces = roots
        self._record.save()
        lines = []
        for link in self._links:
            a, b = link.intf_a, link.intf_b
            if link.root_a:
                lines.append(f"link add name {link.root_a} type veth peer name {a.name} netns {pid[a.node]}")
                lines.append(f"link add name {link.root_b} type veth peer name {b.name} netns {pid[b.node]}")
            else:
                lines.append(f"link add name {a.name} netns {pid[a.node]} type veth "
                             f"peer name {b.name} netns {pid[b.node]}")
        _ip_batch(lines)
        if roots:
            for name in roots:  # before they come up: no IPv6 link-local, DAD or RS on them
                Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1")
            mtu = {n: link.spec.mtu for link in self._links for n in (link.root_a, link.root_b) if n}
            _ip_batch([f"link set dev {n} mtu {mtu[n]} up" for n in roots])

    def _config_script(self, name: str) -> str:
        lines, shell = [], []
        is_switch = self.plan.spec.nodes[name].kind == "switch"
        if is_switch:
            lines.append(f"link add name {BRIDGE} type bridge stp_state 0 forward_delay 0")
        for intf in self.plan.interfaces.get(name, []):
            link = self._links[intf.link_index]
            mac = f" address {intf.mac}" if intf.mac else ""
            lines.append(f"link set dev {intf.name} mtu {link.spec.mtu}{mac} up")
            if is_switch:
                lines.append(f"link set dev {intf.name} master {BRIDGE}")
            elif intf.cidr:
                lines.append(f"addr add {intf.cidr} dev {intf.name}")
            shell += self._impl.node_side_commands(link, intf)
        if is_switch:
            lines.append(f"link set dev {BRIDGE} up")
        lines += [f"neigh replace {ip} lladdr {mac} dev {dev} nud permanent"
                  for ip, mac, dev in self._l2.neighbours.get(name, [])]  # fmt: skip
        for route in self.plan.routes.get(name, []):
            via = f" via {route.via}" if route.via else ""
            lines.append(f"route replace {route.dst}{via} dev {route.dev}")
        scripts = [_heredoc("ip -batch -", lines)]
        fdb = [f"fdb replace {mac} dev {port} master static" for mac, port in self._l2.fdb.get(name, [])]
        if fdb:  # after the ports joined the bridge
            scripts.append(_heredoc("bridge -batch -", fdb))
        return "\n".join([*scripts, *shell])

    def _run_in_nodes(self, scripts: dict[str, str]) -> None:
        """Run one shell script per node, all nodes at once; any failure is a TestbedError."""
        procs = {name: self.node_popen(name, script) for name, script in scripts.items()}
        failures = []
        for name, proc in procs.items():
            out, err = proc.communicate()
            if proc.returncode != 0:
                failures.append(f"{name}: {(err or out).strip()}")
        if failures:
            raise TestbedError(f"configuring nodes failed: {'; '.join(failures[:5])}")

    # --- running commands -------------------------------------------------------------------

    def node_popen(self, name: str, script: str, **kwargs: Any) -> subprocess.Popen:
        """A shell script in the node's namespace, as a separate process (not the node shell)."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(["mnexec", "-a", str(self.node(name).pid), "sh", "-c", script],
                                text=True, **kwargs)

    def node_run(self, name: str, script: str, stdin: str | None = None, check: bool = True,
                 timeout: float | None = 60) -> subprocess.CompletedProcess:
        out = subprocess.run(["mnexec", "-a", str(self.node(name).pid), "sh", "-c", script],
                             input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise TestbedError(f"{name}: `{script}` failed: {(out.stderr or out.stdout).strip()}")
        return out

    # --- public API ---------------------------------------------------------------------------

    def node(self, name: str) -> TestbedNode:
        try:
            return self._nodes[name]
        except KeyError:
            raise TestbedError(f"no node {name!r} in {self.plan.spec.name}") from None

    def ip(self, name: str) -> str:
        return self.plan.ip(name)

    @property
    def nodes(self) -> dict[str, TestbedNode]:
        return dict(self._nodes)

    @property
    def links(self) -> list[LinkState]:
        return list(self._links)

    def link(self, link: str | int) -> LinkState:
        """A link by index or label (`name`, else `a-b`)."""
        if isinstance(link, int):
            if 0 <= link < len(self._links):
                return self._links[link]
        else:
            for state in self._links:
                if link in (state.spec.label, state.spec.name, f"{state.spec.a}-{state.spec.b}"):
                    return state
        labels = ", ".join(s.spec.label for s in self._links)
        raise TestbedError(f"no link {link!r} (links: {labels})")

    def set_link(self, link: str | int, direction: str | None = None, **fields: Any) -> None:
        """Change link parameters at run time, in one direction ("ab"/"ba") or both."""
        self._require_running()
        unknown = sorted(set(fields) - set(LINK_PARAM_FIELDS))
        if unknown:
            raise TestbedError(f"unknown link field(s) {', '.join(unknown)} "
                               f"(allowed: {', '.join(LINK_PARAM_FIELDS)})")
        state = self.link(link)
        for d in _directions(direction):
            params = state.params[d].replace(**fields)
            self._impl.set_params(state, d, params)
            state.params[d] = params

    def link_down(self, link: str | int) -> None:
        self._set_down(link, True)

    def link_up(self, link: str | int) -> None:
        self._set_down(link, False)

    def _set_down(self, link: str | int, down: bool) -> None:
        self._require_running()
        state = self.link(link)
        self._impl.set_down(state, down)
        state.down = down

    def link_stats(self) -> list[dict[str, Any]]:
        """Per link and direction: packets and drops as counted by the backend."""
        self._require_running()
        counters = self._impl.stats(self._links)
        return [
            {"index": s.index, "link": s.spec.label, "mode": s.mode, "down": s.down, **counters[s.index]}
            for s in self._links
        ]

    def applied(self) -> dict[str, Any]:
        """The backend (and why) and, per link and direction, what is really applied."""
        out: dict[str, Any] = {
            "backend": {"name": self.backend, "reason": self.info.reason if self.info else ""},
            "netid": self.netid,
            "seed": self.seed,
            # permanent neighbour entries and static bridge FDB entries from the plan's MACs:
            # no ARP or flooding on the links, so the seeded loss draws see only the traffic
            "static_l2": True,
            "links": [state.as_dict() for state in self._links],
        }
        if self._impl is not None:
            out.update(self._impl.extra_applied())
        return out

    def pids(self) -> list[int]:
        """Root-namespace helper processes (the emulator), for CPU accounting."""
        return self._impl.pids() if self._impl else []

    def cpu_seconds(self) -> float | None:
        return self._impl.cpu_seconds() if self._impl else None

    def _require_running(self) -> None:
        if self._state != "running":
            raise TestbedError(f"network is {self._state}, not running")


@dataclass
class StaticL2:
    """Permanent neighbour entries (node -> [(ip, mac, dev)]) and static bridge FDB entries
    (switch -> [(mac, port)]) for every L2 segment of a plan."""

    neighbours: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    fdb: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def static_l2(plan: NetworkPlan) -> StaticL2:
    """The plan fixes every address and MAC, so the links need no ARP and the bridges no
    flooding: such frames depend on timing, and on an emulated link with loss they would take
    random draws that belong to data frames, so a seeded loss pattern would not repeat."""
    out = StaticL2()
    by_subnet: dict[ipaddress.IPv4Network, list[Interface]] = {}
    for intfs in plan.interfaces.values():
        for intf in intfs:
            if intf.cidr and intf.mac:
                by_subnet.setdefault(ipaddress.ip_interface(intf.cidr).network, []).append(intf)
    for members in by_subnet.values():
        for intf in members:
            out.neighbours.setdefault(intf.node, []).extend(
                (peer.ip, peer.mac, intf.name) for peer in members if peer is not intf
            )
    switches = {n for n, s in plan.spec.nodes.items() if s.kind == "switch"}
    if switches:
        segments = nx.Graph()
        segments.add_nodes_from(switches)
        segments.add_edges_from((lk.a, lk.b) for lk in plan.spec.links if {lk.a, lk.b} <= switches)
        hosts_at = {s: [i for n, intfs in plan.interfaces.items() if n not in switches
                        for i in intfs if i.peer == s and i.mac] for s in switches}  # fmt: skip
        for sw in sorted(switches):
            for port in plan.interfaces.get(sw, []):
                if port.peer in switches:  # everything attached beyond that switch
                    beyond = nx.node_connected_component(segments.subgraph(switches - {sw}), port.peer)
                    macs = [i.mac for s in beyond for i in hosts_at[s]]
                else:
                    macs = [i.mac for i in hosts_at[sw] if i.link_index == port.link_index]
                out.fdb.setdefault(sw, []).extend((mac, port.name) for mac in macs)
    return out


def _directions(direction: str | None) -> Iterable[str]:
    if direction is None:
        return ("ab", "ba")
    if direction not in ("ab", "ba"):
        raise TestbedError(f"direction must be 'ab' or 'ba', got {direction!r}")
    return (direction,)


def _make_backend(net: Network) -> LinkBackend:
    if net.backend == "netem":
        from .netem import NetemBackend

        return NetemBackend(net, net.info)
    from .userspace import UserspaceBackend

    return UserspaceBackend(net, net.info)


def _heredoc(command: str, lines: list[str]) -> str:
    body = "\n".join(lines)
    return f"{command} <<'EOF'\n{body}\nEOF"


def _ip_batch(lines: list[str], force: bool = False) -> None:
    if not lines:
        return
    argv = ["ip", *(["-force"] if force else []), "-batch", "-"]
    out = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True)
    if out.returncode != 0 and not force:
        raise TestbedError(f"creating interfaces failed: {out.stderr.strip()}")


def _delete_root_interfaces(names: list[str]) -> list[str]:
    present = set(root_interfaces())
    gone = [n for n in names if n in present]
    _ip_batch([f"link del dev {n}" for n in gone], force=True)
    return gone


def _wait_interfaces_gone(names: list[str], timeout: float = 3.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        left = sorted(set(names) & set(root_interfaces()))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


# --- signals: SIGTERM/SIGHUP during a run stop the network via the `with` block -------------

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


class _SignalGuard:
    """Installs handlers while at least one Network runs (main thread only) and an atexit
    hook, so that a terminated or exiting process stops its networks."""

    def __init__(self) -> None:
        self.live: weakref.WeakSet[Network] = weakref.WeakSet()
        self.saved: dict[int, Any] = {}
        self.lock = threading.Lock()
        atexit.register(self.stop_all)

    def acquire(self, net: Network) -> None:
        with self.lock:
            self.live.add(net)
            if self.saved or threading.current_thread() is not threading.main_thread():
                return
            for sig in _STOP_SIGNALS:
                self.saved[sig] = signal.signal(sig, _raise_exit)
            if signal.getsignal(signal.SIGINT) in (signal.SIG_DFL, signal.SIG_IGN):
                self.saved[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)

    def release(self, net: Network) -> None:
        with self.lock:
            self.live.discard(net)
            if self.live or not self.saved:
                return
            if threading.current_thread() is threading.main_thread():
                for sig, handler in self.saved.items():
                    signal.signal(sig, handler)
                self.saved.clear()

    def stop_all(self) -> None:
        for net in list(self.live):
            net.stop()


_signals = _SignalGuard()


def _block_signals() -> set[int]:
    """Hold SIGINT/SIGTERM/SIGHUP during teardown; they are delivered after it."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, *_STOP_SIGNALS})


def _unblock_signals(previous: set[int]) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, previous)

