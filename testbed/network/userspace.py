"""The userspace backend: the testbed's own emulator (testbed/emulator) carries each link.

Link a<->b becomes  a:intf <-veth-> tb<netid><i>a  [emulator]  tb<netid><i>b <-veth-> b:intf,
so it works on any kernel (this one has no sch_netem). One `Emulator` serves all links.
Links with no impairment at all stay plain veths between the nodes (no emulator hop) unless
the network was built with `emulate_all=True`; applied() says which is which.

Rates above the emulator's MAX_RATE_MBPS are refused, unless a scale-down was asked for
(`Network(scale_rates=True)` or `meta: {scale_rates: true}` in the spec): then every emulated
rate is multiplied by one factor, which applied() records next to the configured rates.
"""
from __future__ import annotations

import os
import shlex
from typing import Any

from ..emulator.control import (
    MAX_RATE_MBPS,
    Emulator,
    EmuLink,
    direction_seed,
    node_side_ethtool_argv,
    node_side_threaded_argv,
)
from ..errors import CapabilityError, TestbedError
from ..topology.model import Interface, LinkParams
from .backend import LinkBackend, LinkState, unshaped
from .state import root_ifname

LOSS_SCOPE = "IPv4/IPv6 frames (ARP and other link-layer frames are never lost)"


class UserspaceBackend(LinkBackend):
    name = "userspace"

    def __init__(self, net, info):
        super().__init__(net, info)
        self.emulator: Emulator | None = None
        self.rate_scale = 1.0

    def wire(self, link: LinkState) -> None:
        if link.needs_shaping() or self.net.emulate_all:
            link.mode = "emulator"
            link.root_a = root_ifname(self.net.netid, link.index, "a")
            link.root_b = root_ifname(self.net.netid, link.index, "b")
        else:
            link.mode = "direct"
            link.notes.append("no impairment: plain veth, no emulator hop")

    def node_side_commands(self, link: LinkState, intf: Interface) -> list[str]:
        if link.mode != "emulator":
            return []
        return [shlex.join(node_side_ethtool_argv(intf.name)) + " >/dev/null",
                # best effort: without it the receiving stack runs on the emulator's CPU
                shlex.join(node_side_threaded_argv(intf.name)) + " 2>/dev/null || true"]  # fmt: skip

    def _scaling_allowed(self) -> bool:
        return self.net.scale_rates or bool(self.net.plan.spec.meta.get("scale_rates"))

    def _choose_scale(self, links: list[LinkState]) -> None:
        rates = [p.bw_mbps for lk in links for p in lk.params.values() if p.bw_mbps is not None]
        top = max(rates, default=0.0)
        if top <= MAX_RATE_MBPS:
            return
        if not self._scaling_allowed():
            worst = next(lk for lk in links if any((p.bw_mbps or 0) == top for p in lk.params.values()))
            raise CapabilityError(
                f"link {worst.spec.label}: bw_mbps={top:g} is above what the userspace emulator sustains "
                f"({MAX_RATE_MBPS:g} Mbit/s); lower it, use a kernel with sch_netem, or ask for a recorded "
                "scale-down (meta: {scale_rates: true} / Network(scale_rates=True))"
            )
        self.rate_scale = MAX_RATE_MBPS / top

    def _scaled(self, params: LinkParams) -> LinkParams:
        if params.bw_mbps is None or self.rate_scale == 1.0:
            return params
        return params.replace(bw_mbps=params.bw_mbps * self.rate_scale)

    def start(self, links: list[LinkState]) -> None:
        emulated = [lk for lk in links if lk.mode == "emulator"]
        for link in links:
            if link.mode == "direct":
                unshaped(link)
        if not emulated:
            return
        self._choose_scale(emulated)
        emu_links = [
            EmuLink(lk.index, lk.root_a, lk.root_b, self._scaled(lk.params["ab"]),
                    self._scaled(lk.params["ba"]), lk.spec.mtu)
            for lk in emulated
        ]  # fmt: skip
        self.emulator = Emulator(emu_links, self.net.seed, self.net.workdir, owner_pid=os.getpid())
        self.emulator.start()
        for link in emulated:
            for direction in ("ab", "ba"):
                link.applied[direction] = self._applied(link, direction, link.params[direction])

    def _applied(self, link: LinkState, direction: str, params: LinkParams) -> dict[str, Any]:
        real = self._scaled(params)
        out = real.as_dict()
        out["queue_pkts"] = real.queue_limit_pkts(link.spec.mtu) if real.bw_mbps is not None else None
        out["seed"] = direction_seed(self.net.seed, link.index, direction)
        if real.bw_mbps != params.bw_mbps:
            out["configured_bw_mbps"] = params.bw_mbps
            out["rate_scale"] = self.rate_scale
        return out

    def set_params(self, link: LinkState, direction: str, params: LinkParams) -> None:
        if link.mode != "emulator":
            raise TestbedError(
                f"link {link.spec.label} was built as a plain veth (no impairment at start); build the "
                "network with emulate_all=True to change it at run time"
            )
        if params.bw_mbps is not None and self._scaled(params).bw_mbps > MAX_RATE_MBPS + 1e-9:
            raise CapabilityError(f"link {link.spec.label}: bw_mbps={params.bw_mbps:g} is above "
                                  f"{MAX_RATE_MBPS:g} Mbit/s (userspace emulator)")
        self.emulator.set_params(link.index, direction, self._scaled(params))
        link.applied[direction] = self._applied(link, direction, params)

    def set_down(self, link: LinkState, down: bool) -> None:
        if link.mode == "emulator":
            self.emulator.set_down(link.index, down)
        else:
            self.set_intf_down(link, down)

    def stats(self, links: list[LinkState]) -> dict[int, dict[str, Any]]:
        rows = {(s["link_id"], s["direction"]): s for s in (self.emulator.stats() if self.emulator else [])}
        return {lk.index: {d: rows.get((lk.index, d), {}) for d in ("ab", "ba")} for lk in links}

    def pids(self) -> list[int]:
        return self.emulator.pids() if self.emulator else []

    def cpu_seconds(self) -> float | None:
        return self.emulator.cpu_seconds() if self.emulator else None

    def extra_applied(self) -> dict[str, Any]:
        out = {"rate_scale": self.rate_scale, "max_rate_mbps": MAX_RATE_MBPS, "loss_applies_to": LOSS_SCOPE}
        if self.emulator is not None:  # frames leave up to one round late while it is busy
            out["emulator_round_us"] = self.emulator.round_us
            out["node_napi"] = "threaded"  # see emulator.engine.node_side_threaded_argv
        return out

    def stop(self) -> None:
        if self.emulator is not None:
            self.emulator.stop()
