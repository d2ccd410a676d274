"""qtp's aioquic fast path, sans I/O: two QuicConnections in memory exchange datagrams over a
simulated path (delay, optional random loss); a bulk stream must arrive byte-exact, with the
fast path building most packets, and the packets it builds must decrypt and parse in aioquic."""

from __future__ import annotations

import heapq
import random

import pytest
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from protocols.qtp import (
    bbr,  # noqa: F401  (registers "bbr")
    certs,
    fastpath,
)


@pytest.fixture
def patched():
    if not fastpath.install():
        pytest.skip("fast path not installable (disabled or another aioquic version)")
    yield
    fastpath.uninstall()


def _pair(tmp_path, cc: str) -> tuple[QuicConnection, QuicConnection]:
    cert, key = certs.ensure_self_signed(tmp_path)
    ccfg = QuicConfiguration(is_client=True, alpn_protocols=["t"], max_datagram_size=1472,
                             congestion_control_algorithm=cc)
    ccfg.verify_mode = 0
    scfg = QuicConfiguration(is_client=False, alpn_protocols=["t"], max_datagram_size=1472,
                             congestion_control_algorithm=cc)
    scfg.load_cert_chain(str(cert), str(key))
    client = QuicConnection(configuration=ccfg)
    server = QuicConnection(
        configuration=scfg, original_destination_connection_id=client.original_destination_connection_id
    )
    return client, server


def _transfer(tmp_path, size: int, loss: float, cc: str = "cubic", seed: int = 1) -> bytes:
    """Send `size` bytes client -> server over a 10 ms one-way path; return what arrived."""
    rng = random.Random(seed)
    client, server = _pair(tmp_path, cc)
    addr_c, addr_s = ("10.0.0.1", 1000), ("10.0.0.2", 2000)
    now = 0.0
    client.connect(addr_s, now=now)
    payload = rng.randbytes(size)
    got = bytearray()
    queue: list[tuple[float, int, QuicConnection, bytes, tuple]] = []
    seq = 0
    sent = False
    ended = False

    def flush(conn: QuicConnection, peer: QuicConnection, src: tuple) -> None:
        nonlocal seq
        if not conn._network_paths:  # the server before its first datagram
            return
        for data, _ in conn.datagrams_to_send(now=now):
            if sent and rng.random() < loss:
                continue
            seq += 1
            heapq.heappush(queue, (now + 0.010, seq, peer, data, src))

    while now < 60 and not ended:
        flush(client, server, addr_c)
        flush(server, client, addr_s)
        timers = [t for t in (client.get_timer(), server.get_timer()) if t is not None]
        if queue:
            timers.append(queue[0][0])
        if not timers:
            break
        now = max(now, min(timers)) + 1e-6  # (a loss timer at exactly `now` can miss by rounding)
        while queue and queue[0][0] <= now:
            _, _, conn, data, src = heapq.heappop(queue)
            conn.receive_datagram(data, src, now=now)
        for conn in (client, server):
            t = conn.get_timer()
            if t is not None and t <= now:
                conn.handle_timer(now=now)
            while (ev := conn.next_event()) is not None:
                if isinstance(ev, events.HandshakeCompleted) and conn is client and not sent:
                    sid = client.get_next_available_stream_id()
                    client.send_stream_data(sid, payload, end_stream=True)
                    sent = True
                elif isinstance(ev, events.StreamDataReceived) and conn is server:
                    got += ev.data
                    ended = ev.end_stream
    assert ended, f"transfer did not end: {len(got)} of {size} bytes"
    return bytes(got), payload


@pytest.mark.parametrize(("loss", "cc"), [(0.0, "cubic"), (0.02, "cubic"), (0.02, "bbr")])
def test_bulk_stream_arrives_byte_exact_through_the_fast_path(tmp_path, patched, loss, cc):
    before = dict(fastpath.stats)
    got, payload = _transfer(tmp_path, 3_000_000, loss, cc)
    assert got == payload
    # ~2100 packets of data (more with loss), most built fast; the receiver's ACKs are generic
    assert fastpath.stats["fast"] - before["fast"] > 1500
    # and received by the fast path (all 1-RTT packets: data one way, ACKs the other)
    assert fastpath.stats["received_fast"] - before["received_fast"] > 1500


def test_without_the_patch_the_same_transfer_works(tmp_path):
    fastpath.uninstall()
    got, payload = _transfer(tmp_path, 500_000, 0.02)
    assert got == payload
