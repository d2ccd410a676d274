"""BBR (v1) congestion control for aioquic, registered as "bbr".

A model-based controller: it estimates the bottleneck bandwidth (windowed max of delivery-rate
samples over 10 round trips) and the path's propagation delay (min RTT over 10 s) and sends at
`pacing_gain x btl_bw` with `cwnd = cwnd_gain x BDP`. Losses do not change the model, so random
(non-congestive) loss does not collapse the rate, unlike Reno/CUBIC (Mathis: ~MSS/RTT/sqrt(p)).

Follows draft-cardwell-iccrg-bbr-congestion-control-00 and Linux tcp_bbr.c:
STARTUP (gain 2/ln2) until the bandwidth stops growing 25 % for 3 rounds, DRAIN until inflight
<= BDP, PROBE_BW cycling pacing gains 1.25, 0.75, 1 x 6 (one min RTT each), PROBE_RTT
(cwnd 4 packets for max(200 ms, 1 round)) when the min RTT is 10 s old. One BBRv2 addition:
STARTUP also ends (to DRAIN) when a round trip loses more than 2 % of its data and at least 8
packets. STARTUP's cwnd (2.89 x BDP) exceeds what a path with a bottleneck queue of about one
BDP holds, so without that exit the 3 no-growth rounds overflow the queue with a burst of
losses and retransmissions. Loss is only looked at in STARTUP: in PROBE_BW random loss still
leaves the model alone.
Once the pipe is full, cwnd also gets the ack-aggregation allowance (`extra_acked`, as Linux since 4.19):
aioquic's receiver delays ACKs by up to 1 ms and a Python peer acks in bursts as it gets
scheduled, so on short paths 2 x BDP from the min RTT alone would starve the sender.
Delivery rate: draft-cheng-iccrg-delivery-rate-estimation, one sample per ACK frame (as Linux
per ACK): aioquic reports acked packets one by one, which only updates counters; the model
(rate sample, round trips, state, cwnd, pacing rate) is updated once when the frame ends
(before the RTT sample, a loss, the next send, or after the recovery's `on_ack_received`).
aioquic's `QuicSentPacket` is a
plain dataclass, so each packet carries its (delivered, delivered_time, first_sent_time,
app_limited, departure time) as an extra attribute `bbr_rs` set at send time. aioquic has no app-limited
signal; the pacer infers one: a send slot granted with cwnd room that no packet used means
the sender had nothing to send (handshake, waiting for the peer's answer, flow control).
App-limited samples neither lower the bandwidth estimate nor end STARTUP.

Three measures against the timing noise of Python endpoints (found on an emulated 100 Mbit/s,
50 ms path, where the bandwidth estimate ran 3-7 % high and kept the one-BDP queue
overflowing): rate samples use each packet's departure time at the pacing rate (EDT) rather
than the time its burst was handed over; ACK times are corrected by the ack delay the peer
reports; and once the pipe is full, on paths of 10 ms or more, a round's samples are pooled
(bytes over seconds) instead of taking the highest. The pacer keeps up to 8 ms of credit, so
a wake-up that comes late on a busy machine does not lose sending time, and waits for 2 ms of
credit between wake-ups.

Pacing: aioquic's recovery paces with `QuicPacketPacer.update_rate(cwnd, srtt)` (rate
cwnd/srtt), called only after RTT samples and losses. Importing this module wraps
`QuicPacketRecovery.__init__` so that a recovery whose controller is BBR gets a `BbrPacer`,
which the controller drives directly with `pacing_gain x btl_bw` on every change.
"""

from __future__ import annotations

import math
import os
import random
from collections import deque
from collections.abc import Iterable
from typing import Any

from aioquic.quic import recovery as _recovery
from aioquic.quic.congestion.base import QuicCongestionControl, register_congestion_control
from aioquic.quic.packet_builder import QuicSentPacket

HIGH_GAIN = 2 / math.log(2)  # 2.885: doubles the sending rate each round in STARTUP
DRAIN_GAIN = 1 / HIGH_GAIN
PROBE_BW_GAINS = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
CWND_GAIN = 2.0
BW_WINDOW_ROUNDS = 10
MIN_RTT_WINDOW_S = 10.0
PROBE_RTT_DURATION_S = 0.2
MIN_PIPE_PACKETS = 4  # cwnd floor, also the PROBE_RTT cwnd
FULL_BW_GROWTH = 1.25
FULL_BW_ROUNDS = 3
# BBRv2's loss exit from STARTUP: more than 2 % of a round's data lost and at least 8 packets.
# (8 packets keep a few random losses in a short early round from ending STARTUP; at 1 %
# random loss a round of ~400 packets reaches 8 losses and 2 % only with a few % chance.)
STARTUP_LOSS_THRESH = 0.02
STARTUP_FULL_LOSS_COUNT = 8
POOLED_BW_MIN_RTT_S = 0.010  # from this min RTT on, PROBE_BW pools a round's rate samples
EXTRA_ACKED_WINDOW_ROUNDS = 5  # two slots: a max over 5-10 round trips, as Linux
EXTRA_ACKED_MAX_S = 0.1  # aggregation allowance at most 100 ms of data at btl_bw
# The RTT term of the cwnd target is at least 2 ms: a Python peer acks on a 1 ms delayed-ACK
# timer and the pacer releases ~1 ms bursts, so shorter round trips cannot be ack-clocked and
# 2 x BDP of a 0.3 ms loopback RTT would leave the sender idle between ACK bursts.
CWND_RTT_FLOOR_S = 0.002
INITIAL_WINDOW_PACKETS = 10
# The pacer's burst allowance: 16 datagrams, or up to PACER_BURST_S of data at high rates
# (within cwnd/4). A Python sender on a busy machine wakes up milliseconds late; credit beyond
# the allowance is sending time lost for good, which also lowers the delivery-rate samples.
PACER_BURST_PACKETS = 16
PACER_BURST_S = float(os.environ.get("QTP_BBR_BURST_MS", "8")) / 1000
PACER_WAKE_S = 0.002  # a waiting sender wakes up for this much credit (capped by the burst)

STARTUP, DRAIN, PROBE_BW, PROBE_RTT = "startup", "drain", "probe_bw", "probe_rtt"


class BbrPacer(_recovery.QuicPacketPacer):
    """aioquic's token-bucket pacer, driven by BBR's pacing rate instead of cwnd/srtt."""

    def __init__(self, *, max_datagram_size: int, cc: BbrCongestionControl) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self._cc = cc
        cc.pacer = self
        # A send slot granted with cwnd room that no packet used: the sender had nothing to
        # send, i.e. it was application- (or flow-control-) limited.
        self._grant_with_room = False

    # aioquic's bucket lets a packet go whenever *any* credit has accrued and then zeroes it,
    # so ack-clocked sends (wake-ups every ack) escape pacing. Here a packet needs a whole
    # packet time of credit, and credit spent is spent.
    def next_send_time(self, now: float) -> float | None:
        cc = self._cc
        if self._grant_with_room:
            cc.on_app_limited()
        if self.packet_time is not None:
            self.update_bucket(now=now)
            # (1 µs slack: a timer firing at the computed time must find enough credit)
            if self.bucket_time + _recovery.K_MICRO_SECOND < self.packet_time:
                self._grant_with_room = False
                # Wake up when PACER_WAKE_S of credit (at most the burst allowance) has
                # accrued, not one packet's: each wake-up of a Python sender costs a loop
                # iteration and a packet-building call, and asyncio sleeps >= 1 ms anyway.
                quantum = min(self.bucket_max, max(self.packet_time, PACER_WAKE_S))
                return now + quantum - self.bucket_time
        self._grant_with_room = cc.bytes_in_flight + self._max_datagram_size <= cc.congestion_window
        return None

    def update_after_send(self, now: float) -> None:
        self._grant_with_room = False
        if self.packet_time is not None:
            self.update_bucket(now=now)
            self.bucket_time = max(self.bucket_time - self.packet_time, -self.bucket_max)

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        # Called by the recovery after RTT samples and losses: keep BBR's rate once it has one.
        if self._cc.pacing_rate > 0:
            self.set_rate(self._cc.pacing_rate)
        else:
            super().update_rate(congestion_window, smoothed_rtt)

    def set_rate(self, rate: float) -> None:
        """Pace at `rate` bytes/s."""
        mds = self._max_datagram_size
        self.packet_time = max(_recovery.K_MICRO_SECOND, min(mds / rate, _recovery.K_SECOND))
        burst = max(PACER_BURST_PACKETS * mds / rate, PACER_BURST_S)
        cwnd_quarter = self._cc.congestion_window / 4 / rate
        self.bucket_max = max(2 * mds / rate, min(cwnd_quarter, burst))
        if self.bucket_time > self.bucket_max:
            self.bucket_time = self.bucket_max


class BbrCongestionControl(QuicCongestionControl):
    """BBR v1: see the module docstring. Rates are bytes/s, times seconds."""

    def __init__(self, *, max_datagram_size: int, rng: random.Random | None = None) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self._mds = max_datagram_size
        self._rng = rng or random.Random()
        self.congestion_window = INITIAL_WINDOW_PACKETS * max_datagram_size
        self.pacer: BbrPacer | None = None
        self.pacing_rate = 0.0
        # delivery-rate estimation
        self._delivered = 0
        self._delivered_time = 0.0
        self._first_sent_time = 0.0
        self._departure = 0.0  # when the last packet sent leaves at the pacing rate
        self._seen_rtt = False
        self._prior_delivered = 0  # delivered-at-send of the newest packet acked so far
        self._ack_delay = 0.0  # the ack delay the ACK frame being processed reports
        self._acked_bytes = 0  # acked since the last _flush_acks...
        self._acked_packet: QuicSentPacket | None = None  # ...and the newest packet among them
        self._app_limited_until = 0  # delivered count that ends the app-limited phase (0: not)
        # round trips
        self._round_count = 0
        self._next_round_delivered = 0
        # model
        self._bw_rounds: deque[list[float]] = deque()  # [round, value, bytes, seconds]
        self.btl_bw = 0.0
        self.min_rtt = math.inf
        self._min_rtt_stamp = 0.0
        # state machine
        self.state = STARTUP
        self.pacing_gain = HIGH_GAIN
        self.cwnd_gain = HIGH_GAIN
        self._filled_pipe = False
        self._full_bw = 0.0
        self._full_bw_count = 0
        self._cycle_index = 0
        self._cycle_stamp = 0.0
        self._probe_rtt_done_stamp: float | None = None
        self._probe_rtt_round_done = False
        self._prior_cwnd = 0
        self._lost_in_cycle = False
        # losses in the current round trip (for the STARTUP loss exit)
        self._round_lost_packets = 0
        self._round_lost_bytes = 0
        self._round_start_delivered = 0
        self._prev_round_delivered = 0
        # ack aggregation (extra_acked)
        self._extra_acked = [0.0, 0.0]
        self._extra_acked_slot = 0
        self._extra_acked_slot_rounds = 0
        self._extra_acked_start = 0.0
        self._extra_acked_delivered = 0
        # counters for reports
        self.packets_lost = 0
        self.bytes_lost = 0

    # -- aioquic hooks ----------------------------------------------------------------------

    def on_packet_sent(self, *, packet: QuicSentPacket) -> None:
        if self._acked_packet is not None:
            self._flush_acks()
        # Departure time for rate samples (Linux's EDT): aioquic stamps a whole burst with one
        # time, but the packets leave one pacing interval apart; stamping them all alike
        # compresses send intervals by up to the burst and overestimates the bandwidth.
        # (Not in STARTUP: there a burst's packets leave faster than the stale pacing rate
        # says, and early samples must rather over- than underestimate.)
        sent = packet.sent_time
        if self._filled_pipe and self.pacing_rate > 0:
            if sent < self._departure:
                sent = self._departure
            self._departure = sent + packet.sent_bytes / self.pacing_rate
        if self.bytes_in_flight == 0:
            # Starting from idle: the flight (and its ack-rate interval) begins now.
            self._first_sent_time = sent
            self._delivered_time = packet.sent_time
        packet.bbr_rs = (
            self._delivered,
            self._delivered_time,
            self._first_sent_time,
            self._app_limited_until != 0,
            sent,
        )
        self.bytes_in_flight += packet.sent_bytes

    def on_packet_acked(self, *, now: float, packet: QuicSentPacket) -> None:
        # Per packet only the counters; the model is updated once per ACK frame (`_flush_acks`),
        # as Linux does per ACK: aioquic calls this for every packet an ACK covers, in packet
        # number order, so the last one is the most recently sent (the rate sample's packet).
        size = packet.sent_bytes
        self.bytes_in_flight -= size
        self._delivered += size
        # when the receiver got it, on our clock shifted by the return delay: an ACK held back
        # by the receiver (its ack delay, reported in the frame) must not look like a slower
        # delivery, nor the next one, sent sooner, like a faster one
        self._delivered_time = now - self._ack_delay
        self._acked_bytes += size
        self._acked_packet = packet

    def _flush_acks(self) -> None:
        """Update the model with the packets acked since the last call (one ACK frame)."""
        packet = self._acked_packet
        if packet is None:
            return
        self._acked_packet = None
        acked = self._acked_bytes
        self._acked_bytes = 0
        now = self._delivered_time
        p_delivered, p_delivered_time, p_first_sent, app_limited, sent = packet.bbr_rs
        if self._app_limited_until and self._delivered > self._app_limited_until:
            self._app_limited_until = 0

        round_start = False
        if p_delivered >= self._next_round_delivered:
            self._next_round_delivered = self._delivered
            self._round_count += 1
            round_start = True
            self._prev_round_delivered = self._delivered - self._round_start_delivered
            self._round_start_delivered = self._delivered
            self._round_lost_packets = self._round_lost_bytes = 0
        if p_delivered >= self._prior_delivered:
            self._prior_delivered = p_delivered
            self._first_sent_time = sent

        # Rate sample: data delivered since this packet was sent, over the longer of its send
        # and ack intervals (the shorter one can be compressed by bursts or ack aggregation).
        # Intervals shorter than the min RTT are discarded: they would overestimate.
        interval = max(sent - p_first_sent, now - p_delivered_time)
        if interval > 0 and (interval >= self.min_rtt or math.isinf(self.min_rtt)):
            self._update_bw(self._delivered - p_delivered, interval, app_limited)

        self._update_ack_aggregation(now, acked, round_start)
        self._update_state(now, round_start, app_limited)
        self._update_cwnd(acked)
        self._update_pacing_rate()

    def on_packets_expired(self, *, packets: Iterable[QuicSentPacket]) -> None:
        self._flush_acks()
        for packet in packets:
            self.bytes_in_flight -= packet.sent_bytes

    def on_packets_lost(self, *, now: float, packets: Iterable[QuicSentPacket]) -> None:
        # BBR v1 keeps its model on loss: random loss says nothing about the bottleneck.
        self._flush_acks()
        for packet in packets:
            self.bytes_in_flight -= packet.sent_bytes
            self.packets_lost += 1
            self.bytes_lost += packet.sent_bytes
            self._round_lost_packets += 1
            self._round_lost_bytes += packet.sent_bytes
        self._lost_in_cycle = True
        if self.state == STARTUP:
            self._check_startup_loss()

    def on_persistent_congestion(self) -> None:
        # Like an RTO in Linux BBR: restart from the minimum window; acks regrow it to target.
        self.congestion_window = MIN_PIPE_PACKETS * self._mds

    def on_rtt_measurement(self, *, now: float, rtt: float) -> None:
        self._flush_acks()
        if rtt <= self.min_rtt or now - self._min_rtt_stamp > MIN_RTT_WINDOW_S:
            self.min_rtt = rtt
            self._min_rtt_stamp = now
        if not self._seen_rtt:
            # The first RTT sample (as Linux's bbr_init_pacing_rate_from_rtt): pace the window
            # over one RTT at high gain, unless a sample already shows more. The handshake's
            # tiny delivery-rate samples come first, and STARTUP only ever raises the rate, so
            # without this it would start from them (0.2 Mbit/s: ~200 ms lost on a 50 ms path).
            self._seen_rtt = True
            rate = HIGH_GAIN * self.congestion_window / max(rtt, 0.001)
            if rate > self.pacing_rate:
                self.pacing_rate = rate
                self._push_pacing_rate()

    def get_log_data(self) -> dict[str, Any]:
        data = super().get_log_data()
        data.update(self.snapshot())
        return data

    # -- model ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The model's state, for logs and transfer statistics."""
        return {
            "bbr_state": self.state,
            "btl_bw_mbps": round(self.btl_bw * 8 / 1e6, 3),
            "min_rtt_ms": None if math.isinf(self.min_rtt) else round(self.min_rtt * 1e3, 3),
            "pacing_rate_mbps": round(self.pacing_rate * 8 / 1e6, 3),
            "pacing_gain": self.pacing_gain,
            "round_count": self._round_count,
            "extra_acked_bytes": int(self.extra_acked),
        }

    def on_app_limited(self) -> None:
        """The sender had room to send but nothing to send: samples of the data in flight
        now (and sent until it is delivered) show the application's rate, not the path's."""
        self._app_limited_until = (self._delivered + self.bytes_in_flight) or 1

    def _update_bw(self, delivered: float, interval: float, app_limited: bool) -> None:
        """Windowed max filter over the last 10 rounds of one value per round: the round's max
        rate sample while filling the pipe (STARTUP: the rate grows within a round), then the
        round's samples pooled (their delivered bytes over their intervals). A Python
        receiver acks every few ms and a Python sender reads ACKs when it gets the CPU, so
        single samples scatter by several % around the delivery rate; the max of them
        overestimates the bottleneck, the pacing rate follows and the queue fills up to cwnd
        (losses on a one-BDP buffer). A probe round at gain 1.25 still raises the pooled rate
        when there is more bandwidth. Pooled only on paths of POOLED_BW_MIN_RTT_S or more: on
        shorter ones a round is one or two ACK bursts, and only the max shows the bottleneck."""
        sample = delivered / interval
        if app_limited and sample < self.btl_bw:
            return  # an app-limited sample only counts when it shows more bandwidth
        rounds = self._bw_rounds
        if rounds and rounds[-1][0] == self._round_count:
            r = rounds[-1]
            r[2] += delivered
            r[3] += interval
            pooled = self._filled_pipe and self.min_rtt >= POOLED_BW_MIN_RTT_S
            r[1] = r[2] / r[3] if pooled else max(r[1], sample)
        else:
            rounds.append([self._round_count, sample, delivered, interval])
            while rounds[0][0] <= self._round_count - BW_WINDOW_ROUNDS:
                rounds.popleft()
        self.btl_bw = max(r[1] for r in rounds)

    def _update_ack_aggregation(self, now: float, acked: int, round_start: bool) -> None:
        """Track how much more was acked than btl_bw explains (ACK bursts), max over ~10 rounds."""
        slots = self._extra_acked
        if round_start:
            self._extra_acked_slot_rounds += 1
            if self._extra_acked_slot_rounds >= EXTRA_ACKED_WINDOW_ROUNDS:
                self._extra_acked_slot_rounds = 0
                self._extra_acked_slot ^= 1
                slots[self._extra_acked_slot] = 0.0
        expected = self.btl_bw * (now - self._extra_acked_start)
        if self._extra_acked_delivered <= expected:
            # acks are not ahead of the model: start a new aggregation epoch
            self._extra_acked_delivered = 0
            self._extra_acked_start = now
            expected = 0.0
        self._extra_acked_delivered += acked
        extra = min(self._extra_acked_delivered - expected, self.congestion_window)
        if extra > slots[self._extra_acked_slot]:
            slots[self._extra_acked_slot] = extra

    @property
    def extra_acked(self) -> float:
        """The ack-aggregation allowance in bytes."""
        return min(max(self._extra_acked), self.btl_bw * EXTRA_ACKED_MAX_S)

    def _inflight_target(self, gain: float, rtt_floor: float = 0.0) -> float:
        if self.btl_bw == 0.0 or math.isinf(self.min_rtt):
            return INITIAL_WINDOW_PACKETS * self._mds
        # + 3 datagrams: room for delayed/aggregated acks (Linux's quantization budget)
        return gain * self.btl_bw * max(self.min_rtt, rtt_floor) + 3 * self._mds

    def _update_state(self, now: float, round_start: bool, app_limited: bool) -> None:
        if self.state == STARTUP and round_start and not app_limited:
            self._check_full_pipe()
        if self.state == DRAIN and self.bytes_in_flight <= self._inflight_target(1.0):
            self._enter_probe_bw(now)
        if self.state == PROBE_BW:
            self._update_gain_cycle(now)
        if self.state != PROBE_RTT and now - self._min_rtt_stamp > MIN_RTT_WINDOW_S:
            self._enter_probe_rtt()
        if self.state == PROBE_RTT:
            self._handle_probe_rtt(now, round_start)

    def _check_full_pipe(self) -> None:
        if self.btl_bw >= self._full_bw * FULL_BW_GROWTH:
            self._full_bw = self.btl_bw
            self._full_bw_count = 0
            return
        self._full_bw_count += 1
        if self._full_bw_count >= FULL_BW_ROUNDS:
            self._enter_drain()

    def _check_startup_loss(self) -> None:
        """End STARTUP when this round's loss shows the bottleneck queue overflowing.

        Checked on every loss report rather than at the round's end: the overflow keeps
        dropping about (2.89 - 1) / 2.89 of what STARTUP sends, so waiting for the round to
        end would cost up to another round trip of losses. The ratio's denominator is at least
        the previous round's delivery (rounds grow in STARTUP), so a few losses among the
        first acks of a round do not count as 2 %."""
        lost = self._round_lost_bytes
        if self._round_lost_packets < STARTUP_FULL_LOSS_COUNT:
            return
        sent = max(self._delivered - self._round_start_delivered, self._prev_round_delivered) + lost
        if lost > STARTUP_LOSS_THRESH * sent:
            # The bandwidth filter already holds the bottleneck rate: the queue only
            # overflows once STARTUP sends faster than the bottleneck delivers.
            self._enter_drain()

    def _enter_drain(self) -> None:
        self._filled_pipe = True
        self.state = DRAIN
        self.pacing_gain = DRAIN_GAIN
        self.cwnd_gain = HIGH_GAIN
        self._update_pacing_rate()

    def _enter_probe_bw(self, now: float) -> None:
        self.state = PROBE_BW
        self.cwnd_gain = CWND_GAIN
        # Start at a random phase other than the 0.75 one, so flows do not probe in lockstep.
        self._cycle_index = self._rng.choice([i for i in range(len(PROBE_BW_GAINS)) if i != 1])
        self._cycle_stamp = now
        self.pacing_gain = PROBE_BW_GAINS[self._cycle_index]

    def _update_gain_cycle(self, now: float) -> None:
        elapsed = now - self._cycle_stamp > self.min_rtt
        gain = self.pacing_gain
        if gain > 1.0:
            advance = elapsed and (self._lost_in_cycle or self.bytes_in_flight >= self._inflight_target(gain))
        elif gain < 1.0:
            advance = elapsed or self.bytes_in_flight <= self._inflight_target(1.0)
        else:
            advance = elapsed
        if advance:
            self._cycle_index = (self._cycle_index + 1) % len(PROBE_BW_GAINS)
            self._cycle_stamp = now
            self._lost_in_cycle = False
            self.pacing_gain = PROBE_BW_GAINS[self._cycle_index]

    def _enter_probe_rtt(self) -> None:
        self.state = PROBE_RTT
        self.pacing_gain = 1.0
        self.cwnd_gain = 1.0
        self._prior_cwnd = self.congestion_window
        self._probe_rtt_done_stamp = None

    def _handle_probe_rtt(self, now: float, round_start: bool) -> None:
        if self._probe_rtt_done_stamp is None:
            if self.bytes_in_flight <= MIN_PIPE_PACKETS * self._mds:
                self._probe_rtt_done_stamp = now + PROBE_RTT_DURATION_S
                self._probe_rtt_round_done = False
                self._next_round_delivered = self._delivered
            return
        if round_start:
            self._probe_rtt_round_done = True
        if self._probe_rtt_round_done and now >= self._probe_rtt_done_stamp:
            self._min_rtt_stamp = now  # the min RTT is fresh again (or confirmed)
            self.congestion_window = max(self.congestion_window, self._prior_cwnd)
            if self._filled_pipe:
                self._enter_probe_bw(now)
            else:
                self.state = STARTUP
                self.pacing_gain = self.cwnd_gain = HIGH_GAIN

    def _update_cwnd(self, acked: int) -> None:
        floor = MIN_PIPE_PACKETS * self._mds
        if self.state == PROBE_RTT:
            self.congestion_window = floor
            return
        target = self._inflight_target(self.cwnd_gain, CWND_RTT_FLOOR_S)
        cwnd = self.congestion_window
        if self._filled_pipe:
            cwnd = min(cwnd + acked, target + self.extra_acked)
        elif cwnd < target or self._delivered < INITIAL_WINDOW_PACKETS * self._mds:
            cwnd += acked
        self.congestion_window = int(max(cwnd, floor))

    def _update_pacing_rate(self) -> None:
        if self.btl_bw == 0.0:
            return
        rate = self.pacing_gain * self.btl_bw
        # In STARTUP never slow down: early samples underestimate the path.
        if rate != self.pacing_rate and (self._filled_pipe or rate > self.pacing_rate):
            self.pacing_rate = rate
            self._push_pacing_rate()

    def _push_pacing_rate(self) -> None:
        if self.pacer is not None:
            self.pacer.set_rate(self.pacing_rate)


def _install_pacer(recovery: Any) -> None:
    """Give a recovery whose controller is BBR a pacer that BBR drives, and let BBR see the
    end of every ACK frame (an ACK without an RTT sample or loss would leave it pending)."""
    cc = getattr(recovery, "_cc", None)
    pacer = getattr(recovery, "_pacer", None)
    if isinstance(cc, BbrCongestionControl) and isinstance(pacer, _recovery.QuicPacketPacer):
        recovery._pacer = BbrPacer(max_datagram_size=pacer._max_datagram_size, cc=cc)
        on_ack_received = recovery.on_ack_received

        def on_ack_received_then_flush(**kwargs: Any) -> None:
            cc._ack_delay = min(kwargs.get("ack_delay", 0.0), recovery.max_ack_delay)
            on_ack_received(**kwargs)
            cc._flush_acks()
            cc._ack_delay = 0.0

        recovery.on_ack_received = on_ack_received_then_flush


def _wrap_recovery_init() -> None:
    init = _recovery.QuicPacketRecovery.__init__
    if getattr(init, "_bbr_wrapped", False):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        _install_pacer(self)

    __init__._bbr_wrapped = True  # type: ignore[attr-defined]
    _recovery.QuicPacketRecovery.__init__ = __init__  # type: ignore[method-assign]


def _factory(*, max_datagram_size: int) -> BbrCongestionControl:
    return BbrCongestionControl(max_datagram_size=max_datagram_size)


register_congestion_control("bbr", _factory)
_wrap_recovery_init()
