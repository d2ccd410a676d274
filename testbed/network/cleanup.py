"""`testbed clean`: remove what networks of killed runs left behind, and nothing else.

A network is ours when /run/testbed/<netid>.json records it. Without `all_networks`, only
networks whose owner process is gone are removed; live ones are never touched. Processes are
killed only when they are a recorded node shell (same pid *and* start time) or run inside a
namespace that still carries our marker (loopback alias `testbed:<netid>:<node>`), so a reused
pid or namespace inode never makes us kill a stranger. Namespaces die with their processes; the
root-namespace veth ends `tb<netid>...` are deleted by name.

With `all_networks`, every network of ours goes, including live ones and orphans whose record
is missing (node shells tagged `testbed:<netid>:`, marked namespaces, `tb<netid><i><a|b>` ends).
"""
from __future__ import annotations

import subprocess
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from .state import (
    ROOT_IF_RE,
    SHELL_TAG_RE,
    NetRecord,
    ProcRef,
    all_pids,
    cmdline,
    kill_all,
    netns_inode,
    records,
    root_interfaces,
    wait_gone,
)


@dataclass
class Removed:
    networks: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def __bool__(self) -> bool:
        return bool(self.networks or self.processes or self.interfaces)


def namespace_marker(pid: int) -> str | None:
    """The netid of the testbed network whose namespace `pid` runs in, or None."""
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "link", "show", "dev", "lo"],
                         capture_output=True, text=True, timeout=5)  # fmt: skip
    match = SHELL_TAG_RE.search(out.stdout)
    return match.group(1) if match else None


def _namespaces(exclude: set[int]) -> dict[int, list[int]]:
    """netns inode -> pids in it, for every namespace but the root one and `exclude`."""
    root = netns_inode(1)
    groups: dict[int, list[int]] = defaultdict(list)
    for pid in all_pids():
        inode = netns_inode(pid)
        if inode and inode != root and inode not in exclude:
            groups[inode].append(pid)
    return groups


def _ours(netid: str, inode: int, pids: list[int], record: NetRecord | None) -> bool:
    """Is this namespace really the one of network `netid` (not a reused inode)?"""
    if record is not None:
        for node in record.nodes.values():
            if node.get("netns") == inode and ProcRef(node["pid"], node.get("start")).alive():
                return True
    return any(namespace_marker(pid) == netid for pid in pids[:1])


def clean(all_networks: bool = False) -> Removed:
    """Remove leftovers of dead networks (or, with all_networks, of every network of ours)."""
    removed = Removed()
    recs = records()
    live = [] if all_networks else [r for r in recs if r.owner_alive()]
    targets = {r.netid: r for r in recs if r not in live}
    protected = {i for r in live for i in r.netns_inodes()}
    victims: list[int] = []

    for record in targets.values():  # recorded helper processes and node shells
        procs = [ProcRef(**p) for p in record.emulator]
        procs += [ProcRef(n["pid"], n.get("start")) for n in record.nodes.values()]
        victims += [p.pid for p in procs if p.alive()]

    recorded = {i: r for r in targets.values() for i in r.netns_inodes()}
    for inode, pids in _namespaces(protected).items():
        if inode in recorded:
            record = recorded[inode]
            if _ours(record.netid, inode, pids, record):
                victims += pids
        elif all_networks and namespace_marker(pids[0]):
            victims += pids

    if all_networks:  # orphaned node shells, by their argv tag
        victims += [pid for pid in all_pids() if any(SHELL_TAG_RE.fullmatch(a) for a in cmdline(pid)[-1:])]

    removed.processes = sorted(set(kill_all(sorted(set(victims)))))
    wait_gone(removed.processes)

    ifs = []
    for name in root_interfaces():
        match = ROOT_IF_RE.match(name)
        if match and (all_networks or match.group(1) in targets):
            ifs.append(name)
    for name in ifs:
        if subprocess.run(["ip", "link", "del", "dev", name], capture_output=True).returncode == 0:
            removed.interfaces.append(name)

    for record in targets.values():
        record.remove()
        removed.networks.append(record.netid)
    return removed
