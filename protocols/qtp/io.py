"""The I/O layer: asyncio drives aioquic's `QuicConnection` directly.

Design (why it is faster than aioquic's asyncio adapter):
- The UDP socket is ours (non-blocking, registered with `loop.add_reader`); when it is
  readable we read *every* waiting datagram (up to a batch limit), feed them all to
  `receive_datagram`, dispatch the events, and then call `datagrams_to_send` once for the
  batch (aioquic's protocol builds and sends a reply per datagram).
- Senders are pulled, not pushed: a stream that has data to send registers as a
  *producer*; before each `datagrams_to_send` the producers are topped up so that each
  stream holds only about a congestion window of unsent bytes (never the whole file).
- The timer is re-armed only when it must fire earlier; a timer that fires early simply
  re-arms, so the asyncio heap does not fill with cancelled handles.
- Socket buffers are enlarged (SO_RCVBUF/SO_SNDBUF, forced when allowed) and the datagram
  size follows the path MTU (IP_MTU of a connected socket) instead of aioquic's 1200.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import END_STATES, QuicConnection, QuicConnectionState
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.recovery import QuicPacketPacer

from . import fastpath, testhooks
from . import messages as m
from .messages import FrameDecoder, FrameHandler, ProtocolViolation, QtpError
from .transfer import ChunkSource

fastpath.install()  # bulk stream packets built without aioquic's generic per-packet checks

log = logging.getLogger("qtp")

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
IP_MTU = 14  # linux/in.h
IPV6_MTU = 24
SOCKET_BUFFER = 16 << 20
# A read batch ends after this many datagrams or bytes; then the events are handled, the
# reply (ACKs) goes out once, and the loop runs timers. Bigger batches cost the sender less
# (fewer ACKs to process), smaller ones keep ACKs timely when the receiver is the bottleneck.
MAX_BATCH = 64
MAX_BATCH_BYTES = 128 << 10
RECV_SIZE = 65535
# After a read that emptied the socket, stop watching it for this long (interrupt moderation):
# a paced flow arrives one datagram at a time, and a wake-up per datagram (loop iteration,
# event dispatch, reply check, timer) costs as much as handling it. The delay adds at most
# this to an ACK's or a datagram's latency. QTP_RX_COALESCE_MS overrides (0: off).
RX_COALESCE_S = float(os.environ.get("QTP_RX_COALESCE_MS", "1")) / 1000
AUTO_MTU_CAP = 9000  # discovered MTUs are used up to jumbo frames
LOW_WATER = 256 << 10  # a producer is topped up when its unsent bytes fall below this...
HIGH_WATER = 16 << 20  # ...to about a congestion window, at most this

# Receiver's ACK delay: a fraction of the min RTT within these bounds (aioquic: always 1 ms;
# the max_ack_delay we announce is aioquic's 25 ms). QTP_ACK_DELAY_MAX_MS overrides the cap.
ACK_DELAY_MIN_S = 0.001
ACK_DELAY_MAX_S = float(os.environ.get("QTP_ACK_DELAY_MAX_MS", "4")) / 1000
ACK_DELAY_RTT_FRACTION = 1 / 8

# UDP generic segmentation offload (Linux >= 4.18): one sendmsg carries a run of equal-size
# datagrams and the kernel splits it (in software when the device cannot), which saves a
# syscall and a trip through the socket layer per datagram. QTP_GSO=0 turns it off.
USE_GSO = os.environ.get("QTP_GSO", "1") != "0"
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = 103  # linux/udp.h
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS of older kernels (newer allow 128)
GSO_MAX_BYTES = 65000  # one UDP payload: < 65507 (IPv4), headers excluded
GSO_UNSUPPORTED = frozenset({errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP})

# Flow-control windows: aioquic doubles them as data arrives; start large so that a
# long fat path is not limited from the first round trip (>= 2 x BDP of 1 Gbit/s x 100 ms).
DEFAULT_MAX_DATA = 64 << 20
DEFAULT_MAX_STREAM_DATA = 32 << 20


# ---------------------------------------------------------------------------- sockets


def gso_runs(datagrams: list[tuple[bytes, Any]]) -> list[tuple[int, int, int]]:
    """Split `datagrams` into (start, stop, segment size) runs that one UDP_SEGMENT send can
    carry: one address, every datagram of the run's size except a shorter last one, at most
    GSO_MAX_SEGMENTS datagrams and GSO_MAX_BYTES bytes."""
    runs: list[tuple[int, int, int]] = []
    n = len(datagrams)
    i = 0
    while i < n:
        data, addr = datagrams[i]
        size = len(data)
        total = size
        j = i + 1
        while j < n and j - i < GSO_MAX_SEGMENTS:
            d, a = datagrams[j]
            ln = len(d)
            if a != addr or ln > size or total + ln > GSO_MAX_BYTES:
                break
            total += ln
            j += 1
            if ln < size:
                break  # a shorter datagram ends the run
        runs.append((i, j, size))
        i = j
    return runs


def set_socket_buffers(sock: socket.socket, size: int = SOCKET_BUFFER) -> tuple[int, int]:
    """Ask for `size`-byte send/receive buffers (forced past rmem_max when privileged);
    returns what the kernel granted."""
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
    )


def path_mtu(addr: tuple, family: int | None = None) -> int | None:
    """The kernel's MTU towards `addr` (route/interface MTU), or None if unknown."""
    family = family or (socket.AF_INET6 if ":" in addr[0] else socket.AF_INET)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(addr[:2] if family == socket.AF_INET else addr)
            if family == socket.AF_INET6:
                return s.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
            return s.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:
        return None


def datagram_size_for(mtu: int | None, family: int, *, cap: int | None = AUTO_MTU_CAP) -> int:
    """QUIC datagram size (UDP payload) for an MTU: MTU - IP - UDP headers."""
    if mtu is None:
        mtu = 1500
    if cap is not None:
        mtu = min(mtu, cap)
    overhead = 48 if family == socket.AF_INET6 else 28
    return max(SMALLEST_MAX_DATAGRAM_SIZE, min(mtu - overhead, 65507))


class UdpSocket:
    """A non-blocking UDP socket on the loop: batch reads, sends with a small overflow queue."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        on_datagrams: Callable[[list[tuple[bytes, Any]]], None],
        buffer_size: int | None = None,
    ):
        self.loop = loop
        self.sock = sock
        sock.setblocking(False)
        self._on_datagrams = on_datagrams
        self._queue: deque[tuple[bytes, Any]] = deque()
        self._writing = False
        self.closed = False
        self.bytes_sent = 0
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self.send_drops = 0
        self.gso = USE_GSO  # UDP_SEGMENT until the kernel refuses it
        self.gso_sends = 0  # sendmsg/sendto calls made while sending with GSO
        self.batches_received = 0
        self.rx_coalesce = RX_COALESCE_S
        self._paused = False
        self.rcvbuf, self.sndbuf = set_socket_buffers(sock, buffer_size or SOCKET_BUFFER)
        loop.add_reader(sock.fileno(), self._readable)

    @property
    def local_address(self) -> tuple:
        return self.sock.getsockname()

    def _readable(self) -> None:
        recvfrom = self.sock.recvfrom
        batch = []
        append = batch.append
        nbytes = 0
        drained = False
        try:
            for _ in range(MAX_BATCH):
                item = recvfrom(RECV_SIZE)
                append(item)
                nbytes += len(item[0])
                if nbytes >= MAX_BATCH_BYTES:
                    break
        except (BlockingIOError, InterruptedError):
            drained = True
        except OSError as exc:  # e.g. ECONNREFUSED from an ICMP error on a connected socket
            if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EMSGSIZE):
                log.debug("recvfrom: %s", exc)
        if batch:
            self.datagrams_received += len(batch)
            self.batches_received += 1
            if drained and self.rx_coalesce > 0 and not self._paused:
                # Let the next datagrams gather in the socket buffer instead of waking up for
                # each one: a paced flow arrives a datagram at a time, and every wake-up costs
                # a loop iteration, an event dispatch and a reply check.
                self._paused = True
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(self.rx_coalesce, self._resume)
            self._on_datagrams(batch)

    def _resume(self) -> None:
        self._paused = False
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._readable)
            self._readable()

    def send(self, datagrams: list[tuple[bytes, Any]]) -> None:
        if self.closed:
            return
        if self._queue:
            self._queue.extend(datagrams)
            return
        if self.gso and len(datagrams) > 1:
            self._send_gso(datagrams)
            return
        sendto = self.sock.sendto
        sent = 0
        nbytes = 0
        try:
            for data, addr in datagrams:
                sendto(data, addr)
                sent += 1
                nbytes += len(data)
        except (BlockingIOError, InterruptedError):
            self._queue.extend(datagrams[sent:])
            self._start_writing()
        except OSError as exc:
            # an unreachable peer: QUIC recovers (or times out); drop this batch
            self.send_drops += len(datagrams) - sent
            log.debug("sendto: %s", exc)
        self.bytes_sent += nbytes
        self.datagrams_sent += sent

    def _send_gso(self, datagrams: list[tuple[bytes, Any]]) -> None:
        """One sendmsg per run of equal-size datagrams (UDP_SEGMENT: the kernel splits it)."""
        sendmsg = self.sock.sendmsg
        for start, stop, size in gso_runs(datagrams):
            addr = datagrams[start][1]
            try:
                if stop - start == 1:
                    self.sock.sendto(datagrams[start][0], addr)
                else:
                    bufs = [d for d, _ in datagrams[start:stop]]
                    sendmsg(bufs, [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))], 0, addr)
            except (BlockingIOError, InterruptedError):
                self._queue.extend(datagrams[start:])
                self._start_writing()
                return
            except OSError as exc:
                if exc.errno in GSO_UNSUPPORTED and stop - start > 1:
                    log.debug("UDP GSO unavailable (%s): plain sends from now on", exc)
                    self.gso = False
                    self.send(datagrams[start:])
                    return
                self.send_drops += len(datagrams) - start
                log.debug("sendmsg: %s", exc)
                return
            for i in range(start, stop):
                self.bytes_sent += len(datagrams[i][0])
            self.datagrams_sent += stop - start
            self.gso_sends += 1

    def _start_writing(self) -> None:
        if not self._writing:
            self._writing = True
            self.loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        sendto = self.sock.sendto
        q = self._queue
        try:
            while q:
                data, addr = q[0]
                sendto(data, addr)
                q.popleft()
                self.bytes_sent += len(data)
                self.datagrams_sent += 1
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.send_drops += len(q)
            q.clear()
            log.debug("sendto: %s", exc)
        self._writing = False
        self.loop.remove_writer(self.sock.fileno())

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        if self._writing:
            with contextlib.suppress(Exception):
                self.loop.remove_writer(self.sock.fileno())
        self.sock.close()


# ---------------------------------------------------------------------------- streams


UNIX_OFFSET = time.time() - time.monotonic()  # loop.time() + this = unix time (approximately)


class ChunkSink:
    """Feeds a stream's CHUNK frames to its ChunkReceiver and counts arrivals per interval:
    the one receiving path of client downloads and server uploads (mix in before the handler)."""

    receiver: Any  # transfer.ChunkReceiver
    counter: Any  # IntervalCounter | None
    _loop_time: Callable[[], float]

    def on_chunk_start(self, index, offset, length, digest):
        self.receiver.start(index, offset, length, digest)

    def on_chunk_data(self, data):
        self.receiver.data(data)
        if self.counter is not None:
            self.counter.add(self._loop_time() + UNIX_OFFSET, len(data))

    def on_chunk_end(self):
        self.receiver.end()


class StreamHandler(FrameHandler):
    """One request/response exchange on one bidirectional QUIC stream."""

    allowed: frozenset[int] = frozenset()

    def __init__(self, conn: Conn, stream_id: int):
        self.conn = conn
        self.stream_id = stream_id
        self.decoder = FrameDecoder(self, self.allowed)
        self.finished = False  # our side is done (FIN or reset sent)
        self.last_activity = time.monotonic()

    # incoming
    def on_data(self, data: bytes, end: bool) -> None:
        if data:
            self.decoder.feed(data)
        if end:
            self.decoder.eof()
            self.on_eof()

    def on_eof(self) -> None:
        """The peer finished its side of the stream."""

    def on_reset(self, code: int) -> None:
        """The peer reset its side of the stream (or asked us to stop sending)."""
        self.fail(QtpError(code or m.ErrorCode.INTERNAL, "stream reset by peer"), send=False)

    def on_close(self, exc: Exception) -> None:
        """The connection ended before this exchange did."""

    # outgoing
    def send(self, data: bytes, end: bool = False) -> None:
        self.last_activity = time.monotonic()
        self.conn.write(self.stream_id, data, end)
        if end:
            self.finished = True

    def send_msg(self, msg: Any, end: bool = False) -> None:
        self.send(m.encode(msg), end)

    def produce(self, budget: int) -> bool:
        """Called while registered as a producer: queue about `budget` bytes with `send`;
        return True to be called again, False when there is nothing more to send."""
        return False

    def send_frames(self, src: ChunkSource, budget: int) -> tuple[int, bool]:
        """Queue `src`'s (header, data) frames until about `budget` payload bytes are sent (less
        when a test throttles the rate): (payload bytes sent, whether the source has more). The
        one sending loop of uploads (client) and downloads (server)."""
        if testhooks.THROTTLE_BPS:
            budget = testhooks.throttle(self, src, budget, time.monotonic())
        sent = 0
        while sent < budget:
            fr = src.next_frame()
            if fr is None:
                return sent, False
            hdr, data = fr
            self.send(hdr)
            self.send(data)
            sent += len(data)
        return sent, True

    def fail(self, exc: QtpError, send: bool = True) -> None:
        """End this exchange with an error (an ERROR frame to the peer if possible)."""
        self.conn.remove_producer(self)
        if send and not self.finished:
            with contextlib.suppress(Exception):
                self.send_msg(m.Error(exc.code, exc.message), end=True)
        self.finished = True
        self.conn.drop_stream(self.stream_id, stop_code=exc.code)
        self.on_failed(exc)

    def on_failed(self, exc: QtpError) -> None:
        """Hook: the exchange failed."""

    def complete(self) -> None:
        """The exchange is over on both sides: forget the stream."""
        self.conn.remove_producer(self)
        self.conn.forget_stream(self.stream_id)


# ---------------------------------------------------------------------------- connection

PACING_BURST_MIN = 0.002  # seconds of sending credit kept between wake-ups, at least...
PACING_BURST_MAX = 0.008  # ...and up to sRTT/4 but no more than this
PACING_GAIN = 1.25  # rate = gain x cwnd / sRTT (RFC 9002 section 7.7)
PACING_GAIN_SLOW_START = 2.0


class QtpPacer(QuicPacketPacer):
    """aioquic's token-bucket pacer, at gain x cwnd/sRTT, with a burst allowance of
    PACING_BURST_MIN..MAX (sRTT/4) at the pacing rate.

    asyncio timers wake up with 1 ms granularity (epoll_wait rounds up), and later than asked
    when the machine is busy, so aioquic's bucket of at most 16 datagrams caps a sender at
    16 datagrams per wake-up (190 Mbit/s with 1472-byte datagrams at best) whatever the
    window, and pacing at exactly cwnd/sRTT loses every late wake-up. Gains as RFC 9002
    section 7.7 and Linux: 1.25 in congestion avoidance, 2 in slow start. If the congestion
    controller exposes `pacing_rate` (bytes/s; BBR does), that rate is used as is."""

    def __init__(self, *, max_datagram_size: int, loss) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self._loss = loss

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        cc = self._loss._cc
        rate = getattr(cc, "pacing_rate", None)
        if not rate or rate <= 0:
            slow_start = cc.ssthresh is None or congestion_window < cc.ssthresh
            gain = PACING_GAIN_SLOW_START if slow_start else PACING_GAIN
            rate = gain * congestion_window / max(smoothed_rtt, 1e-6)
        mds = self._max_datagram_size
        self.packet_time = max(1e-6, min(mds / rate, 1.0))
        burst = max(2 * mds, min(congestion_window // 4, 16 * mds)) / rate
        self.bucket_max = max(burst, PACING_BURST_MIN, min(smoothed_rtt / 4, PACING_BURST_MAX))
        if self.bucket_time > self.bucket_max:
            self.bucket_time = self.bucket_max


def install_pacer(quic: QuicConnection, *, force: bool = False) -> None:
    """Give the connection a QtpPacer, unless its controller brought its own pacer (BBR)."""
    loss = quic._loss
    old = loss._pacer
    if type(old) is not QuicPacketPacer and not force:
        return
    p = QtpPacer(max_datagram_size=quic._max_datagram_size, loss=loss)
    p.bucket_max, p.bucket_time, p.evaluation_time, p.packet_time = (
        old.bucket_max,
        old.bucket_time,
        old.evaluation_time,
        old.packet_time,
    )
    loss._pacer = p


class TransportStats:
    """Sender-side counters taken from aioquic's recovery state (see `Conn.transport_stats`)."""

    def __init__(self) -> None:
        self.lost = 0  # packets declared lost (congestion events)
        self.pto_resent = 0  # packets whose data was rescheduled by a probe timeout


def _instrument_losses(quic: QuicConnection, stats: TransportStats) -> None:
    loss = quic._loss
    orig = loss._on_packets_lost

    def on_packets_lost(*, packets, space, now, congestion_event=True, persistent_congestion=False):
        packets = list(packets)
        if congestion_event:
            stats.lost += len(packets)
        else:
            stats.pto_resent += len(packets)
        return orig(
            packets=packets,
            space=space,
            now=now,
            congestion_event=congestion_event,
            persistent_congestion=persistent_congestion,
        )

    loss._on_packets_lost = on_packets_lost


class Conn:
    """Drives one QuicConnection: events to stream handlers, producers, timer, transmit."""

    def __init__(
        self,
        quic: QuicConnection,
        udp: UdpSocket,
        *,
        new_stream: Callable[[Conn, int], StreamHandler] | None = None,
        on_terminated: Callable[[Conn], None] | None = None,
    ):
        self.quic = quic
        self.udp = udp
        self.loop = udp.loop
        self.streams: dict[int, StreamHandler] = {}
        self._producers: dict[StreamHandler, None] = {}
        self._new_stream = new_stream
        self._on_terminated = on_terminated
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._transmit_scheduled = False
        self.handshake = self.loop.create_future()
        self.terminated = self.loop.create_future()
        self.close_event: events.ConnectionTerminated | None = None
        self.handshake_event: events.HandshakeCompleted | None = None
        self.tstats = TransportStats()
        self.mds = quic._max_datagram_size
        self.data: dict[str, Any] = {}  # per-connection application state
        self._max_peer_stream = -1
        _instrument_losses(quic, self.tstats)
        install_pacer(quic)

    # -- input
    def datagrams_received(self, batch: list[tuple[bytes, Any]], addr: Any = None) -> None:
        now = self.loop.time()
        receive = self.quic.receive_datagram
        if addr is None:
            for data, a in batch:
                receive(data, a, now)
        else:  # connected client socket: the peer address as we know it
            for data, _ in batch:
                receive(data, addr, now)
        self.process_events()
        self.transmit()

    def process_events(self) -> None:
        """Dispatch aioquic's events. Consecutive data events of one stream are joined: the
        datagrams of a read batch reach the stream's frame decoder as one piece, not one per
        packet (per-call overhead of the decoder, verification and statistics)."""
        quic = self.quic
        StreamData = events.StreamDataReceived
        while True:
            evs = []
            ev = quic.next_event()
            while ev is not None:
                evs.append(ev)
                ev = quic.next_event()
            if not evs:
                return
            i, n = 0, len(evs)
            while i < n:
                ev = evs[i]
                i += 1
                if type(ev) is not StreamData:
                    self._other_event(ev)
                    continue
                sid, data, end = ev.stream_id, ev.data, ev.end_stream
                if not end and i < n and type(evs[i]) is StreamData and evs[i].stream_id == sid:
                    parts = [data]
                    while not end and i < n and type(evs[i]) is StreamData and evs[i].stream_id == sid:
                        parts.append(evs[i].data)
                        end = evs[i].end_stream
                        i += 1
                    data = b"".join(parts)
                if not self._stream_data(sid, data, end):
                    # the connection is closing: only the control events still matter
                    for ev in evs[i:]:
                        if type(ev) is not StreamData:
                            self._other_event(ev)
                    return

    def _stream_data(self, stream_id: int, data: bytes, end: bool) -> bool:
        """Hand data to the stream's handler; False if that closed the connection."""
        h = self.streams.get(stream_id)
        if h is None:
            h = self._open_peer_stream(stream_id)
            if h is None:
                return self.close_event is None and not self.quic._close_pending
        try:
            h.on_data(data, end)
        except ProtocolViolation as exc:
            self.close(exc.code, exc.message)
            return False
        except QtpError as exc:
            h.fail(exc)
        except Exception as exc:  # a bug: do not take the process down with it
            log.exception("stream %d handler failed", stream_id)
            self.close(m.ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")
            return False
        return True

    def _open_peer_stream(self, stream_id: int) -> StreamHandler | None:
        ours = (stream_id % 2 == 0) == self.quic._is_client
        if ours:
            return None  # late data on one of our streams that is already over: ignore
        if self._new_stream is None or stream_id % 4 != 0:
            # a server-initiated or unidirectional stream: not part of the protocol
            self.close(m.ErrorCode.BAD_REQUEST, f"unexpected stream {stream_id}")
            return None
        if stream_id <= self._max_peer_stream:
            return None  # a stream we already finished with (peers open them in order)
        self._max_peer_stream = stream_id
        h = self._new_stream(self, stream_id)
        self.streams[stream_id] = h
        return h

    def _other_event(self, ev: events.QuicEvent) -> None:
        if isinstance(ev, events.HandshakeCompleted):
            self.handshake_event = ev
            if not self.handshake.done():
                self.handshake.set_result(ev)
        elif isinstance(ev, (events.StreamReset, events.StopSendingReceived)):
            h = self.streams.get(ev.stream_id)
            if h is not None:
                try:
                    h.on_reset(ev.error_code)
                except Exception:
                    log.exception("reset handler")
        elif isinstance(ev, events.ConnectionTerminated):
            self._terminated(ev)

    def _terminated(self, ev: events.ConnectionTerminated) -> None:
        if self.close_event is not None:
            return
        self.close_event = ev
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        exc = ConnectionClosed(ev.error_code, ev.reason_phrase, ev.frame_type)
        if not self.handshake.done():
            self.handshake.set_exception(exc)
            self.handshake.exception()  # mark retrieved
        for h in list(self.streams.values()):
            try:
                h.on_close(exc)
            except Exception:
                log.exception("close handler")
        self.streams.clear()
        self._producers.clear()
        if not self.terminated.done():
            self.terminated.set_result(ev)
        if self._on_terminated is not None:
            self._on_terminated(self)

    # -- output
    def write(self, stream_id: int, data: bytes, end: bool = False) -> None:
        try:
            self.quic.send_stream_data(stream_id, data, end)
        except (ValueError, RuntimeError, AssertionError) as exc:  # reset or finished stream
            raise QtpError(m.ErrorCode.INTERNAL, f"cannot write to stream {stream_id}: {exc}") from None
        self.schedule_transmit()

    def add_producer(self, h: StreamHandler) -> None:
        self._producers[h] = None
        self.schedule_transmit()

    def remove_producer(self, h: StreamHandler) -> None:
        self._producers.pop(h, None)

    def drop_stream(self, stream_id: int, stop_code: int = 0) -> None:
        """Stop receiving on a stream (STOP_SENDING) and forget its handler."""
        if self.quic._state in END_STATES:
            return
        s = self.quic._streams.get(stream_id)
        if s is not None and not s.receiver.is_finished:
            with contextlib.suppress(Exception):
                self.quic.stop_stream(stream_id, stop_code or m.ErrorCode.INTERNAL)
        self.forget_stream(stream_id)
        self.schedule_transmit()

    def forget_stream(self, stream_id: int) -> None:
        h = self.streams.pop(stream_id, None)
        if h is not None:
            self._producers.pop(h, None)

    def schedule_transmit(self) -> None:
        if not self._transmit_scheduled:
            self._transmit_scheduled = True
            self.loop.call_soon(self._scheduled_transmit)

    def _scheduled_transmit(self) -> None:
        self._transmit_scheduled = False
        self.transmit()

    def _refill(self) -> None:
        quic = self.quic
        cc = quic._loss._cc
        free = cc.congestion_window - cc.bytes_in_flight
        target = free + 8 * self.mds
        if target < LOW_WATER:
            target = LOW_WATER
        elif target > HIGH_WATER:
            target = HIGH_WATER
        producers = list(self._producers)
        per = max(target // len(producers), 64 << 10)
        qstreams = quic._streams
        for h in producers:
            s = qstreams.get(h.stream_id)
            unsent = 0 if s is None else s.sender._buffer_stop - s.sender.highest_offset
            if unsent < per:
                try:
                    more = h.produce(per - unsent)
                except ProtocolViolation as exc:
                    self.close(exc.code, exc.message)
                    return
                except QtpError as exc:
                    h.fail(exc)
                    more = False
                except Exception as exc:
                    log.exception("producer failed")
                    h.fail(QtpError(m.ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"))
                    more = False
                if not more:
                    self._producers.pop(h, None)

    def _tune_ack_delay(self) -> None:
        """Ack every min RTT / 8 (1..ACK_DELAY_MAX_S) instead of aioquic's every 1 ms: each
        ACK costs the receiver a packet to build and the sender a Python pass over the acked
        packets, and on a long path a few per round trip keep the ack clock as well."""
        rtt = self.quic._loss._rtt_min
        if rtt != float("inf"):
            self.quic._ack_delay = min(max(rtt * ACK_DELAY_RTT_FRACTION, ACK_DELAY_MIN_S), ACK_DELAY_MAX_S)

    def transmit(self) -> None:
        self._tune_ack_delay()
        if self._producers and self.close_event is None:
            self._refill()
        now = self.loop.time()
        datagrams = self.quic.datagrams_to_send(now=now)
        if datagrams:
            self.udp.send(datagrams)
        self._arm_timer()

    def _arm_timer(self) -> None:
        at = self.quic.get_timer()
        if at is None:
            return
        if self._timer is not None:
            if self._timer_at <= at:
                return  # fires earlier than needed: it re-arms then
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.loop.time()
        at = self.quic.get_timer()
        if at is not None and at <= now + 1e-4:
            self.quic.handle_timer(now=max(now, at))
            self.process_events()
        self.transmit()

    # -- control
    def close(self, code: int = 0, reason: str = "") -> None:
        if self.quic._state in END_STATES or self.quic._close_pending:
            return
        self.quic.close(error_code=int(code), reason_phrase=reason[:200])
        self.transmit()

    @property
    def is_closed(self) -> bool:
        return self.close_event is not None

    def transport_stats(self) -> dict:
        """RTT, cwnd and packet counters of this connection (sender's view)."""
        loss = self.quic._loss
        rtt_min = loss._rtt_min if loss._rtt_min != float("inf") else None
        return {
            "rtt_min_ms": round(rtt_min * 1000, 3) if rtt_min is not None else None,
            "rtt_smoothed_ms": round(loss._rtt_smoothed * 1000, 3) if loss._rtt_initialized else None,
            "cwnd_bytes": int(loss.congestion_window),
            "packets_sent": int(self.quic._packet_number),
            "packets_lost": self.tstats.lost,
            "retransmits": self.tstats.lost + self.tstats.pto_resent,
            "max_datagram_size": self.mds,
            # the controller's model (BBR: state, bottleneck bandwidth, pacing rate...)
            **(loss._cc.snapshot() if hasattr(loss._cc, "snapshot") else {}),
        }


class ConnectionClosed(QtpError):
    """The QUIC connection ended (error_code is the QUIC or application code)."""

    def __init__(self, error_code: int, reason: str, frame_type: int | None = None):
        self.transport = frame_type is not None
        self.error_code = error_code
        what = "transport" if self.transport else "application"
        code = error_code if not self.transport else m.ErrorCode.INTERNAL
        if not self.transport and error_code in {c.value for c in m.ErrorCode}:
            code = error_code
        msg = reason or ("closed" if error_code == 0 else f"{what} error {error_code:#x}")
        super().__init__(code, f"connection closed: {msg}")


# ---------------------------------------------------------------------------- server

_SUPPORTED_VERSIONS = QuicConfiguration().supported_versions


class ServerEndpoint:
    """One UDP socket serving many QUIC connections (routed by destination connection ID)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        make_connection: Callable[[bytes, tuple], QuicConnection | None],
        new_stream: Callable[[Conn, int], StreamHandler],
        *,
        cid_length: int = 8,
        max_connections: int = 256,
        on_connection: Callable[[Conn], None] | None = None,
        on_closed: Callable[[Conn], None] | None = None,
        buffer_size: int | None = None,
    ):
        self.loop = loop
        self.udp = UdpSocket(loop, sock, self._datagrams, buffer_size)
        self._make_connection = make_connection
        self._new_stream = new_stream
        self._cid_length = cid_length
        self.max_connections = max_connections
        self.conns: dict[bytes, Conn] = {}
        self.live: set[Conn] = set()
        self._on_connection = on_connection
        self._on_closed = on_closed
        self.refused = 0

    def _datagrams(self, batch: list[tuple[bytes, Any]]) -> None:
        now = self.loop.time()
        touched: dict[Conn, None] = {}
        conns = self.conns
        cl = self._cid_length
        for data, addr in batch:
            if not data:
                continue
            if not data[0] & 0x80:  # short header: the connection ID follows the first byte
                conn = conns.get(data[1 : 1 + cl])
                if conn is None:
                    continue
            else:
                conn = self._long_header(data, addr)
                if conn is None:
                    continue
            try:
                conn.quic.receive_datagram(data, addr, now)
            except Exception:  # aioquic should not raise, but never let one peer stop the server
                log.exception("receive_datagram")
                conn.close(m.ErrorCode.INTERNAL, "internal error")
            touched[conn] = None
        for conn in touched:
            if conn.data.pop("new", False) and conn.quic._state == QuicConnectionState.FIRSTFLIGHT:
                # not one packet of its first datagram decrypted: junk, forget it at once
                self._forget(conn)
                continue
            conn.process_events()
            self._track_cids(conn)
            conn.transmit()

    def _long_header(self, data: bytes, addr: tuple) -> Conn | None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=self._cid_length)
        except ValueError:
            return None
        conn = self.conns.get(header.destination_cid)
        if conn is not None:
            return conn
        if header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
            return None
        supported = _SUPPORTED_VERSIONS
        if header.version is not None and header.version not in supported:
            self.udp.send(
                [
                    (
                        encode_quic_version_negotiation(
                            source_cid=header.destination_cid,
                            destination_cid=header.source_cid,
                            supported_versions=supported,
                        ),
                        addr,
                    )
                ]
            )
            return None
        if header.packet_type != QuicPacketType.INITIAL or len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
            return None
        quic = self._make_connection(header.destination_cid, addr)
        if quic is None:
            return None
        conn = Conn(quic, self.udp, new_stream=self._new_stream, on_terminated=self._terminated)
        conn.data["peer"] = addr
        conn.data["new"] = True
        self.conns[header.destination_cid] = conn
        self.conns[quic.host_cid] = conn
        self.live.add(conn)
        if len(self.live) > self.max_connections:
            self.refused += 1
            conn.data["refused"] = True
            # the client learns it at once (an application close during the handshake)
            conn.quic.receive_datagram(data, addr, self.loop.time())
            conn.close(m.ErrorCode.BUSY, "too many connections")
            return None
        if self._on_connection is not None:
            self._on_connection(conn)
        return conn

    def _track_cids(self, conn: Conn) -> None:
        for c in conn.quic._host_cids:
            if c.cid not in self.conns:
                self.conns[c.cid] = conn

    def _forget(self, conn: Conn) -> None:
        for cid in [c for c, v in self.conns.items() if v is conn]:
            del self.conns[cid]
        self.live.discard(conn)
        if conn._timer is not None:
            conn._timer.cancel()
            conn._timer = None

    def _terminated(self, conn: Conn) -> None:
        self._forget(conn)
        if self._on_closed is not None:
            self._on_closed(conn)

    def close(self) -> None:
        for conn in list(self.live):
            conn.close(0, "server shutting down")
        self.udp.close()


def make_server_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    if not host:
        # listen on both families where possible
        family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET
        addr = ("::", port, 0, 0) if family == socket.AF_INET6 else ("0.0.0.0", port)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


# ---------------------------------------------------------------------------- client


async def open_client(
    host: str,
    port: int,
    configuration: QuicConfiguration,
    *,
    session_ticket_handler: Callable | None = None,
    local_host: str | None = None,
    buffer_size: int | None = None,
) -> tuple[Conn, UdpSocket]:
    """Create a client connection (the handshake starts; await `conn.handshake`)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if local_host:
            sock.bind((local_host, 0))
        sock.connect(addr)  # the kernel filters other sources; IP_MTU works
        peer = sock.getpeername()
    except OSError:
        sock.close()
        raise
    holder: dict[str, Conn] = {}

    def on_datagrams(batch: list) -> None:
        holder["conn"].datagrams_received(batch, peer)

    udp = UdpSocket(loop, sock, on_datagrams, buffer_size)
    quic = QuicConnection(configuration=configuration, session_ticket_handler=session_ticket_handler)
    conn = Conn(quic, udp)
    holder["conn"] = conn
    conn.data["peer"] = peer

    # sendto with the address of a connected socket works and keeps UdpSocket generic
    quic.connect(peer, now=loop.time())
    conn.transmit()
    return conn, udp
