"""Naive aioquic baseline over loopback (also the real-stack test of BBR): driver argv, real processes."""
from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration

from protocols import registry
from protocols.base import TransferStats
from protocols.common import LocalServer, free_port
from protocols.naive_quic import ALPN
from protocols.qtp import messages as m

SIZE = 3_000_000  # aioquic is slow (tens of Mbit/s on a busy 2-core machine)


def server(cc: str, tmp: Path) -> tuple[LocalServer, int]:
    port = free_port(socket.SOCK_DGRAM)
    argv = registry.get("aioquic").server_argv(port, cc=cc, workdir=str(tmp), options={})
    return LocalServer(argv, str(tmp / f"server-{port}.log")), port


def transfer(cc: str, tmp: Path, port: int, size: int = SIZE) -> tuple[int, TransferStats]:
    stats_path = tmp / f"stats-{cc}-{time.monotonic_ns()}.json"
    argv = registry.get("aioquic").client_argv("127.0.0.1", port, size=size, seed=11, cc=cc,
                                               stats_path=str(stats_path), workdir=str(tmp), options={})
    rc = subprocess.run(argv, timeout=180).returncode
    return rc, TransferStats.read(stats_path)


@pytest.mark.parametrize("cc", ["reno", "cubic", "bbr"])
def test_naive_quic_transfer(cc: str, tmp_path: Path) -> None:
    srv, port = server(cc, tmp_path)
    with srv:
        rc, st = transfer(cc, tmp_path, port)
    assert rc == 0, st.error
    assert st.ok and st.bytes == SIZE and st.protocol == "aioquic" and st.cc == cc
    assert st.goodput_mbps == pytest.approx(SIZE * 8 / st.duration_s / 1e6, rel=1e-6)
    assert st.start < st.first_byte <= st.end
    assert sum(n for _, n in st.intervals) == SIZE
    assert st.rtt_min_ms is not None and 0 < st.rtt_min_ms <= st.rtt_smoothed_ms < 1000
    assert st.cwnd_bytes > 0
    # default 1200-byte datagrams: at least one packet per 1200 payload bytes, all counted
    assert st.packets_sent >= SIZE / 1200
    assert st.bytes_sent > SIZE
    assert st.packets_lost is not None and st.packets_lost >= 0
    assert st.extra["max_datagram_size"] == 1200
    assert st.cpu_s_client > 0 and st.cpu_s_server > 0
    if cc == "bbr":
        bbr = st.extra["bbr"]
        assert bbr["btl_bw_mbps"] > 0 and bbr["min_rtt_ms"] > 0
        assert bbr["bbr_state"] in ("startup", "drain", "probe_bw", "probe_rtt")


def test_bad_cc_rejected() -> None:
    driver = registry.get("aioquic")
    assert driver.check_cc(None) == "reno"
    with pytest.raises(ValueError, match=r"allowed: reno, cubic, bbr"):
        driver.server_argv(1, cc="vegas", workdir=".", options={})
    argv = driver.client_argv("127.0.0.1", 1, size=1, seed=0, cc="reno", stats_path="x", workdir=".",
                              options={})
    argv = [*argv[:-4], "--cc", "vegas", "--json", "x"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "invalid choice: 'vegas'" in proc.stderr


async def send_garbage_on_stream(port: int) -> bytes:
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE)
    async with connect("127.0.0.1", port, configuration=config) as client:
        reader, writer = await client.create_stream()
        writer.write(b"\xff" * 100)
        return await asyncio.wait_for(reader.read(), 10)


def test_server_survives_garbage_and_disconnects(tmp_path: Path) -> None:
    srv, port = server("reno", tmp_path)
    with srv:
        # garbage datagrams (not QUIC) are dropped
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(50):
                s.sendto(b"\x00garbage" * 100, ("127.0.0.1", port))
        # garbage on a stream: an ERROR frame back, then the stream ends
        reply = asyncio.run(send_garbage_on_stream(port))
        assert reply[:1] == bytes([m.ERROR])
        # a client that vanishes mid-transfer
        client = subprocess.Popen(registry.get("aioquic").client_argv(
            "127.0.0.1", port, size=10**12, seed=1, cc="reno", stats_path=str(tmp_path / "killed.json"),
            workdir=str(tmp_path), options={}))
        time.sleep(2.0)
        client.kill()
        client.wait()
        assert srv.alive()
        rc, st = transfer("reno", tmp_path, port, size=500_000)
        assert rc == 0 and st.ok and st.bytes == 500_000
        assert "BAD_REQUEST" in srv.log()


def test_client_without_server_fails_with_stats(tmp_path: Path) -> None:
    """No server: aioquic waits for the handshake until its idle timeout, the stats say so."""
    stats_path = tmp_path / "s.json"
    argv = registry.get("aioquic").client_argv("127.0.0.1", free_port(socket.SOCK_DGRAM), size=1000, seed=0,
                                               cc="reno", stats_path=str(stats_path), workdir=str(tmp_path),
                                               options={})
    rc = subprocess.run([*argv, "--timeout", "3"], timeout=120).returncode
    st = TransferStats.read(stats_path)
    assert rc == 1 and not st.ok and st.error
