"""The shell command through a pipe, leftovers of killed runs (testbed clean), and signals."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from nethelpers import leftovers, nothing_left, pair_plan

from testbed.network import Network
from testbed.network.cleanup import clean
from testbed.network.measure import ping_rtts
from testbed.network.state import STATE_DIR, NetRecord

pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parents[2]
TESTBED = ROOT / ".venv" / "bin" / "testbed"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

# A child that builds a network, reports its netid, and waits to be signalled or killed.
CHILD = textwrap.dedent("""
    import sys, time
    import testbed.network.net as netmod
    from testbed.network import Network
    from testbed.topology.plan import build_plan
    from testbed.topology.spec import load_topology

    claim = netmod.claim_netid
    def announce(*args):
        record = claim(*args)
        print(record.netid, flush=True)
        return record
    netmod.claim_netid = announce
    with Network(build_plan(load_topology(sys.argv[1])), backend="userspace") as net:
        net.node(net.plan.spec.endpoints()[0]).popen("sleep 600")  # outlives its shell
        print("up", flush=True)
        time.sleep(600)
""")


def child(topology: str = "pair") -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, topology], stdout=subprocess.PIPE, text=True,
                            env=ENV, cwd=ROOT)  # fmt: skip
    return proc, proc.stdout.readline().strip()


def record_netns(netid: str) -> set[int]:
    record = NetRecord.load(STATE_DIR / f"{netid}.json")
    return record.netns_inodes() if record else set()


def test_shell_runs_piped_commands_and_leaves_nothing(tmp_path):
    spec = tmp_path / "dash.yaml"
    spec.write_text("name: dash\nnodes: {zjk-ct: {kind: hub}, h2: {kind: host}}\n"
                    "links: [{a: zjk-ct, b: h2, delay_ms: 5}]\n")
    before = set(os.listdir(STATE_DIR)) if STATE_DIR.exists() else set()
    out = subprocess.run([str(TESTBED), "shell", str(spec), "--set", "zjk-ct-h2.delay_ms=10"],
                         input="zjk-ct ping -c 2 h2\nh2 ping -c 1 zjk-ct\n", capture_output=True,
                         text=True, timeout=120, env=ENV)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("2 received") == 1 and "1 received" in out.stdout, out.stdout
    times = [float(t) for t in __import__("re").findall(r"time=([\d.]+) ms", out.stdout)]
    assert times and all(t >= 19.4 for t in times), times  # 2 x 10 ms, the --set value
    netid = out.stderr.split("netid ")[1].split()[0]
    assert nothing_left(netid)
    assert f"{netid}.json" not in set(os.listdir(STATE_DIR)) - before  # others may run networks meanwhile


def test_shell_pair_builtin():
    out = subprocess.run([str(TESTBED), "shell", "pair"], input="h1 ping -c 3 h2\n", capture_output=True,
                         text=True, timeout=120, env=ENV)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "3 packets transmitted" in out.stdout


def test_clean_removes_a_killed_run_but_not_a_live_network():
    with Network(pair_plan(delay_ms=1), backend="userspace") as live:
        proc, netid = child()
        assert proc.stdout.readline().strip() == "up"
        netns = record_netns(netid)
        proc.kill()
        proc.wait()
        time.sleep(0.3)
        left = leftovers(netid, netns)
        assert left["in_namespaces"] and left["record"]  # the node's `sleep` keeps a namespace
        removed = clean()
        assert netid in removed.networks and removed.processes
        assert live.netid not in removed.networks
        assert nothing_left(netid, netns)
        # the live network is untouched
        assert not any(i.startswith(f"tb{live.netid}") for i in removed.interfaces)
        assert all(r is not None for r in ping_rtts(live, "h1", "h2", 3, 0.05))
        assert (STATE_DIR / f"{live.netid}.json").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_run_stops_the_network(sig):
    proc, netid = child()
    assert proc.stdout.readline().strip() == "up"
    netns = record_netns(netid)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) != 0
    assert nothing_left(netid, netns), leftovers(netid, netns)


def test_interrupt_during_start_leaves_nothing():
    proc, netid = child("hubs")  # ~70 nodes: takes seconds to start
    time.sleep(1.0)
    netns = record_netns(netid)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) != 0
    assert nothing_left(netid, netns | record_netns(netid)), leftovers(netid, netns)
