"""The transmit ring against a receiver that cannot keep up (real veth, real NAPI thread).

A veth end in NAPI mode takes at most 256 frames until its NAPI thread drains them and refuses
the rest with ENOBUFS. Such frames must wait in the ring and go out later: never be lost, and
never be taken for a dead interface. The sender here runs at a higher real-time priority on the
CPU of the receiver's NAPI threads, so the receiver cannot drain during a flush.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from testbed.emulator.engine import prepare_interfaces
from testbed.emulator.lab import Lab, sh

pytestmark = pytest.mark.network

FRAMES = 800

SENDER = textwrap.dedent("""
    import json, sys, time
    from scapy.all import IP, UDP, Ether
    from testbed.emulator.engine import _TxRing
    ifname, src, dst, ip_dst, n = sys.argv[1:6]
    frame = bytes(Ether(src=src, dst=dst) / IP(dst=ip_dst) / UDP(dport=9) / (b"x" * 1000))
    ring = _TxRing(ifname, 1514)
    assert all(ring.put(frame) for _ in range(int(n)))
    first = ring.flush()
    out = {"first_ok": first, "first_waiting": ring.waiting, "broken": ring.broken, "busy": ring.busy}
    flushes = 1
    while ring.waiting and flushes < 1000:
        time.sleep(0.002)  # lets the receiver's NAPI thread run
        ok = ring.flush()
        out["broken"] = out["broken"] or not ok
        flushes += 1
    out.update(flushes=flushes, busy=ring.busy, waiting=ring.waiting)
    print(json.dumps(out))
""")


def napi_threads() -> set[int]:
    return {int(p) for p in sh("pgrep", "^napi/", check=False).split()}


def rx_packets(ns: str) -> int:
    (link,) = json.loads(sh("ip", "-n", ns, "-s", "-j", "link", "show", "eth0"))
    return link["stats64"]["rx"]["packets"]


def test_frames_a_full_receiver_refuses_wait_in_the_ring_and_arrive() -> None:
    before = napi_threads()
    with Lab(1, net=223) as lab:
        lk = lab.links[0]
        prepare_interfaces([lk.if_a, lk.if_b])  # as the emulator does: no TSO, so the far end uses NAPI
        ours = napi_threads() - before
        assert ours, "the lab's node sides have no NAPI threads (threaded NAPI missing?)"
        for pid in ours:
            sh("taskset", "-p", "-c", "0", str(pid))
        rx0 = rx_packets(lk.ns_y)
        res = subprocess.run(
            ["taskset", "-c", "0", "chrt", "-f", "10", sys.executable, "-c", SENDER,
             lk.if_b, lk.mac_x, lk.mac_y, lk.ip_y, str(FRAMES)],
            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        delivered = rx_packets(lk.ns_y) - rx0
    assert out["first_ok"] and not out["broken"], out  # a full receiver is not a dead interface
    assert out["busy"] >= 1 and out["first_waiting"], out  # the receiver did refuse frames
    assert not out["waiting"], out
    assert delivered == FRAMES, f"{FRAMES - delivered} of {FRAMES} frames lost ({out})"
