"""Link backends: how a link's rate, delay, jitter, loss and queue are really applied.

- `netem`: the kernel's sch_netem (+ HTB for rate) on each end's egress of a direct veth.
- `userspace`: the testbed's own emulator process between two root-namespace veth ends
  (testbed/emulator), for kernels without sch_netem (like this project's machines).

`probe()` tests the kernel for real, in a throwaway namespace, instead of trusting Mininet's
TCLink (which starts a link without delay or loss when sch_netem is missing).
"""
from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import CapabilityError, TestbedError
from ..topology.model import Interface, LinkParams, LinkSpec

if TYPE_CHECKING:
    from .net import Network

BACKENDS = ("auto", "netem", "userspace")


@dataclass(frozen=True)
class BackendInfo:
    """Result of the capability probe and of the backend choice."""

    name: str  # "netem" or "userspace"
    reason: str
    netem: bool  # sch_netem usable
    netem_error: str = ""
    netem_seed: bool = False  # this tc supports netem `seed` (reproducible loss)
    htb: bool = False
    kernel: str = field(default_factory=platform.release)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _in_scratch_netns(script: str) -> subprocess.CompletedProcess:
    """Run a shell script in a new, empty network namespace that dies with it."""
    if shutil.which("unshare"):
        argv = ["unshare", "--net", "sh", "-c", script]
    else:
        argv = ["mnexec", "-n", "sh", "-c", script]
    return subprocess.run(argv, capture_output=True, text=True, timeout=10)


@functools.lru_cache(maxsize=1)
def _probe_kernel() -> tuple[bool, str, bool, bool]:
    if os.geteuid() != 0:
        raise CapabilityError("building networks needs root (network namespaces)")
    if not shutil.which("tc"):
        raise CapabilityError("tc (iproute2) is missing: run `sudo make setup`")
    netem = _in_scratch_netns("tc qdisc add dev lo root netem delay 1ms")
    htb = _in_scratch_netns("tc qdisc add dev lo root handle 1: htb default 1")
    helptext = subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "help"],
                              capture_output=True, text=True).stderr
    error = (netem.stderr or netem.stdout).strip().splitlines()
    return netem.returncode == 0, error[0] if error else "", "seed" in helptext, htb.returncode == 0


def probe(requested: str = "auto") -> BackendInfo:
    """Which link backend to use, and why. `requested` is auto, netem or userspace."""
    if requested not in BACKENDS:
        raise TestbedError(f"unknown link backend {requested!r} (allowed: {', '.join(BACKENDS)})")
    netem, error, seed, htb = _probe_kernel()
    caps = dict(netem=netem, netem_error=error, netem_seed=seed, htb=htb)
    if requested == "netem":
        if not netem:
            raise CapabilityError(f"link backend netem requested, but this kernel has no sch_netem ({error})")
        return BackendInfo("netem", "requested; sch_netem works on this kernel", **caps)
    if requested == "userspace":
        return BackendInfo("userspace", "requested", **caps)
    if netem:
        return BackendInfo("netem", "auto: sch_netem works on this kernel", **caps)
    return BackendInfo("userspace", f"auto: sch_netem unavailable ({error or 'qdisc test failed'})", **caps)


@dataclass
class LinkState:
    """One link of a running network, as the backends see it."""

    index: int
    spec: LinkSpec
    intf_a: Interface
    intf_b: Interface
    params: dict[str, LinkParams]  # "ab"/"ba" -> parameters currently requested
    mode: str = "direct"  # "direct" (plain veth), "netem", or "emulator"
    root_a: str | None = None  # root-namespace veth ends (userspace backend)
    root_b: str | None = None
    down: bool = False
    applied: dict[str, dict] = field(default_factory=dict)  # "ab"/"ba" -> what is really applied
    notes: list[str] = field(default_factory=list)

    def sender(self, direction: str) -> Interface:
        """The interface whose egress carries `direction`."""
        return self.intf_a if direction == "ab" else self.intf_b

    def needs_shaping(self) -> bool:
        return any(p.bw_mbps is not None or p.impaired for p in self.params.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "link": self.spec.label, "a": self.spec.a, "b": self.spec.b,
            "mode": self.mode, "mtu": self.spec.mtu, "down": self.down,
            "root_interfaces": [n for n in (self.root_a, self.root_b) if n],
            "ab": dict(self.applied.get("ab", {})), "ba": dict(self.applied.get("ba", {})),
            "notes": list(self.notes),
        }


class LinkBackend(ABC):
    """What a backend does for the Network; the Network owns nodes, veths and addresses."""

    name: str

    def __init__(self, net: Network, info: BackendInfo):
        self.net = net
        self.info = info

    @abstractmethod
    def wire(self, link: LinkState) -> None:
        """Decide `link.mode` (and root interface names) before the veths are created."""

    @abstractmethod
    def start(self, links: list[LinkState]) -> None:
        """Apply every link's parameters once the veths exist and are configured."""

    @abstractmethod
    def set_params(self, link: LinkState, direction: str, params: LinkParams) -> None:
        """Change one direction at run time; updates link.applied[direction]."""

    @abstractmethod
    def set_down(self, link: LinkState, down: bool) -> None: ...

    @abstractmethod
    def stats(self, links: list[LinkState]) -> dict[int, dict[str, Any]]:
        """Link index -> {"ab": counters, "ba": counters}."""

    def node_side_commands(self, link: LinkState, intf: Interface) -> list[str]:
        """Shell commands for a node's end of `link`, run when the node is configured."""
        return []

    def pids(self) -> list[int]:
        """Root-namespace helper processes (for the leftovers record)."""
        return []

    def cpu_seconds(self) -> float | None:
        return None

    def extra_applied(self) -> dict[str, Any]:
        return {}

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Release the backend's own resources; must be idempotent."""

    # Shared by both backends: a direct veth goes down by taking both ends down.
    def set_intf_down(self, link: LinkState, down: bool) -> None:
        state = "down" if down else "up"
        for intf in (link.intf_a, link.intf_b):
            self.net.node_run(intf.node, f"ip link set dev {intf.name} {state}")


def unshaped(link: LinkState) -> None:
    """A plain veth: nothing applied in either direction (same keys as a shaped direction)."""
    for direction in ("ab", "ba"):
        link.applied[direction] = LinkParams().as_dict()
