"""Protocols by name, so experiments can swap them."""
from __future__ import annotations

import importlib

from .base import ProtocolDriver

# name -> "module:DriverClass"; modules are imported only when used.
_DRIVERS = {
    "qtp": "protocols.qtp.driver:QtpDriver",
    "tcp": "protocols.tcp:TcpDriver",
    "tcp-tls": "protocols.tcp:TcpTlsDriver",
    "aioquic": "protocols.naive_quic:NaiveQuicDriver",
}


def names() -> list[str]:
    return list(_DRIVERS)


def get(name: str) -> ProtocolDriver:
    """The driver registered as `name`; KeyError names the known protocols."""
    try:
        target = _DRIVERS[name]
    except KeyError:
        raise KeyError(f"unknown protocol {name!r} (known: {', '.join(_DRIVERS)})") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)()
