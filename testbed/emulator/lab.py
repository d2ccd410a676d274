"""A minimal wiring of emulated links for the emulator's own tests and benchmark.

Each link i joins two fresh namespaces x and y (`eth0` in each, 10.<net>.<i>.1 and .2/24)
through the root ends `if_a`, `if_b` that the emulator bridges. Static ARP and no IPv6 keep the
links silent, so the frames offered to the models are exactly the test traffic. Names carry a
per-process tag so concurrent users of the machine never collide.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass, field

from ..topology.model import LinkParams
from .control import EmuLink
from .engine import NODE_SIDE_ETHTOOL

TCP_BUF_MAX = 32 << 20


def sh(*argv: str, check: bool = True) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip()}")
    return res.stdout


@dataclass
class LabLink:
    index: int
    ns_x: str
    ns_y: str
    if_a: str
    if_b: str
    ip_x: str
    ip_y: str
    mac_x: str = ""
    mac_y: str = ""

    def emu_link(self, ab: LinkParams, ba: LinkParams | None = None, mtu: int = 1500) -> EmuLink:
        return EmuLink(self.index, self.if_a, self.if_b, ab, ba if ba is not None else ab, mtu)

    def in_x(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns_x, *argv]

    def in_y(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns_y, *argv]


@dataclass
class Lab:
    """`n` namespace pairs with the emulator's root ends in between (context manager)."""

    n: int = 1
    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000:05d}")
    net: int = 213
    links: list[LabLink] = field(default_factory=list)

    def __enter__(self) -> Lab:
        try:
            for i in range(self.n):
                self._make(i)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _make(self, i: int) -> LabLink:
        base = f"te{self.tag}{i:02d}"  # <= 9 characters + one suffix
        lk = LabLink(i, f"{base}x", f"{base}y", f"{base}a", f"{base}b",
                     f"10.{self.net}.{i}.1", f"10.{self.net}.{i}.2")  # fmt: skip
        self.links.append(lk)  # registered first, so close() removes a half-built link
        for ns, root_if, ip in ((lk.ns_x, lk.if_a, lk.ip_x), (lk.ns_y, lk.if_b, lk.ip_y)):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", root_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            run = ["ip", "netns", "exec", ns]
            sh(*run, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1")  # fmt: skip
            # GSO off means one skb per segment: 4 MiB of send buffer is ~400 Mbit/s at 40 ms
            sh(*run, "sysctl", "-qw", f"net.ipv4.tcp_wmem=4096 16384 {TCP_BUF_MAX}",
               f"net.ipv4.tcp_rmem=4096 131072 {TCP_BUF_MAX}")  # fmt: skip
            sh(*run, "ethtool", "-K", "eth0", *NODE_SIDE_ETHTOOL)
            sh(*run, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            sh(*run, "ip", "link", "set", "lo", "up")
            sh(*run, "ip", "link", "set", "eth0", "up")
        lk.mac_x = _mac(lk.ns_x)
        lk.mac_y = _mac(lk.ns_y)
        sh(*lk.in_x("ip", "neigh", "replace", lk.ip_y, "lladdr", lk.mac_y, "dev", "eth0", "nud", "permanent"))
        sh(*lk.in_y("ip", "neigh", "replace", lk.ip_x, "lladdr", lk.mac_x, "dev", "eth0", "nud", "permanent"))
        return lk

    def close(self) -> None:
        for lk in self.links:
            for ns, root_if in ((lk.ns_x, lk.if_a), (lk.ns_y, lk.if_b)):
                with contextlib.suppress(Exception):
                    sh("ip", "link", "del", root_if, check=False)
                with contextlib.suppress(Exception):
                    sh("ip", "netns", "del", ns, check=False)
        self.links.clear()

    def names(self) -> list[str]:
        return [n for lk in self.links for n in (lk.ns_x, lk.ns_y, lk.if_a, lk.if_b)]


def _mac(ns: str) -> str:
    out = sh("ip", "netns", "exec", ns, "cat", "/sys/class/net/eth0/address")
    return out.strip()


def leftovers(names: list[str]) -> list[str]:
    """Which of these namespaces / root interfaces still exist."""
    netns = set(sh("ip", "netns", "list").split())
    links = {ln.split(":")[1].strip().split("@")[0] for ln in sh("ip", "-o", "link").splitlines()}
    return [n for n in names if n in netns or n in links]
