"""Sans-I/O model of one link direction: loss, rate-limited FIFO with a queue limit, delay, jitter.

Pure and deterministic: the engine (or a test) offers each frame with its arrival time and gets
back its delivery time, or None when the frame is dropped. The same seed and the same sequence
of offers give the same drops and delays, whatever the machine load.

Order of the stages, per frame:
1. link down -> dropped (`dropped_down`);
2. loss model: Bernoulli(loss_pct), or simple Gilbert (Gilbert-Elliott with loss 0 in the good
   and 100 % in the bad state) when `loss_burst` is set: r = 1/loss_burst, p = r*L/(1-L), so the
   mean loss is L = loss_pct/100 and the mean burst length loss_burst (`dropped_loss`);
   applies to IP frames only (`lossy=True`; callers decide with `is_ip_frame`): ARP and other
   link-layer frames depend on timing, and the loss draws would then shift from run to run.
   One random draw per lossy frame, from an RNG of its own, so the loss pattern depends only
   on the sequence of IP frames, not on timing, jitter or other frames;
3. rate limiter: a FIFO serialising at bw_mbps over the whole frame (L2 length, as tc counts
   it), departure = max(now, last_departure) + size*8/rate; tail drop when the FIFO already
   holds `queue_limit_pkts(mtu)` frames, the one being serialised included (`dropped_queue`);
4. propagation: delivery = departure + delay_ms + N(0, jitter_ms), the total delay truncated at 0
   (jitter from a second RNG, seeded from the same seed); without `reorder` delivery times are
   made monotonic (FIFO order kept).
"""
from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass

from ..topology.model import DEFAULT_MTU, LinkParams

__all__ = ["DirectionModel", "QDelayHistogram", "is_ip_frame", "validate_params"]

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8)
JITTER_SEED_SALT = 0x6A177E12  # the jitter RNG's seed: the direction's seed XOR this


def is_ip_frame(frame: bytes) -> bool:
    """Whether an Ethernet frame carries IPv4 or IPv6 (behind up to two VLAN tags): the frames
    the loss model applies to."""
    offset = 12
    for _ in range(3):
        if len(frame) < offset + 2:
            return False
        ethertype = frame[offset] << 8 | frame[offset + 1]
        if ethertype not in VLAN_TPIDS:
            return ethertype in (ETH_IPV4, ETH_IPV6)
        offset += 4
    return False


def validate_params(params: LinkParams) -> None:
    """Raise ValueError naming the field when a direction's parameters cannot be honoured."""
    if params.bw_mbps is not None and not params.bw_mbps > 0:
        raise ValueError(f"bw_mbps must be > 0 or unset, got {params.bw_mbps}")
    if params.delay_ms < 0 or params.jitter_ms < 0:
        raise ValueError("delay_ms and jitter_ms must be >= 0")
    if not 0 <= params.loss_pct <= 100:
        raise ValueError(f"loss_pct must be within 0..100, got {params.loss_pct}")
    if params.loss_burst is not None:
        if params.loss_burst < 1:
            raise ValueError(f"loss_burst must be >= 1 packet, got {params.loss_burst}")
        loss = params.loss_pct / 100
        if loss >= 1 or (1 / params.loss_burst) * loss / (1 - loss) > 1:
            raise ValueError(
                f"loss_pct={params.loss_pct} with loss_burst={params.loss_burst} is not a Gilbert "
                "model (needs loss_pct/(100-loss_pct) <= loss_burst)"
            )
    if params.queue_limit_pkts(DEFAULT_MTU) < 1:
        raise ValueError("queue limit must be at least 1 packet")


class QDelayHistogram:
    """Queueing-delay distribution in fixed memory: 10 µs bins up to 10 ms, 1 ms bins up to 10 s.

    Percentiles are therefore exact to 10 µs below 10 ms; the maximum is kept exactly.
    """

    FINE_S = 1e-5
    FINE_BINS = 1000  # covers [0, 10 ms)
    COARSE_S = 1e-3
    COARSE_BINS = 9990  # covers [10 ms, 10 s); the last bin takes everything above

    def __init__(self) -> None:
        self.bins = [0] * (self.FINE_BINS + self.COARSE_BINS)
        self.zeros = 0  # frames that found the FIFO empty
        self.count = 0
        self.max_s = 0.0

    def add(self, wait_s: float) -> None:
        self.count += 1
        if wait_s <= 0.0:
            self.zeros += 1
            return
        if wait_s > self.max_s:
            self.max_s = wait_s
        if wait_s < 0.01:
            self.bins[int(wait_s * 1e5)] += 1
        else:
            self.bins[min(self.FINE_BINS + int((wait_s - 0.01) * 1e3), len(self.bins) - 1)] += 1

    def add_zeros(self, n: int) -> None:
        """Frames that passed without a rate limiter (no queue at all)."""
        self.count += n
        self.zeros += n

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100) in seconds: the middle of its bin, at most the maximum."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q / 100 * self.count))
        if rank <= self.zeros:
            return 0.0
        seen = self.zeros
        for i, n in enumerate(self.bins):
            seen += n
            if seen >= rank:
                if i < self.FINE_BINS:
                    mid = (i + 0.5) * self.FINE_S
                else:
                    mid = 0.01 + (i - self.FINE_BINS + 0.5) * self.COARSE_S
                return min(mid, self.max_s)
        return self.max_s

    def reset(self) -> None:
        self.__init__()


@dataclass
class Counters:
    forwarded_pkts: int = 0
    forwarded_bytes: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    dropped_down: int = 0


class DirectionModel:
    """Scheduler of one link direction: `offer(size, now)` -> delivery time or None (dropped)."""

    def __init__(self, params: LinkParams, rng_seed: int, mtu: int = DEFAULT_MTU):
        self.mtu = mtu
        self.rng = random.Random(rng_seed)  # loss draws only
        self.jitter_rng = random.Random(rng_seed ^ JITTER_SEED_SALT)
        self._random = self.rng.random
        self._gauss = self.jitter_rng.gauss
        self.counters = Counters()
        self.qdelay = QDelayHistogram()
        self.down = False
        self._departures: deque[float] = deque()  # departure times of frames in the FIFO
        self._last_departure = -math.inf
        self._last_delivery = -math.inf
        self._bad = False  # Gilbert state
        self.params = params
        self.update(params)

    def update(self, params: LinkParams) -> None:
        """Apply new parameters from now on; frames already scheduled keep their times."""
        validate_params(params)
        self.params = params
        self._rate_bps = params.bw_mbps * 1e6 if params.bw_mbps is not None else None
        self._qlimit = params.queue_limit_pkts(self.mtu)
        self._delay = params.delay_ms / 1e3
        self._jitter = params.jitter_ms / 1e3
        self._reorder = params.reorder
        self._loss = params.loss_pct / 100
        if params.loss_burst is not None and self._loss > 0:
            self._ge_r = 1.0 / params.loss_burst
            self._ge_p = self._ge_r * self._loss / (1 - self._loss)
        else:
            self._ge_r = self._ge_p = None
        if self._rate_bps is None:  # no FIFO any more: what it held has left
            self._departures.clear()

    def set_down(self, down: bool) -> None:
        self.down = down

    def discard(self, pkts: int, nbytes: int) -> None:
        """The engine threw away frames this model had accepted (link went down): recount them
        as dropped and forget the FIFO's schedule."""
        c = self.counters
        c.forwarded_pkts -= pkts
        c.forwarded_bytes -= nbytes
        c.dropped_down += pkts
        self._departures.clear()
        self._last_departure = self._last_delivery = -math.inf

    def _gilbert_lost(self, u: float) -> bool:
        if self._bad:
            if u < self._ge_r:
                self._bad = False
        elif u < self._ge_p:
            self._bad = True
        return self._bad

    def offer(self, size_bytes: int, now: float, lossy: bool = True) -> float | None:
        """Delivery time (same clock as `now`) of a frame of `size_bytes` arriving at `now`,
        or None when it is dropped (counted by reason). `lossy=False` (a non-IP frame, see
        `is_ip_frame`) skips the loss stage, and its random draw.

        The engine calls this for every frame: stages are inlined and skipped when unused.
        """
        c = self.counters
        if self.down:
            c.dropped_down += 1
            return None
        if self._loss and lossy:
            u = self._random()
            if (u < self._loss) if self._ge_p is None else self._gilbert_lost(u):
                c.dropped_loss += 1
                return None
        h = self.qdelay
        rate = self._rate_bps
        if rate is None:
            departure = now
            h.count += 1
            h.zeros += 1
        else:
            deps = self._departures
            if len(deps) >= self._qlimit:  # purge lazily: only the limit needs an exact count
                while deps and deps[0] <= now:
                    deps.popleft()
                if len(deps) >= self._qlimit:
                    c.dropped_queue += 1
                    return None
            last = self._last_departure
            if last > now:
                h.add(last - now)
                departure = last + size_bytes * 8 / rate
            else:
                h.count += 1
                h.zeros += 1
                departure = now + size_bytes * 8 / rate
            self._last_departure = departure
            deps.append(departure)
        delivery = departure + self._delay
        if self._jitter:
            delivery += self._gauss(0.0, self._jitter)
            if delivery < departure:
                delivery = departure
        if not self._reorder:
            if delivery < self._last_delivery:
                delivery = self._last_delivery
            else:
                self._last_delivery = delivery
        c.forwarded_pkts += 1
        c.forwarded_bytes += size_bytes
        return delivery

    def queue_len(self, now: float) -> int:
        """Frames in the FIFO at `now` (the one being serialised included)."""
        return sum(1 for d in self._departures if d > now)

    def stats(self) -> dict:
        """Counters and queueing-delay percentiles (ms) as a flat dict."""
        c = self.counters
        h = self.qdelay
        return {
            "forwarded_pkts": c.forwarded_pkts,
            "forwarded_bytes": c.forwarded_bytes,
            "dropped_loss": c.dropped_loss,
            "dropped_queue": c.dropped_queue,
            "dropped_down": c.dropped_down,
            "qdelay_count": h.count,
            "qdelay_p50_ms": h.percentile(50) * 1e3,
            "qdelay_p99_ms": h.percentile(99) * 1e3,
            "qdelay_max_ms": h.max_s * 1e3,
        }

    def reset_stats(self) -> None:
        self.counters = Counters()
        self.qdelay.reset()
