"""QUIC configuration shared by client and server: congestion control, windows, qlog,
session tickets."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
import re
from pathlib import Path

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.congestion import base as cc_base
from aioquic.quic.congestion import cubic, reno  # noqa: F401  (register "reno" and "cubic")

from . import messages as m
from .io import DEFAULT_MAX_DATA, DEFAULT_MAX_STREAM_DATA

log = logging.getLogger("qtp")

CONGESTION_CONTROLS = ("cubic", "reno", "bbr")
DEFAULT_CC = "cubic"


class CongestionControlUnavailable(m.QtpError):
    def __init__(self, message: str):
        super().__init__(m.ErrorCode.UNSUPPORTED, message)


def ensure_cc(name: str) -> str:
    """Make sure aioquic knows congestion control `name` (BBR is imported on first use)."""
    if name not in CONGESTION_CONTROLS:
        raise CongestionControlUnavailable(
            f"unknown congestion control {name!r} (choose from {', '.join(CONGESTION_CONTROLS)})"
        )
    if name == "bbr" and "bbr" not in cc_base._factories:
        try:
            importlib.import_module("protocols.qtp.bbr")
        except ImportError as exc:
            raise CongestionControlUnavailable(
                f"congestion control 'bbr' is not available: protocols/qtp/bbr.py cannot be imported ({exc})"
            ) from None
        if "bbr" not in cc_base._factories:
            raise CongestionControlUnavailable(
                "protocols.qtp.bbr did not register a congestion control named 'bbr'"
            )
    return name


def switch_cc(quic, name: str) -> bool:
    """Replace the congestion controller of a connection that has sent little so far
    (used when a client asks the server, the data sender, for a cc)."""
    from .io import install_pacer

    ensure_cc(name)
    loss = quic._loss
    if cc_name(quic) == name:
        return True
    old = loss._cc
    new = cc_base.create_congestion_control(name, max_datagram_size=quic._max_datagram_size)
    # the packets in flight become the new controller's, as if it had sent them (this also
    # gives them whatever per-packet state it keeps, e.g. BBR's delivery-rate sample)
    new.bytes_in_flight = 0
    for space in loss.spaces:
        for packet in space.sent_packets.values():
            if packet.in_flight:
                new.on_packet_sent(packet=packet)
    del old
    loss._cc = new
    loss._qtp_cc_name = name
    install_pacer(quic, force=True)  # a plain pacer again...
    if name == "bbr":  # ...unless BBR brings its own
        bbr = importlib.import_module("protocols.qtp.bbr")
        installer = getattr(bbr, "_install_pacer", None)
        if installer is not None:
            installer(loss)
    return True


def cc_name(quic) -> str:
    return getattr(quic._loss, "_qtp_cc_name", quic.configuration.congestion_control_algorithm)


def windows_for(bdp: int | None) -> tuple[int, int]:
    """(max_data, max_stream_data): at least 2 x BDP, never below the large defaults."""
    if not bdp:
        return DEFAULT_MAX_DATA, DEFAULT_MAX_STREAM_DATA
    return max(DEFAULT_MAX_DATA, 4 * bdp), max(DEFAULT_MAX_STREAM_DATA, 2 * bdp)


def quic_logger(qlog_dir: str | None):
    if not qlog_dir:
        return None
    from aioquic.quic.logger import QuicFileLogger

    Path(qlog_dir).mkdir(parents=True, exist_ok=True)
    return QuicFileLogger(qlog_dir)


def base_configuration(
    *,
    is_client: bool,
    cc: str,
    max_datagram_size: int,
    bdp: int | None = None,
    idle_timeout: float = 30.0,
    qlog_dir: str | None = None,
) -> QuicConfiguration:
    max_data, max_stream_data = windows_for(bdp)
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[m.ALPN],
        congestion_control_algorithm=ensure_cc(cc),
        max_datagram_size=max_datagram_size,
        max_data=max_data,
        max_stream_data=max_stream_data,
        idle_timeout=idle_timeout,
        quic_logger=quic_logger(qlog_dir),
    )


# ---------------------------------------------------------------------------- session tickets


class TicketStore:
    """Client session tickets on disk (`<state>/tickets/`), one per server, for resumption
    and 0-RTT on the next connection."""

    def __init__(self, state_dir: str | os.PathLike):
        self.dir = Path(state_dir) / "tickets"

    def _path(self, host: str, port: int, server_name: str | None) -> Path:
        key = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{server_name or host}@{host}_{port}")
        return self.dir / f"{key}.ticket"

    def load(self, host: str, port: int, server_name: str | None):
        p = self._path(host, port, server_name)
        try:
            with open(p, "rb") as f:
                ticket = pickle.load(f)  # our own file, in the user's private state dir
        except (OSError, pickle.PickleError, EOFError, AttributeError, ImportError, TypeError):
            return None
        if not getattr(ticket, "is_valid", False):
            return None
        return ticket

    def saver(self, host: str, port: int, server_name: str | None):
        def save(ticket) -> None:
            with contextlib.suppress(OSError):
                self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                p = self._path(host, port, server_name)
                tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    pickle.dump(ticket, f)
                os.replace(tmp, p)

        return save


class ServerTicketStore:
    """Server side: tickets issued by this process, each usable once (limits 0-RTT replay)."""

    def __init__(self, limit: int = 10000):
        self._tickets: dict[bytes, object] = {}
        self._limit = limit

    def add(self, ticket) -> None:
        if len(self._tickets) >= self._limit:
            self._tickets.pop(next(iter(self._tickets)))
        self._tickets[ticket.ticket] = ticket

    def pop(self, label: bytes):
        return self._tickets.pop(label, None)
