"""A minimal wiring of emulated links for the emulator's own tests and benchmark.

Each link i joins two fresh namespaces x and y (`eth0` in each, 10.<net>.<i>.1 and .2/24)
through the root ends `if_a`, `if_b` that the emulator bridges. Static ARP and no IPv6 keep the
links silent, so the frames offered to the models are exactly the test traffic. Names carry a
per-process tag so concurrent users of the machine never collide.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..topology.model import LinkParams
from .control import EmuLink, child_env
from .engine import NODE_SIDE_ETHTOOL, threaded_napi_script

SINK_MAC = "02:00:00:00:00:01"  # locally administered, owned by no lab interface


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

    def ping_rtts(self, count: int = 20, interval: float = 0.05) -> list[float]:
        """RTTs (ms) of x -> y pings; lost ones are missing."""
        out = sh(*self.in_x("ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1", self.ip_y),
                 check=False)  # fmt: skip
        return [float(m) for m in re.findall(r"time=([\d.]+) ms", out)]

    def iperf_tcp(self, seconds: float = 3, omit: int = 1, reverse: bool = False, port: int = 5201) -> dict:
        """iperf3 TCP x -> y (or y -> x): the receiver's goodput in Mbit/s and retransmits."""
        srv = subprocess.Popen(self.in_y("iperf3", "-s", "-1", "-p", str(port)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            argv = ["iperf3", "-c", self.ip_y, "-p", str(port), "-t", str(seconds), "-O", str(omit), "-J"]
            for _ in range(50):  # the server needs a moment to listen
                res = subprocess.run(self.in_x(*argv, *(["-R"] if reverse else [])),
                                     capture_output=True, text=True, timeout=seconds + 30)  # fmt: skip
                data = json.loads(res.stdout or "{}")
                if "error" not in data or "connect" not in data["error"]:
                    break
                time.sleep(0.1)
            if "error" in data:
                raise RuntimeError(f"iperf3: {data['error']}")
            end = data["end"]
            return {"mbps": end["sum_received"]["bits_per_second"] / 1e6,
                    "retransmits": end["sum_sent"].get("retransmits", 0)}  # fmt: skip
        finally:
            srv.kill()
            srv.wait()

    def flood(self, frame_len: int, seconds: float, senders: int = 2) -> dict:
        """Raw frames x -> y from `senders` Python processes: {"sent", "duration_s"}.

        The frames carry a destination MAC that y does not own, so y's stack drops them at
        once: the cost measured is the emulator's, not y's (a UDP port-unreachable reply
        path costs more than the forwarding itself).
        """
        tool = [sys.executable, "-m", "testbed.emulator.udptool", "flood", "--dst-mac", SINK_MAC,
                "--src-ip", self.ip_x, "--dst-ip", self.ip_y, "--frame-len", str(frame_len),
                "--seconds", str(seconds)]  # fmt: skip
        env = child_env()
        procs = [subprocess.Popen(self.in_x(*tool), stdout=subprocess.PIPE, text=True, env=env)
                 for _ in range(senders)]  # fmt: skip
        outs = [json.loads(p.communicate(timeout=seconds + 60)[0]) for p in procs]
        return {"sent": sum(o["sent"] for o in outs), "duration_s": max(o["duration_s"] for o in outs)}

    def udp(self, count: int, size: int = 100, pps: float = 0, port: int = 5999, idle: float = 1.0,
            timeout: float = 30.0) -> dict:  # fmt: skip
        """Send `count` numbered datagrams x -> y; the receiver's JSON (seqs, owd_ms, arrival_s)."""
        tool = [sys.executable, "-m", "testbed.emulator.udptool"]
        env = child_env()
        with tempfile.TemporaryDirectory() as tmp:
            ready = Path(tmp) / "ready"
            rx = subprocess.Popen(self.in_y(*tool, "recv", "--port", str(port), "--count", str(count),
                                            "--idle", str(idle), "--timeout", str(timeout),
                                            "--ready-file", str(ready)),
                                  stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
            try:
                deadline = time.monotonic() + 10
                while not ready.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
                tx = subprocess.run(self.in_x(*tool, "send", "--dst", self.ip_y, "--port", str(port),
                                              "--count", str(count), "--size", str(size), "--pps", str(pps)),
                                    capture_output=True, text=True, env=env, check=True)  # fmt: skip
                out, _ = rx.communicate(timeout=60)
            finally:
                if rx.poll() is None:
                    rx.kill()
                    rx.wait()
        result = json.loads(out)
        sent = json.loads(tx.stdout)
        tx_ns = {int(k): v for k, v in sent.pop("tx_ns", {}).items()}
        result["sent"] = sent
        # one-way delay between the kernel's transmit stamp (x's veth) and receive stamp (y):
        # without the probe processes' own scheduling delays
        pairs = zip(result["seqs"], result["rx_ns"], strict=True)
        result["kernel_owd_ms"] = [(rx - tx_ns[q]) / 1e6 for q, rx in pairs if q in tx_ns]
        return result


_instances = itertools.count()


def _unique_tag() -> str:
    return f"{os.getpid() % 100000:05d}{next(_instances) % 100:02d}"


@dataclass
class Lab:
    """`n` namespace pairs with the emulator's root ends in between (context manager)."""

    n: int = 1
    tag: str = field(default_factory=_unique_tag)
    net: int = 213
    links: list[LabLink] = field(default_factory=list)
    created: list[tuple[str, str]] = field(default_factory=list)  # ("netns" | "link", name)

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
        for ns, root_if, ip in ((lk.ns_x, lk.if_a, lk.ip_x), (lk.ns_y, lk.if_b, lk.ip_y)):
            sh("ip", "netns", "add", ns)
            self.created.append(("netns", ns))  # only what we made is ever removed
            sh("ip", "link", "add", root_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self.created.append(("link", root_if))
            run = ["ip", "netns", "exec", ns]
            sh(*run, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1")  # fmt: skip
            sh(*run, "ethtool", "-K", "eth0", *NODE_SIDE_ETHTOOL)
            sh(*run, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            sh(*run, "ip", "link", "set", "lo", "up")
            sh(*run, "ip", "link", "set", "eth0", "up")
            # NAPI exists once both ends are up: the root end without IPv6, so it stays silent
            Path(f"/proc/sys/net/ipv6/conf/{root_if}/disable_ipv6").write_text("1\n")
            sh("ip", "link", "set", root_if, "up")
            sh(*run, "sh", "-c", threaded_napi_script("/sys/class/net/eth0"))  # node_side_threaded_argv
        lk.mac_x = _mac(lk.ns_x)
        lk.mac_y = _mac(lk.ns_y)
        sh(*lk.in_x("ip", "neigh", "replace", lk.ip_y, "lladdr", lk.mac_y, "dev", "eth0", "nud", "permanent"))
        sh(*lk.in_y("ip", "neigh", "replace", lk.ip_x, "lladdr", lk.mac_x, "dev", "eth0", "nud", "permanent"))
        self.links.append(lk)
        return lk

    def close(self) -> None:
        for kind, name in reversed(self.created):
            with contextlib.suppress(Exception):
                sh("ip", kind, "del", name, check=False)
        self.created.clear()
        self.links.clear()

    def names(self) -> list[str]:
        return [name for _kind, name in self.created]


def _mac(ns: str) -> str:
    out = sh("ip", "netns", "exec", ns, "cat", "/sys/class/net/eth0/address")
    return out.strip()


def leftovers(names: list[str]) -> list[str]:
    """Which of these namespaces / root interfaces still exist."""
    netns = set(sh("ip", "netns", "list").split())
    links = {ln.split(":")[1].strip().split("@")[0] for ln in sh("ip", "-o", "link").splitlines()}
    return [n for n in names if n in netns or n in links]
