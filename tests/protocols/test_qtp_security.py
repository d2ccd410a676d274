"""qtp server robustness: malformed and random input on the control stream and on the UDP
port, limits (connections, concurrent transfers, stalled transfers). After each abuse the
server must still serve a well-behaved client."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import struct

import pytest
from qtp_support import Server, run

from protocols.qtp import certs, config, io
from protocols.qtp import messages as m


class Raw(io.StreamHandler):
    """Records what the server sends on one stream, undecoded."""

    def __init__(self, conn, sid):
        super().__init__(conn, sid)
        self.received = bytearray()
        self.eof = asyncio.get_running_loop().create_future()

    def on_data(self, data, end):
        self.received += data
        if end and not self.eof.done():
            self.eof.set_result(True)

    def on_reset(self, code):
        if not self.eof.done():
            self.eof.set_result(code)


async def connect(srv: Server):
    cfg = config.base_configuration(is_client=True, cc="cubic", max_datagram_size=1472)
    certs.configure_client(cfg, "127.0.0.1", ca=str(srv.cert))
    conn, udp = await io.open_client("127.0.0.1", srv.port, cfg)
    await asyncio.wait_for(asyncio.shield(conn.handshake), 10)
    return conn, udp


def open_raw(conn) -> Raw:
    sid = conn.quic.get_next_available_stream_id()
    h = Raw(conn, sid)
    conn.streams[sid] = h
    return h


async def exchange(
    srv: Server, data: bytes, end: bool = True, timeout: float = 5.0
) -> tuple[int | None, bytes]:
    """Send `data` on a new stream of a new connection. Returns (connection close code
    if the server closed the connection, bytes the server sent on the stream)."""
    conn, udp = await connect(srv)
    try:
        h = open_raw(conn)
        conn.write(h.stream_id, data, end)
        await asyncio.wait([h.eof, conn.terminated], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        code = conn.close_event.error_code if conn.close_event is not None else None
        return code, bytes(h.received)
    finally:
        conn.close()
        udp.close()


def error_code_of(received: bytes) -> int | None:
    """The code of an ERROR frame at the start of what the server sent, if any."""
    if len(received) >= 5 and received[0] == m.ERROR:
        n = struct.unpack(">I", received[1:5])[0]
        return json.loads(received[5 : 5 + n])["code"]
    return None


def fuzz_cases(rng: random.Random, n: int) -> list[bytes]:
    valid = [
        m.encode(m.Request(op="stat", path="f.bin")),
        m.encode(m.Request(op="get", path="f.bin", chunk_size=65536)),
        m.encode(m.Request(op="sink", size=1000, seed=1, chunk_size=4096)),
        m.encode(m.Request(op="put", path="up.bin", size=100, chunk_size=4096)),
    ]
    cases = [
        b"",
        b"\x00" * 5,
        struct.pack(">BI", m.REQUEST, m.MAX_CONTROL + 1),
        struct.pack(">BI", m.REQUEST, 2**32 - 1) + b"x" * 100,
        struct.pack(">BI", m.REQUEST, 5) + b"[[[[[",
        struct.pack(">BI", m.CHUNK, 100) + b"\x00" * 100,
        m.encode(m.Result(ok=True)),
        m.encode(m.Request(op="stat", path="f.bin"))[:-3],
        struct.pack(">BI", m.REQUEST, 200_000) + b"[" * 100_000 + b"]" * 100_000,
    ]
    while len(cases) < n:
        kind = rng.random()
        if kind < 0.4:
            cases.append(rng.randbytes(rng.randint(1, 3000)))
        else:
            d = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 6)):
                d[rng.randrange(len(d))] = rng.randrange(256)
            if rng.random() < 0.3:
                d = d[: rng.randrange(len(d))]
            cases.append(bytes(d))
    return cases


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("qtpsec")
    root = base / "root"
    root.mkdir()
    (root / "f.bin").write_bytes(os.urandom(200_000))
    with Server(base / "srv", root, args=["--stall-timeout", "2", "--max-transfers", "3"]) as srv:
        yield srv


def good_client_works(srv: Server, tmp_path) -> None:
    r = run(["get", srv.target, "f.bin", "-o", tmp_path / "ok.bin", *srv.client_args(tmp_path / "cs")])
    assert r.returncode == 0, r.stderr
    assert srv.alive()


def test_malformed_control_messages_close_only_that_connection(server, tmp_path):
    rng = random.Random(1234)
    closed_bad_request = 0
    outcomes = []

    async def fuzz() -> None:
        nonlocal closed_bad_request
        # a bystander connection that must survive everything below
        conn, udp = await connect(server)

        async def bystander_works() -> None:
            assert not conn.is_closed
            h = open_raw(conn)
            conn.write(h.stream_id, m.encode(m.Request(op="stat", path="f.bin")), True)
            await asyncio.wait_for(h.eof, 10)
            assert h.received[0] == m.RESPONSE

        try:
            for i, data in enumerate(fuzz_cases(rng, 80)):
                code, received = await exchange(server, data, end=rng.random() < 0.7, timeout=3)
                outcomes.append((code, error_code_of(received)))
                if code == m.ErrorCode.BAD_REQUEST:
                    closed_bad_request += 1
                if i % 10 == 9:
                    await bystander_works()
            await bystander_works()
        finally:
            conn.close()
            udp.close()

    asyncio.run(fuzz())
    assert closed_bad_request >= 20, outcomes
    good_client_works(server, tmp_path)


def test_garbage_datagrams_are_ignored(server, tmp_path):
    rng = random.Random(5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(500):
            if i % 3 == 0:  # long header, Initial-looking, big enough to be considered
                d = bytes([0xC0 | rng.randrange(16)]) + b"\x00\x00\x00\x01" + bytes([8]) + rng.randbytes(1300)
            elif i % 3 == 1:  # short header with a random connection ID
                d = bytes([0x40]) + rng.randbytes(rng.randint(1, 1500))
            else:
                d = rng.randbytes(rng.randint(0, 2000))
            s.sendto(d, ("127.0.0.1", server.port))
    good_client_works(server, tmp_path)


def test_refusals_are_errors_on_the_stream_not_crashes(server, tmp_path):
    async def go() -> list:
        out = []
        for req in [
            m.Request(op="get", path="../x", chunk_size=65536),
            m.Request(op="stat", path="nope"),
            m.Request(op="get", path="f.bin", chunk_size=65536, chunks=[(0, 99)]),
            m.Request(op="get", path="f.bin", chunk_size=65536, expect={"size": 1, "mtime_ns": 1}),
        ]:
            code, received = await exchange(server, m.encode(req))
            out.append((code, error_code_of(received)))
        return out

    results = asyncio.run(go())
    assert [e for _, e in results] == [403, 404, 400, 409]
    assert all(c is None or c == 0 for c, _ in results)  # the connections were not torn down
    good_client_works(server, tmp_path)


def test_stalled_transfer_is_ended(server):
    async def go() -> int | None:
        conn, udp = await connect(server)
        try:
            h = open_raw(conn)
            conn.write(
                h.stream_id, m.encode(m.Request(op="put", path="stall.bin", size=10**6, chunk_size=65536))
            )
            await asyncio.wait_for(h.eof, 15)  # then never send a chunk
            data = bytes(h.received)
            n = struct.unpack(">I", data[1:5])[0]
            return error_code_of(data[5 + n :])
        finally:
            conn.close()
            udp.close()

    assert asyncio.run(go()) == m.ErrorCode.TIMEOUT


def test_concurrent_transfer_limit(server):
    async def go() -> list:
        conn, udp = await connect(server)
        try:
            hs = []
            for i in range(5):
                h = open_raw(conn)
                conn.write(h.stream_id, m.encode(m.Request(op="sink", size=10**7, seed=i, chunk_size=65536)))
                hs.append(h)
            await asyncio.sleep(1.0)
            return [bytes(h.received)[:1] for h in hs]
        finally:
            conn.close()
            udp.close()

    first = asyncio.run(go())
    assert first.count(bytes([m.RESPONSE])) == 3 and first.count(bytes([m.ERROR])) == 2


def test_connection_limit(tmp_path):
    with Server(tmp_path / "srv", None, args=["--max-connections", "1"]) as srv:

        async def go() -> int:
            conn, udp = await connect(srv)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *__import__("qtp_support").QTP,
                    "send",
                    srv.target,
                    "--size",
                    "1K",
                    "--no-0rtt",
                    *[str(a) for a in srv.client_args(tmp_path / "c")],
                    cwd=str(__import__("qtp_support").REPO),
                    stderr=asyncio.subprocess.PIPE,
                )
                _, err = await proc.communicate()
                assert b"busy" in err.lower() or b"refused" in err.lower(), err
                return proc.returncode
            finally:
                conn.close()
                udp.close()

        assert asyncio.run(go()) == 4
