"""qtp over real sockets between real processes on loopback: get/put of files and
directories, generated payloads, corruption and refetch, resume after SIGKILL, striping,
congestion controls, exit codes, the experiment driver."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from qtp_support import QTP, REPO, Server, run, stats_of, tree

from protocols import payload
from protocols.qtp.transfer import ResumeRecord


def make_root(root: Path) -> dict[str, bytes]:
    rnd = os.urandom
    files = {
        "big.bin": rnd(6 * 2**20 + 12345),
        "small.txt": b"hello qtp\n",
        "empty": b"",
        "tree/a.bin": rnd(300_000),
        "tree/sub/b.bin": rnd(2**20),
        "tree/sub/deeper/c.txt": b"c" * 5000,
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "tree" / "emptydir").mkdir()
    return files


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("qtp")
    root = base / "root"
    root.mkdir()
    files = make_root(root)
    outside = base / "outside-secret.txt"
    outside.write_text("secret")
    (root / "escape").symlink_to(outside)
    (root / "tree" / "escape-dir").symlink_to(base)
    (root / "tree" / "inner-link").symlink_to(root / "small.txt")
    with Server(base / "srv", root) as srv:
        yield srv, root, files, base


def test_get_file_byte_exact_with_stats(served, tmp_path):
    srv, _root, files, _ = served
    out = tmp_path / "big.bin"
    js = tmp_path / "s.json"
    r = run(["get", srv.target, "big.bin", "-o", out, "--json", js, *srv.client_args()])
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == files["big.bin"]
    assert not Path(str(out) + ".qtp-part").exists() and not Path(str(out) + ".qtp-state").exists()
    st = stats_of(js)
    assert st["ok"] and st["bytes"] == len(files["big.bin"]) and st["protocol"] == "qtp"
    assert sum(n for _, n in st["intervals"]) == st["bytes"]
    assert st["start"] <= st["first_byte"] <= st["end"] and st["goodput_mbps"] > 0
    assert st["cpu_s_client"] > 0 and st["rtt_min_ms"] >= 0
    assert st["extra"]["max_datagram_size"] >= 1200


def test_get_directory_byte_exact(served, tmp_path):
    srv, _root, files, _ = served
    r = run(["get", srv.target, "tree", "-o", tmp_path / "t", *srv.client_args()])
    assert r.returncode == 0, r.stderr
    got = tree(tmp_path / "t")
    want = {k[len("tree/") :]: v for k, v in files.items() if k.startswith("tree/")}
    want.update({"sub": None, "sub/deeper": None, "emptydir": None, "inner-link": files["small.txt"]})
    assert got == want  # the symlinked directory leaving the root is not listed


def test_put_file_and_directory_byte_exact(served, tmp_path):
    srv, root, _files, _ = served
    src = tmp_path / "up"
    src.mkdir()
    (src / "x").mkdir()
    (src / "x" / "one.bin").write_bytes(os.urandom(1_500_000))
    (src / "two.txt").write_bytes(b"two")
    (src / "zero").write_bytes(b"")
    (src / "emptydir").mkdir()
    r = run(["put", src, srv.target, "uploads/dir", *srv.client_args()])
    assert r.returncode == 0, r.stderr
    assert tree(root / "uploads" / "dir") == tree(src)
    single = tmp_path / "single.bin"
    single.write_bytes(os.urandom(3_000_000))
    r = run(
        ["put", single, srv.target, "uploads/single.bin", "--json", tmp_path / "p.json", *srv.client_args()]
    )
    assert r.returncode == 0, r.stderr
    assert (root / "uploads" / "single.bin").read_bytes() == single.read_bytes()
    assert stats_of(tmp_path / "p.json")["bytes"] == 3_000_000
    assert not list((root / "uploads").rglob("*.qtp-*"))


def test_generated_payloads(served, tmp_path):
    srv, root, _, _ = served
    r = run(["put", "gen:3M:11", srv.target, "uploads/gen.bin", *srv.client_args()])
    assert r.returncode == 0, r.stderr
    assert (root / "uploads" / "gen.bin").read_bytes() == payload.generate(11, 0, 3_000_000)
    js = tmp_path / "g.json"
    r = run(["get", srv.target, "gen:4M:5", "--json", js, *srv.client_args()])
    assert r.returncode == 0, r.stderr
    assert stats_of(js)["bytes"] == 4_000_000


def test_send_to_sink_reports_receiver_timing(served, tmp_path):
    srv, *_ = served
    js = tmp_path / "send.json"
    r = run(["send", srv.target, "--size", "5M", "--seed", "3", "--json", js, *srv.client_args()])
    assert r.returncode == 0, r.stderr
    st = stats_of(js)
    assert st["ok"] and st["bytes"] == 5_000_000
    assert st["first_byte"] >= st["start"] and st["end"] >= st["first_byte"]
    assert abs(st["duration_s"] - (st["end"] - st["start"])) < 1e-3
    assert sum(n for _, n in st["intervals"]) == 5_000_000
    assert all(abs(t * 10 - round(t * 10)) < 1e-6 for t, _ in st["intervals"])  # 100 ms bins
    assert st["cpu_s_server"] is not None and st["packets_sent"] > 5_000_000 // 65536
    assert st["bytes_sent"] >= 5_000_000 and st["rtt_smoothed_ms"] is not None


def test_ls(served):
    srv, *_ = served
    r = run(["ls", srv.target, "tree", "--json", "-", *srv.client_args()])
    assert r.returncode == 0, r.stderr
    names = {e[0] for e in json.loads(r.stdout)}
    assert {"a.bin", "sub", "sub/b.bin", "inner-link", "emptydir"} <= names
    assert "escape-dir" not in names


def test_corrupted_chunks_are_detected_and_refetched(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(5 * 2**20)
    (root / "f.bin").write_bytes(data)
    with Server(tmp_path / "srv", root, env={"QTP_TEST_CORRUPT_CHUNKS": "1,3"}) as srv:
        js = tmp_path / "g.json"
        r = run(["get", srv.target, "f.bin", "-o", tmp_path / "f.bin", "--json", js, *srv.client_args()])
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "f.bin").read_bytes() == data
        assert stats_of(js)["extra"]["bad_chunks"] == 2
        # uploads and sends: the client damages chunks once, the server asks for them again
        up = tmp_path / "up.bin"
        up.write_bytes(data)
        env = {"QTP_TEST_CORRUPT_CHUNKS": "2"}
        r = run(["put", up, srv.target, "up.bin", *srv.client_args()], env=env)
        assert r.returncode == 0, r.stderr
        assert (root / "up.bin").read_bytes() == data
        r = run(["send", srv.target, "--size", "4M", "--json", js, *srv.client_args()], env=env)
        assert r.returncode == 0, r.stderr
        st = stats_of(js)
        assert st["bytes"] == 4_000_000 and st["extra"]["rounds"] == 2


def test_resume_after_sigkill_fetches_only_the_rest(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(6 * 2**20)
    (root / "f.bin").write_bytes(data)
    out = tmp_path / "f.bin"
    state = Path(str(out) + ".qtp-state")
    env = {"QTP_TEST_THROTTLE_BPS": str(2 * 2**20)}  # 2 MiB/s: ~3 s for the file
    with Server(tmp_path / "srv", root, env=env) as srv:
        cargs = srv.client_args(tmp_path / "cstate")
        argv = [*QTP, "get", srv.target, "f.bin", "-o", str(out), "--chunk-size", "256Ki", *cargs]
        p = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        verified = 0
        while verified < 6 and time.monotonic() < deadline:
            rec = ResumeRecord.load(state)
            verified = sum(b - a for a, b in rec.verified) if rec else 0
            time.sleep(0.05)
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGKILL)
        p.wait()
        rec = ResumeRecord.load(state)
        have = sum(b - a for a, b in rec.verified) * 256 * 1024
        assert 0 < have < len(data)
        assert Path(str(out) + ".qtp-part").stat().st_size == len(data) and not out.exists()
        js = tmp_path / "resume.json"
        r = run(["get", srv.target, "f.bin", "-o", out, "--chunk-size", "256Ki", "--json", js, *cargs])
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == data and not state.exists()
        st = stats_of(js)
        assert st["extra"]["resumed_bytes"] >= have
        assert st["bytes"] == len(data) - st["extra"]["resumed_bytes"]  # only the rest came over the wire
        assert st["extra"]["session_resumed"] == [True]  # new connection, TLS session resumed


def test_interrupted_upload_resumes_on_the_server(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(6 * 2**20)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    state = root / "up.bin.qtp-state"
    with Server(tmp_path / "srv", root) as srv:
        cargs = srv.client_args(tmp_path / "cstate")
        argv = [*QTP, "put", str(src), srv.target, "up.bin", "--chunk-size", "256Ki", *cargs]
        env = dict(os.environ, QTP_TEST_THROTTLE_BPS=str(2 * 2**20))
        p = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        verified = 0
        while verified < 6 and time.monotonic() < deadline:
            rec = ResumeRecord.load(state)
            verified = sum(b - a for a, b in rec.verified) if rec else 0
            time.sleep(0.05)
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert not (root / "up.bin").exists()
        js = tmp_path / "put.json"
        r = run(["put", src, srv.target, "up.bin", "--chunk-size", "256Ki", "--json", js, *cargs])
        assert r.returncode == 0, r.stderr
        assert (root / "up.bin").read_bytes() == data
        st = stats_of(js)
        assert st["extra"]["resumed_bytes"] >= verified * 256 * 1024 > 0
        assert st["bytes"] == len(data) - st["extra"]["resumed_bytes"]
        time.sleep(0.5)
        assert not list(root.glob("*.qtp-*"))  # the superseded upload left nothing behind


def test_paths_outside_the_root_are_refused(served, tmp_path):
    srv, _root, _, base = served
    args = srv.client_args()
    for remote in [
        "../outside-secret.txt",
        "/etc/passwd",
        "escape",
        "tree/../../outside-secret.txt",
        "tree/escape-dir/outside-secret.txt",
    ]:
        r = run(["get", srv.target, remote, "-o", tmp_path / "x", *args])
        assert r.returncode == 4, (remote, r.stderr)
        assert "FORBIDDEN" in r.stderr or "NOT_FOUND" in r.stderr
        assert not (tmp_path / "x").exists()
    for remote in ["../evil", "/tmp/evil", "escape", "tree/escape-dir/evil"]:
        r = run(["put", "gen:10K", srv.target, remote, *args])
        assert r.returncode == 4, (remote, r.stderr)
    assert (base / "outside-secret.txt").read_text() == "secret"
    assert not (base / "evil").exists()
    r = run(["get", srv.target, "no/such/file", "-o", tmp_path / "x", *args])
    assert r.returncode == 4 and "NOT_FOUND" in r.stderr
    assert srv.alive()


def test_limits_refuse_oversized_transfers(tmp_path):
    with Server(tmp_path / "srv", tmp_path, args=["--max-size", "1M"]) as srv:
        r = run(["put", "gen:2M", srv.target, "big", *srv.client_args()])
        assert r.returncode == 4 and "TOO_LARGE" in r.stderr, r.stderr
        r = run(["send", srv.target, "--size", "2M", *srv.client_args()])
        assert r.returncode == 4 and "TOO_LARGE" in r.stderr, r.stderr
        r = run(["send", srv.target, "--size", "1M", *srv.client_args()])
        assert r.returncode == 0, r.stderr


def test_striping_over_two_connections(served, tmp_path):
    _, root, files, _ = served
    with Server(tmp_path / "srv2", root, args=["--workers", "2"]) as srv:
        args = srv.client_args()
        js = tmp_path / "n2.json"
        r = run(["send", srv.target, "--size", "6M", "-n", "2", "--json", js, *args])
        assert r.returncode == 0, r.stderr
        st = stats_of(js)
        assert st["bytes"] == 6_000_000 and st["extra"]["connections"] == 2
        assert len(st["extra"]["connections_detail"]) == 2
        assert sum(n for _, n in st["intervals"]) == 6_000_000
        r = run(["get", srv.target, "big.bin", "-o", tmp_path / "big", "-n", "2", "--json", js, *args])
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "big").read_bytes() == files["big.bin"] and stats_of(js)["extra"][
            "connections"
        ] == 2
        r = run(["get", srv.target, "tree", "-o", tmp_path / "t", "-n", "2", *args])
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "t" / "sub" / "b.bin").read_bytes() == files["tree/sub/b.bin"]
        assert (tmp_path / "t" / "a.bin").read_bytes() == files["tree/a.bin"]
        r = run(["put", tmp_path / "t", srv.target, "uploads/striped", "-n", "2", *args])
        assert r.returncode == 0, r.stderr
        assert tree(root / "uploads" / "striped") == tree(tmp_path / "t")


@pytest.mark.parametrize("cc", ["reno", "cubic", "bbr"])
def test_each_congestion_control_completes(served, tmp_path, cc):
    srv, _root, files, _ = served
    js = tmp_path / "cc.json"
    r = run(["send", srv.target, "--size", "4M", "--cc", cc, "--json", js, *srv.client_args()])
    assert r.returncode == 0, r.stderr
    assert stats_of(js)["cc"] == cc and stats_of(js)["bytes"] == 4_000_000
    # get: the server is the sender and switches to the requested controller
    r = run(
        ["get", srv.target, "tree/sub/b.bin", "-o", tmp_path / "b", "--server-cc", cc, *srv.client_args()]
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b").read_bytes() == files["tree/sub/b.bin"]


def test_exit_codes_and_certificate_verification(served, tmp_path):
    srv, *_ = served
    # nothing listens there: connection/handshake failure
    from qtp_support import free_udp_port

    r = run(
        ["send", f"127.0.0.1:{free_udp_port()}", "--size", "1K", "--timeout", "1", "--insecure", "--no-0rtt"]
    )
    assert r.returncode == 3, r.stderr
    # the self-signed certificate is not trusted without --ca (or an explicit --insecure)
    r = run(["send", srv.target, "--size", "1K", "--state-dir", tmp_path / "s", "--no-0rtt"])
    assert r.returncode == 3, r.stderr
    r = run(["send", srv.target, "--size", "1K", "--insecure", "--state-dir", tmp_path / "s"])
    assert r.returncode == 0, r.stderr
    r = run(["send", srv.target, "--size", "1K", "--cc", "nope", "--insecure"])
    assert r.returncode == 2
    js = tmp_path / "fail.json"
    r = run(["get", srv.target, "missing", "-o", tmp_path / "m", "--json", js, *srv.client_args()])
    assert r.returncode == 4
    st = stats_of(js)
    assert st["ok"] is False and "NOT_FOUND" in st["error"] and st["extra"]["exit_code"] == 4


def test_driver_runs_a_transfer(tmp_path):
    from qtp_support import free_udp_port

    from protocols import registry
    from protocols.base import TransferStats

    d = registry.get("qtp")
    assert d.name == "qtp" and d.check_cc(None) == "cubic" and "bbr" in d.congestion_controls
    port = free_udp_port()
    opts = {"cert_dir": str(tmp_path / "certs")}
    srv = subprocess.Popen(
        d.server_argv(port, cc="reno", workdir=str(tmp_path / "s"), options=opts),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
    )
    try:
        stats = tmp_path / "stats.json"
        argv = d.client_argv(
            "127.0.0.1",
            port,
            size=3_000_000,
            seed=4,
            cc="reno",
            stats_path=str(stats),
            workdir=str(tmp_path / "c"),
            options=opts,
        )
        for _ in range(50):  # the server may still be starting
            r = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
            if r.returncode != 3:
                break
            time.sleep(0.2)
        assert r.returncode == 0, r.stderr
        st = TransferStats.read(stats)
        assert st.ok and st.bytes == 3_000_000 and st.cc == "reno" and st.first_byte and st.intervals
    finally:
        srv.terminate()
        srv.wait(10)


def test_get_whole_file_digest_matches(served, tmp_path):
    srv, _root, files, _ = served
    out = tmp_path / "s.txt"
    r = run(["get", srv.target, "small.txt", "-o", out, *srv.client_args()])
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(files["small.txt"]).digest()
    r = run(["get", srv.target, "empty", "-o", tmp_path / "e", *srv.client_args()])
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "e").read_bytes() == b""


def test_resume_with_a_damaged_partial_file_starts_afresh(served, tmp_path):
    srv, root, files, _ = served
    out = tmp_path / "big.bin"
    r = run(["get", srv.target, "big.bin", "-o", out, *srv.client_args()])
    assert r.returncode == 0, r.stderr
    # fake an interrupted download whose "verified" chunks were damaged on disk since
    part = Path(str(out) + ".qtp-part")
    out.rename(part)
    with open(part, "r+b") as f:
        f.seek(10)
        f.write(b"damage")
    st = os.stat(root / "big.bin")
    n = -(-st.st_size // 2**20)
    ResumeRecord(f"qtp://{srv.target}/big.bin", st.st_size, st.st_mtime_ns, 2**20, [(0, n - 1)]).save(
        str(out) + ".qtp-state"
    )
    js = tmp_path / "again.json"
    r = run(["get", srv.target, "big.bin", "-o", out, "--json", js, *srv.client_args()])
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == files["big.bin"]
