"""Kernel TCP and TCP+TLS baselines over loopback: real processes started from driver argv."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from protocols import registry
from protocols.base import TransferStats
from protocols.common import LocalServer, free_port
from protocols.qtp import messages as m
from protocols.tcp import parse_tcp_info

SIZE = 20_000_000


def available_ccs() -> set[str]:
    """What this process may set with TCP_CONGESTION (any available one as root)."""
    key = "available" if os.geteuid() == 0 else "allowed"
    return set(Path(f"/proc/sys/net/ipv4/tcp_{key}_congestion_control").read_text().split())


def transfer(name: str, cc: str | None, tmp: Path, port: int, size: int = SIZE, seed: int = 7,
             options: dict | None = None) -> tuple[int, TransferStats]:
    driver = registry.get(name)
    stats_path = tmp / f"stats-{name}-{cc}-{time.monotonic_ns()}.json"
    argv = driver.client_argv("127.0.0.1", port, size=size, seed=seed, cc=cc, stats_path=str(stats_path),
                              workdir=str(tmp), options=options or {})
    rc = subprocess.run(argv, timeout=120).returncode
    return rc, TransferStats.read(stats_path)


def server(name: str, cc: str | None, tmp: Path) -> tuple[LocalServer, int]:
    port = free_port()
    argv = registry.get(name).server_argv(port, cc=cc, workdir=str(tmp), options={})
    return LocalServer(argv, str(tmp / f"server-{name}-{port}.log")), port


def check_plausible(st: TransferStats, size: int) -> None:
    assert st.ok, st.error
    assert st.bytes == size
    assert st.goodput_mbps > 0
    assert st.duration_s == pytest.approx(st.end - st.start, abs=1e-6)
    assert st.goodput_mbps == pytest.approx(size * 8 / st.duration_s / 1e6, rel=1e-6)
    assert st.start < st.first_byte <= st.end
    assert sum(n for _, n in st.intervals) == size
    assert all(b[0] >= 0 for b in st.intervals)
    assert st.cpu_s_client is not None and st.cpu_s_client > 0
    assert st.cpu_s_server is not None and st.cpu_s_server > 0


@pytest.mark.parametrize("cc", ["cubic", "bbr", "reno"])
def test_tcp_loopback_transfer(cc: str, tmp_path: Path) -> None:
    if cc not in available_ccs():
        pytest.skip(f"kernel has no {cc}")
    srv, port = server("tcp", cc, tmp_path)
    with srv:
        rc, st = transfer("tcp", cc, tmp_path, port)
    assert rc == 0
    check_plausible(st, SIZE)
    assert st.protocol == "tcp" and st.cc == cc
    info = st.extra["tcp_info"]
    assert info["state"] == 1  # TCP_ESTABLISHED: the offsets of struct tcp_info are right
    assert info["snd_mss"] > 500 and info["pmtu"] >= 1500
    assert st.rtt_smoothed_ms is not None and 0 < st.rtt_smoothed_ms < 1000
    assert st.rtt_min_ms is not None and 0 < st.rtt_min_ms <= st.rtt_smoothed_ms
    assert st.cwnd_bytes is not None and st.cwnd_bytes > 0
    assert st.bytes_sent is not None and st.bytes_sent >= SIZE
    assert st.packets_sent is not None and st.packets_sent >= SIZE // 65536


def test_tls_transfer(tmp_path: Path) -> None:
    srv, port = server("tcp-tls", "cubic", tmp_path)
    with srv:
        rc, st = transfer("tcp-tls", "cubic", tmp_path, port)
    assert rc == 0
    check_plausible(st, SIZE)
    assert st.protocol == "tcp-tls"
    assert st.extra["tls"]["version"] == "TLSv1.3"
    # TLS records add ~22 bytes per 16 KiB: more bytes on the wire than payload
    assert st.bytes_sent > SIZE * 1.001
    assert (tmp_path / "server-cert.pem").is_file()


def test_bad_cc_rejected(tmp_path: Path) -> None:
    driver = registry.get("tcp")
    assert driver.check_cc(None) == "cubic"
    with pytest.raises(ValueError, match=r"no congestion control 'vegas' \(allowed: cubic, bbr, reno\)"):
        driver.client_argv("127.0.0.1", 1, size=1, seed=0, cc="vegas", stats_path="x", workdir=".",
                           options={})
    with pytest.raises(ValueError, match="no option"):
        driver.server_argv(1, cc="cubic", workdir=".", options={"bufer": 1})
    proc = subprocess.run([*driver.server_argv(1, cc=None, workdir=".", options={})[:-2], "--cc", "vegas"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "invalid choice: 'vegas'" in proc.stderr


def test_client_without_server_fails_with_stats(tmp_path: Path) -> None:
    rc, st = transfer("tcp", "cubic", tmp_path, free_port())
    assert rc == 1
    assert not st.ok and "Connection refused" in st.error
    assert st.bytes == 0


def test_server_survives_garbage_and_disconnects(tmp_path: Path) -> None:
    srv, port = server("tcp", "cubic", tmp_path)
    with srv:
        # garbage: the server answers with an ERROR frame and closes that connection only
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 10)
            reply = b"".join(iter(lambda: s.recv(4096), b""))
        assert reply[:1] == bytes([m.ERROR])
        # a client that vanishes mid-transfer
        client = subprocess.Popen(registry.get("tcp").client_argv(
            "127.0.0.1", port, size=10**12, seed=1, cc="cubic", stats_path=str(tmp_path / "killed.json"),
            workdir=str(tmp_path), options={}))
        time.sleep(1.5)
        client.kill()
        client.wait()
        # a request, then a half-written chunk, then close
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(m.encode(m.Request(op="sink", size=10**6, seed=1, chunk_size=1 << 20)))
            s.sendall(m.encode_chunk_header(0, 0, 10**6, None) + b"\0" * 1000)
        assert srv.alive()
        rc, st = transfer("tcp", "cubic", tmp_path, port, size=1_000_000)
        assert rc == 0 and st.ok and st.bytes == 1_000_000
        log = srv.log()
        assert "BAD_REQUEST" in log and "INTEGRITY" in log  # garbage and wrong payload were reported


def test_tls_server_survives_plaintext_client(tmp_path: Path) -> None:
    srv, port = server("tcp-tls", "cubic", tmp_path)
    with srv:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"\x16\x03\x01garbage that is not a TLS ClientHello" * 4)
            try:
                s.recv(4096)  # a TLS alert, or the connection is reset
            except OSError:
                pass
        rc, st = transfer("tcp-tls", "cubic", tmp_path, port, size=1_000_000)
        assert rc == 0 and st.ok
        assert srv.alive()


def test_parse_tcp_info_short_struct() -> None:
    """Fields beyond what an older kernel returns are absent, not garbage."""
    raw = bytes(104)
    info = parse_tcp_info(raw)
    assert "rtt_us" in info and "total_retrans" in info
    assert "min_rtt_us" not in info and "bytes_sent" not in info
