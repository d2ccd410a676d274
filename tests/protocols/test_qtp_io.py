"""qtp's UDP layer: GSO batching (pure) and real loopback sockets (GSO, fallback, rx pause)."""

from __future__ import annotations

import asyncio
import socket

from protocols.qtp import io

A = ("127.0.0.1", 1)
B = ("127.0.0.1", 2)


def test_gso_runs_group_equal_sizes_with_a_shorter_last():
    dgs = [(b"x" * 1472, A)] * 5 + [(b"y" * 100, A)] + [(b"z" * 1472, A)] * 2
    assert io.gso_runs(dgs) == [(0, 6, 1472), (6, 8, 1472)]


def test_gso_runs_split_on_address_larger_size_and_limits():
    dgs = [(b"a" * 50, A), (b"b" * 1472, A), (b"c" * 1472, B)]
    assert io.gso_runs(dgs) == [(0, 1, 50), (1, 2, 1472), (2, 3, 1472)]
    many = [(b"d" * 1000, A)] * (io.GSO_MAX_SEGMENTS + 3)
    n = io.GSO_MAX_SEGMENTS
    assert io.gso_runs(many) == [(0, n, 1000), (n, n + 3, 1000)]
    big = [(b"e" * 8972, A)] * 10  # bytes limit: 7 x 8972 = 62804 <= 65000 < 8 x 8972
    assert io.gso_runs(big) == [(0, 7, 8972), (7, 10, 8972)]
    assert io.gso_runs([]) == []


def _exchange(datagrams: list[bytes], *, no_check: bool = False, coalesce: float = 0.001):
    """Send `datagrams` in one UdpSocket.send over loopback; return (received, sender, receiver)."""

    async def main():
        loop = asyncio.get_running_loop()
        got: list[bytes] = []
        done = loop.create_future()
        rs = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rs.bind(("127.0.0.1", 0))

        def on_datagrams(batch):
            got.extend(d for d, _ in batch)
            if len(got) >= len(datagrams) and not done.done():
                done.set_result(None)

        rx = io.UdpSocket(loop, rs, on_datagrams, 1 << 20)
        rx.rx_coalesce = coalesce
        ss = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if no_check:
            ss.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK: the kernel refuses UDP GSO then
        tx = io.UdpSocket(loop, ss, lambda batch: None, 1 << 20)
        tx.send([(d, rs.getsockname()) for d in datagrams])
        await asyncio.wait_for(done, 5)
        tx.close()
        rx.close()
        return got, tx, rx

    return asyncio.run(main())


def test_gso_send_over_loopback_arrives_datagram_by_datagram():
    dgs = [bytes([i]) * 1472 for i in range(100)] + [b"last" * 10]
    got, tx, rx = _exchange(dgs)
    assert got == dgs
    assert tx.datagrams_sent == len(dgs) and tx.bytes_sent == sum(map(len, dgs))
    if tx.gso:  # a kernel with UDP GSO: one sendmsg per run (44 x 1472 bytes at most)
        assert tx.gso_sends == 3
    assert rx.datagrams_received == len(dgs)


def test_gso_refused_by_the_kernel_falls_back_to_plain_sends():
    dgs = [bytes([i]) * 1000 for i in range(10)]
    got, tx, _ = _exchange(dgs, no_check=True)
    assert got == dgs
    assert not tx.gso and tx.datagrams_sent == 10


def test_paused_reader_still_receives_everything():
    dgs = [bytes([i]) * 500 for i in range(30)]
    got, _, rx = _exchange(dgs, coalesce=0.005)
    assert got == dgs and rx.batches_received >= 1
    got, _, _ = _exchange(dgs, coalesce=0.0)
    assert got == dgs


def test_ack_delay_follows_the_min_rtt_within_bounds():
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    async def main():
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp = io.UdpSocket(loop, s, lambda batch: None, 1 << 16)
        conn = io.Conn(QuicConnection(configuration=QuicConfiguration(is_client=True)), udp)
        delays = []
        for rtt in (float("inf"), 0.0002, 0.016, 0.050, 0.300):
            conn.quic._loss._rtt_min = rtt
            conn._tune_ack_delay()
            delays.append(conn.quic._ack_delay)
        udp.close()
        return delays

    d = asyncio.run(main())
    assert d[0] == 0.001  # no RTT sample yet: aioquic's default
    assert d[1] == io.ACK_DELAY_MIN_S and d[2] == 0.002
    assert d[3] == d[4] == io.ACK_DELAY_MAX_S
