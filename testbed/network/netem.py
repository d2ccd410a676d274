"""The netem backend: a direct veth per link, shaped on each end's egress by the kernel.

Per direction, on the sending interface:
- rate: HTB root (class 1:1, rate = ceil = bw) with the queue as its leaf, so HTB's own
  accounting (GSO aware) sets the rate and the leaf's limit is the bottleneck queue;
- delay, jitter, loss: a netem leaf (under HTB, or as root without a rate), whose limit is the
  queue plus the packets in flight on the delay line (else netem would drop them as overflow);
- loss_burst: netem's Gilbert-Elliott model (mean burst = 1/r, mean loss = p/(p+r));
- jitter without `reorder`: netem's own `rate` keeps FIFO order (a packet never leaves before
  the one ahead of it), set to the link rate (or 100 Gbit/s without one);
- `seed` for netem's random numbers where this tc knows it (recorded otherwise);
- loss applies to every frame netem sees, ARP included (the userspace emulator spares non-IP
  frames); applied() says so in `loss_applies_to`.
Mininet's TCLink is not used: it silently drops delay/loss without sch_netem and ignores bw > 1000.
"""
from __future__ import annotations

import json
import math
from typing import Any

from ..errors import TestbedError
from ..topology.model import LinkParams
from .backend import LinkBackend, LinkState, unshaped

# netem drops any frame its qdisc sees (ARP too), and draws per frame: a seeded pattern repeats
# only as long as the frames repeat (the builder installs static neighbours for that).
LOSS_SCOPE = "every frame (ARP included)"
NO_RATE_LIMIT = 100000  # netem limit (packets) when no rate bounds the delay line


def gemodel(loss_pct: float, burst: float) -> tuple[float, float]:
    """Gilbert-Elliott (p, r) in percent for mean loss `loss_pct` and mean burst length."""
    loss = loss_pct / 100
    r = 1 / max(burst, 1.0)
    p = loss * r / (1 - loss) if loss < 1 else 1.0
    return 100 * min(p, 1.0), 100 * r


def netem_limit(params: LinkParams, mtu: int) -> int:
    """Packets netem must hold: the queue plus what is on the delay line at the link rate."""
    if params.bw_mbps is None:
        return NO_RATE_LIMIT
    line_s = (params.delay_ms + 4 * params.jitter_ms) / 1e3
    in_flight = math.ceil(params.bw_mbps * 1e6 / 8 * line_s / mtu)
    return params.queue_limit_pkts(mtu) + in_flight + 16


def netem_args(params: LinkParams, mtu: int, seed: int | None) -> list[str]:
    args = ["netem", "limit", str(netem_limit(params, mtu))]
    if params.delay_ms or params.jitter_ms:
        args += ["delay", f"{params.delay_ms}ms"]
        if params.jitter_ms:
            args += [f"{params.jitter_ms}ms", "distribution", "normal"]
            if not params.reorder:
                rate = f"{params.bw_mbps}mbit" if params.bw_mbps else "100gbit"
                args += ["rate", rate]
    if params.loss_pct:
        if params.loss_burst:
            p, r = gemodel(params.loss_pct, params.loss_burst)
            args += ["loss", "gemodel", f"{p:.6f}%", f"{r:.6f}%", "100%", "0%"]
        else:
            args += ["loss", "random", f"{params.loss_pct}%"]
    if seed is not None:
        args += ["seed", str(seed)]
    return args


def queue_args(params: LinkParams, mtu: int) -> list[str]:
    if params.queue_bytes is not None:
        return ["bfifo", "limit", str(params.queue_bytes)]
    return ["pfifo", "limit", str(params.queue_limit_pkts(mtu))]


def tc_commands(dev: str, params: LinkParams, mtu: int, seed: int | None) -> list[str]:
    """tc batch lines that shape `dev`'s egress (after its root qdisc is deleted); [] when unshaped."""
    cmds = []
    if params.bw_mbps is not None:
        burst = max(15000, int(params.bw_mbps * 1e6 / 8 * 1e-3))  # ~1 ms of data
        cmds += [
            f"qdisc add dev {dev} root handle 1: htb default 1",
            f"class add dev {dev} parent 1: classid 1:1 htb rate {params.bw_mbps}mbit "
            f"ceil {params.bw_mbps}mbit burst {burst} cburst {burst}",
        ]
        leaf = netem_args(params, mtu, seed) if params.impaired else queue_args(params, mtu)
        cmds.append(f"qdisc add dev {dev} parent 1:1 handle 10: {' '.join(leaf)}")
    elif params.impaired:
        cmds.append(f"qdisc add dev {dev} root handle 10: {' '.join(netem_args(params, mtu, seed))}")
    return cmds


class NetemBackend(LinkBackend):
    name = "netem"

    def wire(self, link: LinkState) -> None:
        link.mode = "netem" if link.needs_shaping() else "direct"

    def start(self, links: list[LinkState]) -> None:
        for link in links:
            if link.mode == "direct":
                unshaped(link)
                continue
            for direction, params in link.params.items():
                self.set_params(link, direction, params)

    def _seed(self, link: LinkState, direction: str) -> int | None:
        if not self.info.netem_seed:
            return None
        return (self.net.seed * 1000003 + link.index * 2 + (direction == "ba")) % 2**31

    def set_params(self, link: LinkState, direction: str, params: LinkParams) -> None:
        intf = link.sender(direction)
        seed = self._seed(link, direction)
        cmds = tc_commands(intf.name, params, link.spec.mtu, seed)
        self.net.node_run(intf.node, f"tc qdisc del dev {intf.name} root", check=False)  # none: fine
        if cmds:
            out = self.net.node_run(intf.node, "tc -batch -", stdin="\n".join(cmds) + "\n", check=False)
            if out.returncode != 0:
                raise TestbedError(f"link {link.spec.label} {direction}: tc failed: {out.stderr.strip()}")
        link.mode = "netem"
        link.applied[direction] = self._verify(link, direction, params, seed)

    def _verify(self, link: LinkState, direction: str, params: LinkParams, seed: int | None) -> dict:
        """Read the qdiscs back: report only what the kernel really holds."""
        intf = link.sender(direction)
        kinds = {q.get("kind") for q in self._qdiscs(intf.node, intf.name)}
        if params.impaired and "netem" not in kinds:
            raise TestbedError(f"link {link.spec.label} {direction}: netem qdisc missing after setup")
        if params.bw_mbps is not None and "htb" not in kinds:
            raise TestbedError(f"link {link.spec.label} {direction}: htb qdisc missing after setup")
        applied = params.as_dict()
        applied["queue_pkts"] = params.queue_limit_pkts(link.spec.mtu) if params.bw_mbps else None
        applied["seed"] = seed
        if params.loss_pct and seed is None:
            applied["note"] = "loss pattern not seeded (this tc has no netem seed)"
        return applied

    def _qdiscs(self, node: str, dev: str) -> list[dict[str, Any]]:
        out = self.net.node_run(node, f"tc -s -j qdisc show dev {dev}", check=False)
        try:
            return json.loads(out.stdout or "[]")
        except ValueError:
            return []

    def set_down(self, link: LinkState, down: bool) -> None:
        self.set_intf_down(link, down)

    def extra_applied(self) -> dict[str, Any]:
        return {"loss_applies_to": LOSS_SCOPE}

    def stats(self, links: list[LinkState]) -> dict[int, dict[str, Any]]:
        return {lk.index: {d: self._counters(lk, d) for d in ("ab", "ba")} for lk in links}

    def _counters(self, link: LinkState, direction: str) -> dict[str, Any]:
        intf = link.sender(direction)
        qds = self._qdiscs(intf.node, intf.name)
        return {
            "sent_packets": max((q.get("packets", 0) for q in qds), default=0),
            "drops": sum(q.get("drops", 0) for q in qds),
        }
