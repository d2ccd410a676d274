"""Records of running networks (/run/testbed/<netid>.json) and the /proc helpers that read them.

Every running network writes its record *before* it creates anything, so that whatever a killed
run leaves behind can be found and removed by `testbed clean` (see cleanup.py). A record names
the owner process (pid + start time, so a reused pid is not mistaken for the owner), the node
shells with their network-namespace inodes, the root-namespace interfaces and the emulator pids.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_DIR = Path("/run/testbed")
NETID_RE = re.compile(r"^[0-9a-f]{4}$")
# Root-namespace interface names: tb<netid><link index><a|b>, at most 15 characters.
ROOT_IF_RE = re.compile(r"^tb([0-9a-f]{4})(\d+)([ab])$")
SHELL_TAG_RE = re.compile(r"testbed:([0-9a-f]{4}):(\S+)")


def shell_tag(netid: str, node: str) -> str:
    """The argv word that marks a node shell (and the alias of its loopback) as ours."""
    return f"testbed:{netid}:{node}"


def root_ifname(netid: str, link_index: int, side: str) -> str:
    name = f"tb{netid}{link_index}{side}"
    if len(name) > 15:
        raise ValueError(f"interface name {name} longer than 15 characters")
    return name


@dataclass
class ProcRef:
    """A process identified robustly: pid plus its start time (clock ticks since boot)."""

    pid: int
    start: int | None = None

    @classmethod
    def of(cls, pid: int) -> ProcRef:
        return cls(pid, proc_start_time(pid))

    def alive(self) -> bool:
        start = proc_start_time(self.pid)
        return start is not None and (self.start is None or start == self.start)


@dataclass
class NetRecord:
    netid: str
    owner: ProcRef
    topology: str = ""
    backend: str = ""
    created: float = field(default_factory=time.time)
    nodes: dict[str, dict] = field(default_factory=dict)  # name -> {"pid", "start", "netns"}
    root_interfaces: list[str] = field(default_factory=list)
    emulator: list[dict] = field(default_factory=list)  # [{"pid", "start"}]

    @property
    def path(self) -> Path:
        return STATE_DIR / f"{self.netid}.json"

    def save(self) -> None:
        """Atomic rewrite (the file already exists: claim() created it)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def netns_inodes(self) -> set[int]:
        return {n["netns"] for n in self.nodes.values() if n.get("netns")}

    def owner_alive(self) -> bool:
        return self.owner.alive()

    @classmethod
    def load(cls, path: Path) -> NetRecord | None:
        try:
            data = json.loads(path.read_text())
            data["owner"] = ProcRef(**data["owner"])
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError):
            return None


def claim_netid(topology: str, backend: str) -> NetRecord:
    """A fresh record with a netid unused by any record or root interface (O_EXCL file)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    used = {m.group(1) for m in map(ROOT_IF_RE.match, root_interfaces()) if m}
    for _ in range(1000):
        netid = secrets.token_hex(2)
        if netid in used:
            continue
        try:
            fd = os.open(STATE_DIR / f"{netid}.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        record = NetRecord(netid, ProcRef.of(os.getpid()), topology, backend)
        record.save()
        return record
    raise RuntimeError("no free network id")


def records() -> list[NetRecord]:
    if not STATE_DIR.is_dir():
        return []
    out = []
    for path in sorted(STATE_DIR.glob("*.json")):
        record = NetRecord.load(path)
        if record is not None and NETID_RE.match(record.netid):
            out.append(record)
    return out


# --- /proc helpers -------------------------------------------------------------------------


def proc_start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after ')' are fixed.
    return int(stat.rsplit(")", 1)[1].split()[19])


def netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def pids_in_netns(inodes: set[int]) -> list[int]:
    """Processes whose network namespace is one of `inodes`."""
    if not inodes:
        return []
    return [pid for pid in all_pids() if netns_inode(pid) in inodes]


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").rstrip("\0").split("\0")
    except OSError:
        return []


def kill_all(pids: list[int], sig: int = signal.SIGKILL) -> list[int]:
    """Send `sig` to each pid; returns those that existed."""
    killed = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed


def root_interfaces() -> list[str]:
    """Names of the interfaces in our (the root) network namespace."""
    try:
        return os.listdir("/sys/class/net")
    except OSError:
        return []


def wait_gone(pids: list[int], timeout: float = 3.0) -> list[int]:
    """Wait until the processes have exited; returns those still there at the timeout."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [p for p in left if proc_start_time(p) is not None and not _zombie(p)]
        if left:
            time.sleep(0.02)
    return left


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
