"""Measurements with real tools (ping, iperf3) between nodes of a running Network.

Used by the fidelity check (testbed check) and the network tests: what a link really does is
measured from the outside, never read back from the configuration.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import TestbedError

if TYPE_CHECKING:
    from .net import Network

ETH_HEADER = 14
TCP_IP_HEADERS = 52  # IPv4 20 + TCP 20 + timestamps 12
_RTT_RE = re.compile(r"icmp_seq=(\d+) .*time=([\d.]+) ms")
_IPERF_PORT = 5201


def ping_rtts(net: Network, src: str, dst: str, count: int, interval: float = 0.01,
              size: int = 56, timeout_s: float = 2.0) -> list[float | None]:
    """RTT (ms) of each of `count` echo requests from src to dst's address; None when lost."""
    wait = max(1, int(timeout_s))
    cmd = f"ping -n -c {count} -i {interval} -s {size} -W {wait} {net.ip(dst)}"
    out = net.node_run(src, cmd, check=False, timeout=count * interval + timeout_s + 30)
    rtts: list[float | None] = [None] * count
    for seq, ms in _RTT_RE.findall(out.stdout):
        if 1 <= int(seq) <= count:
            rtts[int(seq) - 1] = float(ms)
    return rtts


def tcp_wire_rate(goodput_mbps: float, mtu: int) -> float:
    """L2 rate (what link shapers count: Ethernet header + IP packet) of full-sized TCP segments."""
    return goodput_mbps * (mtu + ETH_HEADER) / (mtu - TCP_IP_HEADERS)


@dataclass
class IperfResult:
    mbps: float  # receiver goodput
    seconds: float
    packets: int | None = None  # UDP only
    lost: int | None = None
    retransmits: int | None = None


def iperf3(net: Network, src: str, dst: str, seconds: float = 3.0, udp_mbps: float | None = None,
           length: int | None = None, omit_s: int = 1, port: int = _IPERF_PORT) -> IperfResult:
    """One iperf3 run from src (client, sender) to dst (server); TCP unless udp_mbps is given."""
    server = net.node_popen(dst, f"exec iperf3 -s -1 -p {port}")
    try:
        args = f"-c {net.ip(dst)} -p {port} -t {seconds} -O {omit_s} -J"
        if udp_mbps is not None:
            args += f" -u -b {udp_mbps}M"
        if length:
            args += f" -l {length}"
        data = _client(net, src, args, seconds + omit_s)
    finally:
        server.kill()
        server.wait()
    end = data["end"]
    if udp_mbps is not None:
        s = end["sum"]
        return IperfResult(s["bits_per_second"] * (1 - s["lost_percent"] / 100) / 1e6,
                           s["seconds"], s["packets"], s["lost_packets"])  # fmt: skip
    received = end["sum_received"]
    return IperfResult(received["bits_per_second"] / 1e6, received["seconds"],
                       retransmits=end["sum_sent"].get("retransmits"))  # fmt: skip


def _client(net: Network, src: str, args: str, duration: float) -> dict:
    for _attempt in range(20):  # until the server listens
        out = net.node_run(src, f"iperf3 {args}", check=False, timeout=duration + 30)
        try:
            data = json.loads(out.stdout)
        except ValueError:
            data = {"error": (out.stderr or out.stdout).strip()}
        error = data.get("error", "")
        if "refused" in error:
            time.sleep(0.1)
            continue
        if error:
            raise TestbedError(f"iperf3 {src}: {error}")
        return data
    raise TestbedError(f"iperf3 {src}: server did not come up")


def _cpu_jiffies() -> list[int]:
    """The "cpu" line of /proc/stat: user nice system idle iowait irq softirq steal ..."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def machine_cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat: the difference of two readings
    says how busy the whole machine was in between."""
    v = _cpu_jiffies()
    return sum(v) - v[3] - v[4], sum(v)  # idle and iowait are not busy


def steal_jiffies() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs so far: time the hypervisor gave our virtual CPUs'
    host threads to something else while they had work. No guest priority helps against it:
    a real-time emulator is as late as the steal bursts are long."""
    v = _cpu_jiffies()
    return (v[7] if len(v) > 7 else 0), sum(v)
