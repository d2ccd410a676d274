"""BBR on a simulated path: synthetic send/ack/loss events at a known bottleneck rate and RTT.

The simulator plays aioquic's recovery: it sends while cwnd and BBR's own pacer allow, queues
packets at a bottleneck (FIFO, byte limit, optional random loss), acks each delivered packet one
base RTT after it leaves the bottleneck, and declares a packet lost when one sent 3 later is acked.
"""
from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field

import pytest
from aioquic.quic.congestion.base import QuicCongestionControl, create_congestion_control
from aioquic.quic.packet_builder import QuicPacketType, QuicSentPacket
from aioquic.quic.recovery import QuicPacketPacer
from aioquic.tls import Epoch

from protocols.qtp import bbr
from protocols.qtp.bbr import HIGH_GAIN, PROBE_BW, PROBE_RTT, BbrCongestionControl, BbrPacer

MDS = 1200


@dataclass
class SimResult:
    cc: QuicCongestionControl
    delivered_after_warmup: int = 0
    warmup_s: float = 0.0
    duration_s: float = 0.0
    rtts: list[float] = field(default_factory=list)  # after warm-up
    states: set[str] = field(default_factory=set)

    @property
    def goodput(self) -> float:
        """Bytes/s delivered after the warm-up."""
        return self.delivered_after_warmup / (self.duration_s - self.warmup_s)


def simulate(
    cc_name: str,
    *,
    rate_mbps: float,
    rtt_ms: float,
    duration_s: float,
    loss: float = 0.0,
    queue_bdp: float = 1.0,
    warmup_s: float = 2.0,
    seed: int = 1,
    ack_every_ms: float = 0.0,
    app_limited_s: float = 0.0,
    ack_frames: bool = False,
) -> SimResult:
    rng = random.Random(seed)
    if cc_name == "bbr":
        cc = BbrCongestionControl(max_datagram_size=MDS, rng=random.Random(seed))
        pacer: QuicPacketPacer = BbrPacer(max_datagram_size=MDS, cc=cc)
    else:
        cc = create_congestion_control(cc_name, max_datagram_size=MDS)
        pacer = QuicPacketPacer(max_datagram_size=MDS)
    rate = rate_mbps * 1e6 / 8
    base_rtt = rtt_ms / 1e3
    queue_limit = max(64 * MDS, queue_bdp * rate * base_rtt)
    result = SimResult(cc=cc, warmup_s=warmup_s, duration_s=duration_s)

    events: list[tuple[float, int, str, QuicSentPacket | None]] = []
    seq = 0
    outstanding: dict[int, QuicSentPacket] = {}
    link_free = 0.0
    next_pn = 0
    srtt = None
    wake_at = None
    ack_wake = [0.0]

    def push(t: float, kind: str, pkt: QuicSentPacket | None = None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, pkt))

    app_next = [0.0]  # while app-limited: when the application offers its next packet

    def try_send(now: float) -> None:
        nonlocal next_pn, link_free, wake_at
        while cc.bytes_in_flight + MDS <= cc.congestion_window:
            pace_at = pacer.next_send_time(now)
            if pace_at is not None:
                if wake_at is None or wake_at > pace_at:
                    wake_at = pace_at
                    push(pace_at, "wake")
                return
            if now < app_limited_s:  # like a request/response exchange: one packet per RTT
                if now < app_next[0]:
                    return  # a send slot granted and unused, as in aioquic's send loop
                app_next[0] = now + base_rtt
            pkt = QuicSentPacket(
                epoch=Epoch.ONE_RTT, in_flight=True, is_ack_eliciting=True, is_crypto_packet=False,
                packet_number=next_pn, packet_type=QuicPacketType.ONE_RTT, sent_time=now, sent_bytes=MDS,
            )
            next_pn += 1
            cc.on_packet_sent(packet=pkt)
            pacer.update_after_send(now)
            outstanding[pkt.packet_number] = pkt
            queued = max(0.0, link_free - now) * rate
            if queued + MDS > queue_limit or rng.random() < loss:
                continue  # dropped: the ack of later packets reveals it
            link_free = max(link_free, now) + MDS / rate
            at_receiver = link_free + base_rtt / 2
            if ack_every_ms:  # the receiver acks in batches, when it gets the CPU (random gaps)
                while ack_wake[0] < at_receiver:
                    ack_wake[0] += rng.uniform(0, 2 * ack_every_ms / 1e3)
                at_receiver = ack_wake[0]
            push(at_receiver + base_rtt / 2, "ack", pkt)

    push(0.0, "wake")
    while events:
        now, _, kind, pkt = heapq.heappop(events)
        if now > duration_s:
            break
        if kind == "wake":
            if wake_at is not None and now >= wake_at:
                wake_at = None
        else:
            assert pkt is not None
            del outstanding[pkt.packet_number]
            cc.on_packet_acked(now=now, packet=pkt)
            if ack_frames and events and events[0][0] == now and events[0][2] == "ack":
                if now >= warmup_s:
                    result.delivered_after_warmup += MDS
                continue  # as aioquic: every packet of an ACK frame acked, then one RTT sample
            rtt = now - pkt.sent_time
            srtt = rtt if srtt is None else 7 / 8 * srtt + rtt / 8
            cc.on_rtt_measurement(now=now, rtt=rtt)
            pacer.update_rate(congestion_window=cc.congestion_window, smoothed_rtt=srtt)
            lost = [p for pn, p in outstanding.items() if pn <= pkt.packet_number - 3]
            if lost:
                for p in lost:
                    del outstanding[p.packet_number]
                cc.on_packets_lost(now=now, packets=lost)
                pacer.update_rate(congestion_window=cc.congestion_window, smoothed_rtt=srtt)
            if now >= warmup_s:
                result.delivered_after_warmup += MDS
                result.rtts.append(rtt)
            if isinstance(cc, BbrCongestionControl):
                result.states.add(cc.state)
            if events and events[0][0] == now and events[0][2] == "ack":
                continue  # acks arriving together are one ACK frame: process all before sending
        try_send(now)
    return result


@pytest.mark.parametrize(("rate_mbps", "rtt_ms"), [(50, 40), (100, 10)])
def test_bbr_converges_to_bottleneck(rate_mbps: float, rtt_ms: float) -> None:
    res = simulate("bbr", rate_mbps=rate_mbps, rtt_ms=rtt_ms, duration_s=6.0)
    cc = res.cc
    assert isinstance(cc, BbrCongestionControl)
    rate = rate_mbps * 1e6 / 8
    bdp = rate * rtt_ms / 1e3
    assert cc.state == PROBE_BW
    assert cc.btl_bw == pytest.approx(rate, rel=0.10)
    assert cc.min_rtt == pytest.approx(rtt_ms / 1e3, rel=0.05)
    assert cc.congestion_window == pytest.approx(2 * bdp, rel=0.15)
    assert res.goodput >= 0.9 * rate
    # the queue stays short: the median RTT is within 1.5x the propagation RTT
    rtts = sorted(res.rtts)
    assert rtts[len(rtts) // 2] < 1.5 * rtt_ms / 1e3


def test_bbr_ack_aggregation_allowance() -> None:
    """Acks in batches 0-4 ms apart on a 0.5 ms path (a receiver that gets the CPU now and
    then): 2 x BDP from the min RTT alone would cap the rate far below the link's."""
    rate = 100e6 / 8
    res = simulate("bbr", rate_mbps=100, rtt_ms=0.5, duration_s=3.0, warmup_s=1.0, ack_every_ms=2.0)
    cc = res.cc
    assert isinstance(cc, BbrCongestionControl)
    assert cc.btl_bw == pytest.approx(rate, rel=0.10)
    assert cc.extra_acked >= rate * 0.002 * 0.8  # about one batch of acks
    assert res.goodput >= 0.85 * rate


def test_bbr_updates_its_model_once_per_ack_frame() -> None:
    """Packets acked together update the counters at once and the model at the frame's end."""
    cc = BbrCongestionControl(max_datagram_size=MDS, rng=random.Random(1))
    pkts = []
    for pn in range(20):
        p = QuicSentPacket(epoch=Epoch.ONE_RTT, in_flight=True, is_ack_eliciting=True, is_crypto_packet=False,
                           packet_number=pn, packet_type=QuicPacketType.ONE_RTT, sent_time=pn * 0.001,
                           sent_bytes=MDS)
        cc.on_packet_sent(packet=p)
        pkts.append(p)
    for frame, now in ((pkts[:10], 0.06), (pkts[10:], 0.07)):
        cwnd, rounds = cc.congestion_window, cc._round_count
        for p in frame:
            cc.on_packet_acked(now=now, packet=p)
        assert cc._acked_bytes == 10 * MDS
        assert (cc.congestion_window, cc._round_count) == (cwnd, rounds)  # the frame has not ended
        cc.on_rtt_measurement(now=now, rtt=0.051)
        assert cc._acked_bytes == 0
    assert cc.bytes_in_flight == 0 and cc._delivered == 20 * MDS
    assert cc._round_count == 1 and cc.btl_bw > 0
    assert cc.congestion_window == 20 * MDS  # STARTUP: the second frame's bytes added at once


def test_bbr_stamps_a_burst_with_paced_departure_times() -> None:
    """Packets handed over together (one datagrams_to_send) leave one pacing interval apart."""
    cc = BbrCongestionControl(max_datagram_size=MDS, rng=random.Random(1))
    cc.pacing_rate = 1e6  # bytes/s: 1.2 ms per packet
    cc._filled_pipe = True  # (in STARTUP the batch time is kept)
    pkts = []
    for pn in range(5):
        p = QuicSentPacket(epoch=Epoch.ONE_RTT, in_flight=True, is_ack_eliciting=True, is_crypto_packet=False,
                           packet_number=pn, packet_type=QuicPacketType.ONE_RTT, sent_time=1.0,
                           sent_bytes=MDS)
        cc.on_packet_sent(packet=p)
        pkts.append(p)
    assert [round(p.bbr_rs[4], 4) for p in pkts] == [1.0, 1.0012, 1.0024, 1.0036, 1.0048]
    late = QuicSentPacket(epoch=Epoch.ONE_RTT, in_flight=True, is_ack_eliciting=True, is_crypto_packet=False,
                          packet_number=5, packet_type=QuicPacketType.ONE_RTT, sent_time=2.0, sent_bytes=MDS)
    cc.on_packet_sent(packet=late)
    assert late.bbr_rs[4] == 2.0  # after a pause: the real send time


def test_bbr_first_rtt_sample_sets_the_startup_pacing_rate() -> None:
    """The handshake's tiny delivery-rate sample comes before the first RTT sample; the
    pacing rate must still start at high gain x initial window / RTT (as Linux)."""
    cc = BbrCongestionControl(max_datagram_size=MDS, rng=random.Random(1))
    p = QuicSentPacket(epoch=Epoch.ONE_RTT, in_flight=True, is_ack_eliciting=True, is_crypto_packet=False,
                       packet_number=0, packet_type=QuicPacketType.ONE_RTT, sent_time=0.0, sent_bytes=100)
    cc.on_packet_sent(packet=p)
    cc.on_packet_acked(now=0.05, packet=p)
    cc.on_rtt_measurement(now=0.05, rtt=0.05)
    assert cc.btl_bw == pytest.approx(100 / 0.05)
    assert cc.pacing_rate == pytest.approx(HIGH_GAIN * cc.congestion_window / 0.05)


def test_bbr_pools_a_rounds_rate_samples_on_long_paths() -> None:
    """In PROBE_BW on a 50 ms path, a round's samples scattered by ack timing average out:
    the estimate is the pooled rate, not the highest sample."""
    cc = BbrCongestionControl(max_datagram_size=MDS, rng=random.Random(1))
    cc._filled_pipe = True
    cc.min_rtt = 0.05
    cc._round_count = 1
    for interval in (0.050, 0.046, 0.054, 0.048, 0.052):  # 1 MB delivered per sample
        cc._update_bw(1e6, interval, app_limited=False)
    assert cc.btl_bw == pytest.approx(1e6 / 0.05)
    cc.min_rtt = 0.001  # a short path: the max
    cc._round_count = 2
    for interval in (0.050, 0.046):
        cc._update_bw(1e6, interval, app_limited=False)
    assert cc.btl_bw == pytest.approx(1e6 / 0.046)


def test_bbr_converges_when_acks_cover_many_packets() -> None:
    """ACK frames of ~2 ms of packets (a Python receiver) still find the bottleneck."""
    res = simulate("bbr", rate_mbps=100, rtt_ms=50, duration_s=8.0, ack_every_ms=2.0, ack_frames=True)
    assert res.goodput * 8 / 1e6 > 90
    assert res.cc.btl_bw * 8 / 1e6 == pytest.approx(100, rel=0.15)


def test_bbr_app_limited_start_does_not_end_startup() -> None:
    """1 s of one packet per RTT (handshake, request/response) before the bulk data: those
    rounds show no growth, but being app-limited they must not count as a full pipe."""
    rate = 50e6 / 8
    res = simulate("bbr", rate_mbps=50, rtt_ms=40, duration_s=3.0, warmup_s=2.0, app_limited_s=1.0)
    cc = res.cc
    assert isinstance(cc, BbrCongestionControl)
    assert cc.btl_bw == pytest.approx(rate, rel=0.10)
    assert res.goodput >= 0.9 * rate  # within a second of the bulk start: a STARTUP ramp


def test_bbr_startup_into_small_buffer_exits_on_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bottleneck queue of half a BDP: STARTUP's 2.89 x BDP cwnd overflows it. The loss exit
    (> 2 % of a round and >= 8 packets lost) ends STARTUP after the first loss-heavy round
    instead of after 3 no-growth rounds: far fewer losses, the same bandwidth estimate."""
    kw = dict(rate_mbps=100, rtt_ms=50, queue_bdp=0.5, duration_s=3.0, warmup_s=2.0)
    rate = 100e6 / 8
    res = simulate("bbr", **kw)
    cc = res.cc
    assert isinstance(cc, BbrCongestionControl)
    assert cc.state == PROBE_BW
    assert cc.btl_bw == pytest.approx(rate, rel=0.10)
    assert res.goodput >= 0.9 * rate
    # the same path without the loss exit (BBR v1: STARTUP ignores loss)
    monkeypatch.setattr(bbr, "STARTUP_LOSS_THRESH", math.inf)
    v1 = simulate("bbr", **kw)
    assert isinstance(v1.cc, BbrCongestionControl)
    assert v1.cc.packets_lost > 1000  # sanity: the overshoot is real on this path
    assert cc.packets_lost < 0.4 * v1.cc.packets_lost


def test_bbr_random_loss_keeps_estimate_and_rate() -> None:
    rate = 50e6 / 8
    res = simulate("bbr", rate_mbps=50, rtt_ms=40, duration_s=6.0, loss=0.01)
    cc = res.cc
    assert isinstance(cc, BbrCongestionControl)
    assert cc.btl_bw == pytest.approx(rate, rel=0.10)
    assert cc.packets_lost > 0
    assert res.goodput >= 0.85 * rate


def test_bbr_beats_loss_based_cc_at_random_loss() -> None:
    """The key property: at 1 % random loss Reno collapses (Mathis), BBR does not."""
    bbr = simulate("bbr", rate_mbps=50, rtt_ms=40, duration_s=6.0, loss=0.01)
    reno = simulate("reno", rate_mbps=50, rtt_ms=40, duration_s=6.0, loss=0.01)
    mathis = MDS / 0.040 * 1.22 / math.sqrt(0.01)
    assert reno.goodput < 3 * mathis  # sanity of the simulator: Reno is loss-bound
    assert bbr.goodput > 5 * reno.goodput


def test_bbr_probe_rtt_refreshes_min_rtt() -> None:
    res = simulate("bbr", rate_mbps=20, rtt_ms=20, duration_s=12.0, warmup_s=11.0)
    cc = res.cc
    assert isinstance(cc, BbrCongestionControl)
    assert PROBE_RTT in res.states
    assert cc.state == PROBE_BW
    assert cc.min_rtt == pytest.approx(0.020, rel=0.05)
    assert cc._min_rtt_stamp > 10.0  # refreshed by PROBE_RTT, not the original sample


def test_bbr_is_registered_and_pacer_installed() -> None:
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    def connection(cc: str) -> QuicConnection:
        config = QuicConfiguration(is_client=True, congestion_control_algorithm=cc)
        return QuicConnection(configuration=config)

    conn = connection("bbr")
    assert isinstance(conn._loss._cc, BbrCongestionControl)
    assert isinstance(conn._loss._pacer, BbrPacer)
    assert type(connection("reno")._loss._pacer) is QuicPacketPacer
