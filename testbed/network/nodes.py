"""Mininet node, interface, link and CLI classes that take their configuration from a NetworkPlan.

The Network configures interfaces itself (batched `ip` commands, see net.py), so these classes
only describe what exists: they run no per-interface commands (Mininet's Intf.config would run
`ifconfig` once per interface) and report the plan's addresses.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from cmd import Cmd
from collections.abc import Iterator

from mininet.cli import CLI
from mininet.link import Intf, Link
from mininet.log import OUTPUT, StreamHandlerNoNewline, error, lg
from mininet.node import Node

from .state import shell_tag


class TestbedNode(Node):
    """A namespace node whose shell's argv carries `testbed:<netid>:<node>` (found by clean)."""

    __test__ = False

    def __init__(self, name: str, netid: str = "", plan_ip: str | None = None, **params):
        self.netid = netid
        self.plan_ip = plan_ip
        super().__init__(name, inNamespace=True, **params)

    def _popen(self, cmd, **params):
        # Mininet's startShell names the shell `mininet:<name>`; ours carries the network id.
        if self.shell is None and isinstance(cmd, list) and cmd[-1:] == [f"mininet:{self.name}"]:
            cmd = [*cmd[:-1], shell_tag(self.netid, self.name)]
        return super()._popen(cmd, **params)

    def IP(self, intf=None):
        """The plan's primary address (Mininet would ask ifconfig)."""
        if intf is None:
            return self.plan_ip
        return super().IP(intf)

    def addIntf(self, intf, port=None, moveIntfFn=None):
        # Interfaces are created inside the namespace already: never move them.
        super().addIntf(intf, port=port, moveIntfFn=lambda *_a, **_k: None)


class PlanIntf(Intf):
    """An interface that already exists and is configured; knows its plan address."""

    def __init__(self, name, node, port, ip=None, prefixlen=None, mac=None):
        super().__init__(name, node=node, port=port)
        self.ip, self.prefixLen, self.mac = ip, prefixlen, mac

    def config(self, **_params):
        return {}

    def updateIP(self):
        return self.ip


class PlanLink(Link):
    """Mininet's view of a link (for the CLI's `net`/`links`); the veths exist already."""

    def __init__(self, intf1: PlanIntf, intf2: PlanIntf):  # no Link.__init__: it makes veths
        self.intf1, self.intf2 = intf1, intf2
        intf1.link = intf2.link = self
        self.fast = True


class TestbedCLI(CLI):
    """Mininet's CLI; node names may contain '-' and '.', and names become plan addresses."""

    __test__ = False
    identchars = Cmd.identchars + "-."

    def default(self, line: str) -> None:
        first, args, line = self.parseline(line)
        if first not in self.mn:
            error(f"*** Unknown command: {line}\n")
            return
        if not args:
            error(f"*** Please enter a command for node: {first} <cmd>\n")
            return
        node = self.mn[first]
        words = [self._address(w) for w in args.split(" ")]
        node.sendCmd(" ".join(words))
        self.waitForNode(node)

    def _address(self, word: str) -> str:
        if word in self.mn:
            ip = self.mn[word].IP()
            return ip or word
        return word


@contextlib.contextmanager
def cli_output_on_stdout() -> Iterator[None]:
    """Mininet logs command output (level OUTPUT) to stderr; a shell prints it on stdout."""

    def only_output(record: logging.LogRecord) -> bool:
        return record.levelno == OUTPUT

    def not_output(record: logging.LogRecord) -> bool:
        return record.levelno != OUTPUT

    out = StreamHandlerNoNewline(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))
    out.addFilter(only_output)
    handlers = list(lg.handlers)
    for handler in handlers:
        handler.addFilter(not_output)
    lg.addHandler(out)
    try:
        yield
    finally:
        lg.removeHandler(out)
        for handler in handlers:
            handler.removeFilter(not_output)
