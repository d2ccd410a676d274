"""Bulk-transfer fast path through aioquic 1.7.2's packet building (a monkeypatch).

Why: a qtp sender spends most of its CPU in `QuicConnection._write_application`, which for
every packet re-checks a dozen kinds of pending control frames and goes through the generic
`QuicPacketBuilder` (start_packet, start_frame, _end_packet) and four layers of Python crypto
wrappers. In a bulk transfer almost every packet is the same thing: one STREAM frame of one
stream filling a short-header packet.

What: `install()` wraps `_write_application`. When nothing but stream data of a single stream
can be pending (handshake done, path validated, no control frame, PING, probe, CRYPTO data or
DATAGRAM waiting, no qlog), the first packet of the call and any packet that must carry an ACK
are built by aioquic's own code (the first only if a flow-control update is due), and the others
by `_stream_packet`: the STREAM frame, header,
AEAD and header protection written in one place, with the builder's bookkeeping (packet list,
datagrams, flight bytes, packet number) and the stream's delivery handler exactly as aioquic
does it. Anything else falls back to the original method. The fast path is only installed for
the aioquic version it was written against (`AIOQUIC_VERSION`). QTP_FASTPATH=0 disables it.

On the receiving side `receive_datagram` is wrapped the same way: a 1-RTT packet for the
connection's own connection ID from its validated primary path, on a connected connection,
goes through `_receive_short` (header protection and AEAD on aioquic's cipher objects, a
leading STREAM frame straight to aioquic's `_handle_stream_frame`, other frames through its
`_payload_received`, then the packet-space bookkeeping of aioquic's loop); anything
else (long headers, other CIDs or addresses, undecryptable packets) through aioquic's method.
"""

from __future__ import annotations

import os
from typing import Any

import aioquic
from aioquic import tls
from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic.connection import (
    END_STATES,
    QuicConnection,
    QuicConnectionError,
    QuicConnectionState,
    QuicReceiveContext,
)
from aioquic.quic.packet import (
    PACKET_FIXED_BIT,
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    decode_packet_number,
)
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.quic.recovery import MAX_ACK_RANGES
from aioquic.quic.stream import StreamFinishedError
from cryptography.exceptions import InvalidTag

AIOQUIC_VERSION = "1.7.2"
ENABLED = os.environ.get("QTP_FASTPATH", "1") != "0"

ONE_RTT = tls.Epoch.ONE_RTT
PT_ONE_RTT = QuicPacketType.ONE_RTT
STREAM_BASE = 0x08
STREAM_LEN = 0x08 | 0x02  # STREAM frame with a length field (+4: offset, +1: FIN)
TAG_SIZE = 16
PN_SIZE = 2  # aioquic's PACKET_NUMBER_SEND_SIZE

ZERO_RTT = tls.Epoch.ZERO_RTT
CONNECTED = QuicConnectionState.CONNECTED

_original_write_application = QuicConnection._write_application
_original_receive_datagram = QuicConnection.receive_datagram
# packets built by each path, short-header datagrams received fast, in this process (tests)
stats = {"fast": 0, "generic": 0, "received_fast": 0}


def _varint(value: int) -> bytes:
    if value <= 0x3F:
        return bytes((value,))
    if value <= 0x3FFF:
        return (value | 0x4000).to_bytes(2, "big")
    if value <= 0x3FFFFFFF:
        return (value | 0x80000000).to_bytes(4, "big")
    return (value | 0xC000000000000000).to_bytes(8, "big")


def _bulk_stream(conn: Any, network_path: Any, builder: Any) -> Any:
    """The one stream to send from, if only stream data can be pending; else None."""
    if (
        conn._quic_logger is not None
        or not conn._handshake_complete
        or not network_path.is_validated
        or conn._handshake_done_pending
        or conn._retire_connection_ids
        or conn._streams_blocked_pending
        or conn._ping_pending
        or conn._probe_pending
        or conn._datagrams_pending
        or builder._packet is not None
        or builder._buffer.tell()
        or builder.max_total_bytes is not None
        or len(conn._streams_queue) != 1
        or not conn._cryptos[ONE_RTT].send.is_valid()
        or not conn._crypto_streams[ONE_RTT].sender.buffer_is_empty
    ):
        return None
    if not all(c.was_sent for c in conn._host_cids):
        return None
    stream = conn._streams_queue[0]
    if stream.is_finished or stream.receiver.stop_pending or stream.sender.reset_pending:
        return None
    return stream


def _limits_idle(conn: Any) -> bool:
    """True when aioquic's _write_connection_limits/_write_stream_limits would write nothing."""
    max_data = conn._local_max_data
    if max_data.used * 2 > max_data.value or max_data.value != max_data.sent:
        return False
    for limit in (conn._local_max_streams_bidi, conn._local_max_streams_uni):
        if limit.value != limit.sent and limit.sent - limit.used < limit.value - limit.sent:
            return False
    for s in conn._streams.values():
        local = s.max_stream_data_local
        if (local and s.receiver.highest_offset * 2 > local) or s.max_stream_data_local_sent != local:
            return False
    return True


def _write_application(self: Any, builder: Any, network_path: Any, now: float) -> None:
    stream = _bulk_stream(self, network_path, builder)
    if stream is None:
        return _original_write_application(self, builder, network_path, now)
    crypto = self._cryptos[ONE_RTT]
    space = self._spaces[ONE_RTT]
    pacer = self._loss._pacer
    sender = stream.sender
    first = not _limits_idle(self)  # flow-control updates due: the first packet carries them
    while True:
        ack_at = space.ack_at
        if ack_at is None or ack_at >= now:
            self._pacing_at = pacer.next_send_time(now=now)
            if self._pacing_at is not None:
                break
        if stream.is_blocked or sender.buffer_is_empty:
            sendable = False
        else:
            sendable = True
            max_offset = min(
                sender.highest_offset + self._remote_max_data - self._remote_max_data_used,
                stream.max_stream_data_remote,
            )
        if first or (ack_at is not None and ack_at <= now):
            # aioquic's own code: the ACK, flow-control updates and (maybe) data
            builder.start_packet(PT_ONE_RTT, crypto)
            if ack_at is not None and ack_at <= now:
                self._write_ack_frame(builder=builder, space=space, now=now)
            if first:
                self._write_connection_limits(builder=builder, space=space)
                for s in self._streams.values():
                    self._write_stream_limits(builder=builder, space=space, stream=s)
            first = False
            if sendable:
                self._remote_max_data_used += self._write_stream_frame(
                    builder=builder, space=space, stream=stream, max_offset=max_offset
                )
            if builder.packet_is_empty:
                break
            stats["generic"] += 1
        else:
            if not sendable:
                break
            if builder._packet is not None:
                builder._end_packet()
            used = _stream_packet(self, builder, crypto, stream, max_offset)
            if used < 0:
                break
            self._remote_max_data_used += used
            stats["fast"] += 1
        pacer.update_after_send(now=now)
    return None


def _stream_packet(conn: Any, builder: Any, crypto: Any, stream: Any, max_offset: int) -> int:
    """Build one short-header packet holding one STREAM frame into `builder` (which holds no
    open packet); returns the new bytes sent on the stream, or -1 if nothing fit/was due."""
    capacity = builder._buffer_capacity
    flight = capacity
    if builder.max_flight_bytes is not None:
        flight = min(flight, builder.max_flight_bytes - builder._flight_bytes)
    peer_cid = builder._peer_cid
    header_size = 1 + len(peer_cid) + PN_SIZE
    sender = stream.sender
    next_offset = sender.next_offset
    stream_id = stream.stream_id
    overhead = 3 + len(_varint(stream_id)) + (len(_varint(next_offset)) if next_offset else 0)
    before = sender.highest_offset
    frame = sender.get_frame(flight - header_size - TAG_SIZE - overhead, max_offset)
    if frame is None:
        return -1
    data = frame.data
    offset = frame.offset
    ftype = STREAM_LEN | (4 if offset else 0) | (1 if frame.fin else 0)
    payload = b"".join(
        (
            bytes((ftype,)),
            _varint(stream_id),
            _varint(offset) if offset else b"",
            (len(data) | 0x4000).to_bytes(2, "big"),
            data,
        )
    )
    pn = builder._packet_number
    header = (
        bytes((PACKET_FIXED_BIT | (builder._spin_bit << 5) | (crypto.key_phase << 2) | (PN_SIZE - 1),))
        + peer_cid
        + (pn & 0xFFFF).to_bytes(2, "big")
    )
    datagram = _seal(crypto, header, payload, pn)
    packet = QuicSentPacket(
        epoch=ONE_RTT,
        in_flight=True,
        is_ack_eliciting=True,
        is_crypto_packet=False,
        packet_number=pn,
        packet_type=PT_ONE_RTT,
    )
    packet.sent_bytes = size = len(datagram)
    packet.delivery_handlers.append((sender.on_data_delivery, (offset, offset + len(data), frame.fin)))
    builder._packets.append(packet)
    builder._datagrams.append(datagram)
    builder._flight_bytes += size
    builder._total_bytes += size
    builder._packet_number = pn + 1
    return sender.highest_offset - before


def _seal(crypto: Any, header: bytes, payload: bytes, pn: int) -> bytes:
    """`crypto.encrypt_packet` for a short header with a 2-byte packet number: AEAD and
    header protection straight on aioquic's cipher objects (RFC 9001 section 5.4)."""
    if crypto._update_key_requested:
        return crypto.encrypt_packet(header, payload, pn)
    send = crypto.send
    aead = send.aead
    sealed = aead._aead.encrypt((aead._iv ^ pn).to_bytes(12, "big"), payload, header)
    mask = send.hp._mask(sealed[4 - PN_SIZE : 4 - PN_SIZE + 16])
    h = bytearray(header)
    h[0] ^= mask[0] & 0x1F
    h[-2] ^= mask[1]
    h[-1] ^= mask[2]
    return bytes(h) + sealed


def _open(crypto: Any, data: bytes, pn_offset: int, expected: int) -> tuple[bytes, bytes, int] | None:
    """`crypto.decrypt_packet` for a short-header packet in the current key phase: (plain
    header, payload, packet number), or None (no key, too short, another key phase, bad tag)
    without any change of state."""
    recv = crypto.recv
    aead = recv.aead
    if aead is None or len(data) < pn_offset + 20:
        return None
    mask = recv.hp._mask(data[pn_offset + 4 : pn_offset + 20])
    first = data[0] ^ (mask[0] & 0x1F)
    if (first & 4) >> 2 != recv.key_phase:
        return None
    pn_len = (first & 3) + 1
    end = pn_offset + pn_len
    h = bytearray(data[:end])
    h[0] = first
    truncated = 0
    for i in range(pn_offset, end):
        h[i] ^= mask[1 + i - pn_offset]
        truncated = (truncated << 8) | h[i]
    pn = decode_packet_number(truncated, pn_len * 8, expected)
    header = bytes(h)
    try:
        payload = aead._aead.decrypt((aead._iv ^ pn).to_bytes(12, "big"), data[end:], header)
    except InvalidTag:
        return None
    return header, payload, pn


def _receive_datagram(self: Any, data: bytes, addr: Any, now: float) -> None:
    if not _receive_short(self, data, addr, now):
        _original_receive_datagram(self, data, addr, now)


def _receive_short(conn: Any, data: bytes, addr: Any, now: float) -> bool:
    """`receive_datagram` for a 1-RTT packet on an established connection's own path and
    connection ID: aioquic's steps for that case only (no header object, path lookup, epoch
    dispatch, migration or qlog). Returns False, having changed nothing, when the datagram
    is anything else, so that aioquic's method handles it."""
    if (
        not data
        or data[0] & 0xC0 != PACKET_FIXED_BIT
        or conn._state is not CONNECTED
        or conn._quic_logger is not None
        or conn._close_at is None
    ):
        return False
    path = conn._network_paths[0]
    cid = conn.host_cid
    n = len(cid)
    if (
        path.addr != addr
        or not path.is_validated
        or data[1 : 1 + n] != cid
        or (not conn._is_client and conn._cryptos[ZERO_RTT].recv.is_valid())
    ):
        return False
    crypto = conn._cryptos[ONE_RTT]
    space = conn._spaces[ONE_RTT]
    opened = _open(crypto, data, 1 + n, space.expected_packet_number)
    if opened is None:
        return False  # aioquic drops it (and logs why), or it starts a key update
    plain_header, plain_payload, pn = opened
    stats["received_fast"] += 1
    if pn in space.received_packets:
        return True  # a duplicate (RFC 9000 section 12.3)
    if plain_header[0] & 0x18:
        conn.close(
            error_code=QuicErrorCode.PROTOCOL_VIOLATION,
            frame_type=QuicFrameType.PADDING,
            reason_phrase="Reserved bits must be zero",
        )
        return True
    if pn > space.expected_packet_number:
        space.expected_packet_number = pn + 1
    if pn > conn._spin_highest_pn:
        spin = bool(plain_header[0] & 0x20)
        conn._spin_bit = not spin if conn._is_client else spin
        conn._spin_highest_pn = pn
    context = QuicReceiveContext(
        epoch=ONE_RTT, host_cid=cid, network_path=path, quic_logger_frames=None, time=now, version=None
    )
    is_ack_eliciting = False
    try:
        if plain_payload[0] & 0xF8 == STREAM_BASE:
            # a STREAM frame first (a bulk data packet): straight to aioquic's frame handler,
            # the rest (if any) through its frame loop
            is_ack_eliciting = True
            buf = Buffer(data=plain_payload)
            buf.seek(1)
            try:
                conn._handle_stream_frame(context, plain_payload[0], buf)
            except BufferReadError:
                raise QuicConnectionError(
                    error_code=QuicErrorCode.FRAME_ENCODING_ERROR,
                    frame_type=plain_payload[0],
                    reason_phrase="Failed to parse frame",
                ) from None
            except StreamFinishedError:
                pass  # as aioquic: no state for the stream, ignore the frame
            if not buf.eof():
                conn._payload_received(context, plain_payload[buf.tell() :])
        else:
            is_ack_eliciting, _ = conn._payload_received(context, plain_payload)
    except QuicConnectionError as exc:
        conn._logger.warning(exc)
        conn.close(error_code=exc.error_code, frame_type=exc.frame_type, reason_phrase=exc.reason_phrase)
    if conn._state in END_STATES or conn._close_pending:
        return True
    conn._close_at = now + conn._idle_timeout()
    conn._ack_eliciting_sent_since_receipt = False
    if pn > space.largest_received_packet:
        space.largest_received_packet = pn
        space.largest_received_time = now
    space.ack_queue.add(pn)
    space.received_packets.add(pn)
    if len(space.ack_queue) > MAX_ACK_RANGES:
        space.ack_queue.shift()
    if is_ack_eliciting and space.ack_at is None:
        space.ack_at = now + conn._ack_delay
    return True


def install() -> bool:
    """Patch aioquic (once); False if disabled or aioquic is not the version this fits."""
    if not ENABLED or aioquic.__version__ != AIOQUIC_VERSION:
        return False
    QuicConnection._write_application = _write_application  # type: ignore[method-assign]
    QuicConnection.receive_datagram = _receive_datagram  # type: ignore[method-assign]
    return True


def uninstall() -> None:
    QuicConnection._write_application = _original_write_application  # type: ignore[method-assign]
    QuicConnection.receive_datagram = _original_receive_datagram  # type: ignore[method-assign]
