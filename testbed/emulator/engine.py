"""The emulator process: AF_PACKET bump-in-the-wire between the root ends of each link's veths.

Frames arriving on `if_a` (sent by node a) go through direction ab's model and leave on `if_b`
towards node b at their delivery time, and vice versa. One process serves any number of links
in one select() loop; `control.Emulator` runs several such processes for many busy links.

What must hold for frames to cross intact (see `prepare_interfaces` and `NODE_SIDE_ETHTOOL`):
- node side (inside the node namespaces, both ends of every emulated link): checksum offload
  off (`tx off`), so the node's stack writes full checksums: a frame still CHECKSUM_PARTIAL when
  it crosses the veth is read by AF_PACKET with only the pseudo-header sum and, re-sent by us,
  arrives with a bad checksum and is dropped (TCP then stalls). TSO off, so no frame is larger
  than the MTU (we cannot segment; oversize frames are counted and dropped). GSO may stay on.
- root side (`if_a`, `if_b`): GRO/LRO off (else the kernel merges frames before we read them),
  the other offloads off too, IPv6 off and ARP off so the root namespace itself sends nothing
  on them and answers nothing from them.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import heapq
import itertools
import json
import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..topology.model import LinkParams
from .model import ETH_IPV4, ETH_IPV6, DirectionModel, QDelayHistogram, is_ip_frame

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V2 = 1
TP_STATUS_USER = 1
TP_STATUS_CSUMNOTREADY = 8
# tpacket2_hdr: status, len, snaplen, mac offset, net offset, receive time (CLOCK_REALTIME s, ns)
TP2_HDR = struct.Struct("<IIIHHII")
# EtherType bytes of untagged IP frames, the frames the loss model applies to (is_ip_frame
# decides the rest: VLAN-tagged and short frames)
IP_ETHERTYPES = frozenset(t.to_bytes(2, "big") for t in (ETH_IPV4, ETH_IPV6))
RELEASE = bytes(4)  # TP_STATUS_KERNEL / TP_STATUS_AVAILABLE: hands a ring slot back
_U32 = struct.Struct("<I")
PACKET_TX_RING = 13
PACKET_LOSS = 14
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_WRONG_FORMAT = 4
TX_DATA_OFFSET = 32  # TPACKET2_HDRLEN - sizeof(struct sockaddr_ll): where a TX slot's frame starts
TX_RING_BYTES = 2 << 20  # per interface: 1024 slots; refilled after each flush
PR_SET_TIMERSLACK = 29
# The receive ring (or, without one, the receive buffer) is the emulator's own queue whenever it
# falls behind (CPU taken by others): too small and TCP at 40 ms RTT sees spurious losses (4096
# slots or a 2 MiB buffer: hundreds to 10^4 retransmits in 4 s at 1 Gbit/s on a loaded machine),
# too large and an overloaded emulator adds tens of ms. Overflows count as rx_kernel_drops.
RING_BLOCK_BYTES = 1 << 16
RING_MAX_BYTES = 16 << 20  # per socket: 8192 slots of 2 KiB, ~100 ms of MTU frames at 1 Gbit/s
RING_TOTAL_BYTES = 256 << 20  # all rings of one process together stay below this
RCVBUF_BYTES = int(os.environ.get("TESTBED_EMU_RCVBUF", 8 << 20))
SNDBUF_BYTES = 8 << 20
RECV_SIZE = 65536
READ_BATCH = 64  # frames read from one socket before sending what is due
# frames sent for one direction before reading again: arrivals wait unstamped meanwhile, so a
# long send phase would hide delay from the model (256 frames: ~2 ms at worst)
SEND_BATCH = 256
# Timing: select() (µs timeout, timer slack 1 µs) typically wakes ~60 µs late on this VM, so it is
# asked to wake that much early; a frame due within SEND_EARLY_S is sent at once. Waking earlier
# than that polls select() with timeout 0 until due: a busy-wait of at most ~40 µs per deadline.
WAKE_EARLY_S = 60e-6
SEND_EARLY_S = 20e-6
# Rounds (config "round_us"): every wake-up of the loop costs ~40 µs of CPU (select, the loop,
# the flush) whatever it does, so a busy emulator must not wake per frame (100 Mbit/s of TCP:
# ~11 kframes/s, 3 wake-ups per frame, 75 % of a core). While busy (the last wake-up was less
# than two rounds ago) the loop wakes at most once per round: a frame leaves in the first round
# at or after its due time (so at most a round late, never more than WAKE_EARLY_S early), and
# arrivals wait unread until the next round -- stamped with the kernel's receive time, so the
# model still sees their true arrival times; they wait at most half the smallest propagation
# delay of the process's links (not at all on 0 ms links). An idle link keeps exact timing.
ROUND_S = 250e-6
IDLE_TIMEOUT_S = 0.5
CLOSE_THREADS = 64  # sockets closed at once when the process stops (see Engine.close)
OPEN_THREADS = 32  # links set up at once when it starts (see Engine.open)
RETRY_S = 200e-6  # wait before retrying a send refused for a full socket buffer

# ethtool -K arguments for the node-side interfaces of emulated links (inside the namespaces).
# `tx off`: full checksums in software (it implies TSO off); `tso off` also covers TSO flavours
# that do not depend on it (AccECN); `txvlan off` keeps VLAN tags inside the frame, where
# AF_PACKET sees them. GSO stays on: the stack segments in software before the veth, so frames
# stay within the MTU while the sender keeps its cheap 64 KB skbs (and its send buffer reach).
# `gro on`: the receiving node coalesces what we deliver (NAPI mode of the veth), so its stack
# -- which runs inside our send() calls -- costs less and sends fewer ACKs: measured 15-20 %
# less emulator CPU per frame.
NODE_SIDE_ETHTOOL = ["tx", "off", "tso", "off", "txvlan", "off", "gro", "on"]
# ethtool -K features turned off on the root ends (rxvlan: VLAN tags stay in the frame we read).
ROOT_SIDE_OFFLOADS = ["gro", "lro", "gso", "tso", "tx", "rx", "sg", "rxvlan", "rx-gro-list",
                      "rx-udp-gro-forwarding"]  # fmt: skip
# features that must read "off" on a root end afterwards, or frames would be merged
ROOT_SIDE_REQUIRED_OFF = ["generic-receive-offload", "large-receive-offload"]


def node_side_ethtool_argv(ifname: str) -> list[str]:
    """The command the network builder runs inside a node namespace for each emulated interface."""
    return ["ethtool", "-K", ifname, *NODE_SIDE_ETHTOOL]


def node_side_threaded_argv(ifname: str) -> list[str]:
    """Threaded NAPI on a node-side interface (run in the node's namespace, after `gro on`).

    Why: a frame the emulator sends into a veth is received by the far node's stack inside that
    send, on the emulator's CPU -- per frame, since an AF_PACKET transmit ring sends frame by
    frame (TCP receive, ACKs and the reader's wake-up took a third of the emulator's time).
    Threaded, the veth's NAPI poll runs in a kernel thread the scheduler puts on another CPU,
    and it drains whole batches. Measured (one link, 20 ms, unshaped iperf3 TCP, interleaved
    runs): 862 / 981 Mbit/s without, 1594 / 1365 with; RPS to the other CPU gave 1153 / 1079 but
    cost an IPI per frame (18 % of the emulator's time under 600 Mbit/s of UDP). sysfs shows the
    namespace it was mounted in, hence a fresh mount in a private mount namespace (as
    `ip netns exec` does; unshare's propagation is private).
    """
    sysfs = "umount -l /sys && mount -t sysfs sysfs /sys"
    return ["unshare", "-m", "sh", "-c", f"{sysfs} && {threaded_napi_script(f'/sys/class/net/{ifname}')}"]


def threaded_napi_script(sysfs_dev: str) -> str:
    """Shell: turn threaded NAPI on for the device at `sysfs_dev` and give the NAPI threads this
    creates (only those) the emulator's real-time priority: a receiving stack at normal priority
    waited behind the machine's other work (probes on an idle 20 ms link: p99 +2.1 ms on a loaded
    machine while the emulator sent them on time, p99 lateness 0.1 ms)."""
    return (f"before=\" $(pgrep -d ' ' '^napi/') \"; echo 1 > {sysfs_dev}/threaded && "
            "for p in $(pgrep '^napi/'); do case \"$before\" in *\" $p \"*) ;; "
            "*) chrt -f -p 1 $p ;; esac; done")  # fmt: skip


def realtime_offset(tries: int = 4) -> tuple[float, float]:
    """(now, CLOCK_REALTIME - CLOCK_MONOTONIC) for converting the rings' kernel receive stamps.

    The realtime read is bracketed by two monotonic reads and the tightest of a few tries is
    kept: an interrupt or softirq between a lone pair would make the offset too large by its
    length, and every arrival converted with it, hence every delivery, that much early."""
    monotonic, realtime = time.monotonic, time.time
    best = (float("inf"), 0.0, 0.0)
    for _ in range(tries):
        t0 = monotonic()
        r = realtime()
        t1 = monotonic()
        if t1 - t0 < best[0]:
            best = (t1 - t0, t1, r - (t0 + t1) / 2)
        if t1 - t0 < 5e-6:
            break
    return best[1], best[2]


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def prepare_interfaces(root_ifs: list[str], mtu: int | None = None) -> None:
    """Make root-namespace veth ends fit for AF_PACKET forwarding (idempotent).

    Up, offloads off, no IPv6, no ARP, optional MTU. Raises RuntimeError naming the interface
    when a required setting does not stick.
    """
    for ifname in root_ifs:
        sysctl = Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
        if sysctl.exists():
            sysctl.write_text("1\n")
        link = ["ip", "link", "set", "dev", ifname, "arp", "off", "up"]
        if mtu is not None:
            link += ["mtu", str(mtu)]
        res = _run(link)
        if res.returncode != 0:
            raise RuntimeError(f"{ifname}: {' '.join(link)}: {res.stderr.strip()}")
        if _run(["ethtool", "-K", ifname, *(x for f in ROOT_SIDE_OFFLOADS for x in (f, "off"))]).returncode:
            for feature in ROOT_SIDE_OFFLOADS:  # an older ethtool refuses the lot for one unknown name
                _run(["ethtool", "-K", ifname, feature, "off"])
        shown = _run(["ethtool", "-k", ifname]).stdout
        for feature in ROOT_SIDE_REQUIRED_OFF:
            for line in shown.splitlines():
                if line.startswith(feature + ":") and " on" in line:
                    raise RuntimeError(f"{ifname}: cannot turn {feature} off")


@dataclass(eq=False)  # hashed by identity: kept in a set of active directions
class _Direction:
    """One direction of one link: frames read on `in_sock`, scheduled, written on `out_sock`."""

    link_id: int
    name: str  # "ab" | "ba"
    model: DirectionModel
    in_sock: socket.socket
    out_sock: socket.socket
    max_frame: int
    ring: _RxRing | None = None  # the in_sock's receive ring, when it has one
    tx: _TxRing | None = None  # the out interface's transmit ring, when it has one
    queue: deque = field(default_factory=deque)  # (deliver_time, frame), FIFO order
    heap: list = field(default_factory=list)  # (deliver_time, seq, frame) when reordering
    oversize: int = 0
    csum_partial: int = 0  # frames whose checksum the sender left to offload (node side not set up)
    rx_errors: int = 0  # socket errors on in_sock (its interface went down or away)
    tx_errors: int = 0
    tx_busy: int = 0  # sends the receiver refused for a full queue (the frames waited, not lost)
    rx_kernel_drops: int = 0  # AF_PACKET receive-buffer overflows on in_sock
    # lateness of each send against its delivery time: the emulator's own timing error
    late: QDelayHistogram = field(default_factory=QDelayHistogram)

    @property
    def use_heap(self) -> bool:
        return self.model.params.reorder or bool(self.heap)

    def pending(self) -> int:
        return len(self.queue) + len(self.heap)

    def flush_pending(self) -> None:
        """Forget all frames in flight (link down) and tell the model."""
        frames = [f for _, f in self.queue] + [f for _, _, f in self.heap]
        self.queue.clear()
        self.heap.clear()
        self.model.discard(len(frames), sum(len(f) for f in frames))

    def kernel_drops(self) -> int:
        raw = self.in_sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        _packets, drops = struct.unpack("II", raw)  # reading resets the kernel's counters
        self.rx_kernel_drops += drops
        return self.rx_kernel_drops

    def reset_stats(self) -> None:
        self.model.reset_stats()
        self.kernel_drops()  # zeroes the kernel's counter
        self.oversize = self.csum_partial = self.rx_errors = self.tx_errors = self.rx_kernel_drops = 0
        self.tx_busy = 0
        if self.tx is not None:
            self.tx.busy = 0
        self.late.reset()

    def stats(self) -> dict[str, Any]:
        out = {"link_id": self.link_id, "direction": self.name, **self.model.stats()}
        out.update(
            in_flight=self.pending(),
            oversize=self.oversize,
            csum_partial=self.csum_partial,
            rx_errors=self.rx_errors,
            tx_errors=self.tx_errors,
            tx_busy=self.tx_busy + (self.tx.busy if self.tx is not None else 0),
            rx_kernel_drops=self.kernel_drops(),
            late_p50_ms=self.late.percentile(50) * 1e3,
            late_p99_ms=self.late.percentile(99) * 1e3,
            late_max_ms=self.late.max_s * 1e3,
        )
        return out


_LIBC = ctypes.CDLL(None, use_errno=True)


def _setsockopt_unlocked(sock: socket.socket, level: int, option: int, value: bytes) -> None:
    """setsockopt() without the GIL (ctypes releases it; socket.setsockopt does not): setting up
    a packet ring waits for an RCU grace period in the kernel, and the links' rings are set up
    from several threads at once (Engine.open), so that their waits overlap."""
    buf = ctypes.create_string_buffer(value, len(value))
    if _LIBC.setsockopt(sock.fileno(), level, option, buf, len(value)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _ring_geometry(max_frame: int, headroom: int, ring_bytes: int) -> tuple[int, int, int, int]:
    """struct tpacket_req for a ring of about `ring_bytes` whose slots hold a frame + header:
    (block size, block count, slot size, slot count)."""
    frame_size = 2048
    while frame_size < max_frame + headroom:
        frame_size *= 2
    block = max(RING_BLOCK_BYTES, frame_size)
    blocks = max(1, ring_bytes // block)
    return block, blocks, frame_size, blocks * (block // frame_size)


class _RxRing:
    """A PACKET_RX_RING (TPACKET_V2) on a packet socket: the kernel copies each frame into a
    shared slot, so reading costs no system call (and no BlockingIOError at the end of a batch).
    """

    def __init__(self, sock: socket.socket, max_frame: int, ring_bytes: int):
        # 128: the slot header and the alignment padding before the frame
        block, blocks, self.frame_size, self.frame_nr = _ring_geometry(max_frame, 128, ring_bytes)
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        req = struct.pack("IIII", block, blocks, self.frame_size, self.frame_nr)  # struct tpacket_req
        _setsockopt_unlocked(sock, SOL_PACKET, PACKET_RX_RING, req)
        self.mm = mmap.mmap(sock.fileno(), block * blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.index = 0

    def close(self) -> None:
        self.mm.close()


class _TxRing:
    """A PACKET_TX_RING (TPACKET_V2) on its own send-only socket: frames are written into shared
    slots and one send() hands the kernel all of them, instead of one system call per frame.
    """

    def __init__(self, ifname: str, max_frame: int):
        geometry = _ring_geometry(max_frame, TX_DATA_OFFSET, TX_RING_BYTES)
        block, blocks, self.frame_size, self.frame_nr = geometry
        self.sock = s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: sends only
        try:
            s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            s.setsockopt(SOL_PACKET, PACKET_LOSS, 1)  # skip a malformed slot instead of stalling
            with contextlib.suppress(OSError):
                s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, 32, SNDBUF_BYTES)  # SO_SNDBUFFORCE
            req = struct.pack("IIII", block, blocks, self.frame_size, self.frame_nr)
            _setsockopt_unlocked(s, SOL_PACKET, PACKET_TX_RING, req)
            s.bind((ifname, 0))
            self.mm = mmap.mmap(s.fileno(), block * blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            s.close()
            raise
        self.index = 0
        self.broken = False  # the last flush failed: interface down or gone
        self.waiting = False  # slots are still requested: a flush at `retry_at` must send them
        self.retry_at = 0.0
        self.busy = 0  # flushes the receiver refused for a full queue (its frames waited)

    def flush(self) -> bool:
        """Hand the kernel every requested slot; False when the interface refused them.

        The far end of a veth takes at most 256 frames until its NAPI thread drains them; a
        frame it refuses (ENOBUFS) stays requested in the ring and the kernel resends it on the
        next flush: the frame waits (counted in `busy`), it is not lost."""
        self.waiting = False
        try:
            self.sock.send(b"", socket.MSG_DONTWAIT)
        except BlockingIOError:  # the slots stay requested: the next flush sends them
            self.waiting = True
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                self.broken = True
                return False
            self.busy += 1
            self.waiting = True
        if self.waiting:
            self.retry_at = time.monotonic() + RETRY_S
        self.broken = False
        return True

    def put(self, frame: bytes) -> bool:
        """Request the next slot for `frame`; False while that slot is still the kernel's.
        (Engine._send_fifo_ring inlines this: it runs for every frame.)"""
        off = self.index * self.frame_size
        if self.mm[off]:
            return False
        start = off + TX_DATA_OFFSET
        self.mm[start : start + len(frame)] = frame
        _U32.pack_into(self.mm, off + 4, len(frame))  # tp_len
        self.mm[off] = TP_STATUS_SEND_REQUEST  # last: the slot is the kernel's from here
        self.index = (self.index + 1) % self.frame_nr
        return True

    def close(self) -> None:
        self.mm.close()
        self.sock.close()


def _packet_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    with contextlib.suppress(OSError):
        s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)  # veth has no qdisc work to do
    for force, plain, size in ((33, socket.SO_RCVBUF, RCVBUF_BYTES), (32, socket.SO_SNDBUF, SNDBUF_BYTES)):
        try:  # SO_*BUFFORCE (root) may exceed net.core.*mem_max
            s.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, plain, size)
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    # frames that arrived before the bind completed may belong to no direction yet: drain them
    with contextlib.suppress(BlockingIOError):
        while True:
            s.recv(RECV_SIZE)
    return s


def _close_quietly(*things: Any) -> None:
    """Close each of `things` in order (a ring before its socket), whatever fails."""
    for thing in things:
        if thing is not None:
            with contextlib.suppress(OSError, ValueError, BufferError):
                thing.close()


def _warn(d: _Direction, what: str) -> None:
    """Once per cause and direction, in the worker's log: a misconfigured node side."""
    print(f"emulator: link {d.link_id} {d.name}: {what}", file=sys.stderr, flush=True)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop()


def _params(d: dict) -> LinkParams:
    return LinkParams(**d)


class Engine:
    """Forwarding loop for the links of one config; controlled through a Unix datagram socket."""

    def __init__(self, config: dict, control_path: str):
        self.config = config
        self.control_path = control_path
        self.dirs: dict[tuple[int, str], _Direction] = {}
        self.by_fd: dict[int, _Direction] = {}
        self.socks: list[socket.socket] = []
        self.seq = itertools.count()
        self.stopping = False
        self.active: set[_Direction] = set()  # directions with frames in flight
        round_us = config.get("round_us")
        self.round = ROUND_S if round_us is None else float(round_us) * 1e-6
        self.wakeups = 0  # loop rounds: each costs ~40 µs, whatever it does
        self.hold = 0.0  # how long after a wake-up arrivals may wait unread (see ROUND_S)

    # -- setup -----------------------------------------------------------------------------
    def open(self) -> None:
        owner = self.config.get("owner_pid")
        self.owner_fd = None
        if owner:
            try:
                self.owner_fd = os.pidfd_open(owner)
            except ProcessLookupError:
                raise SystemExit(f"emulator: owner pid {owner} is gone") from None
            except OSError:  # kernel without pidfd: polled instead
                self.owner_fd = None
        links = self.config["links"]
        with ThreadPoolExecutor(max_workers=min(OPEN_THREADS, len(links)) or 1) as pool:
            futures = [pool.submit(self._open_link, link) for link in links]
        errors = []
        for future in futures:  # in config order: registered (and closed later) even on failure
            try:
                socks, dirs = future.result()
            except (RuntimeError, OSError) as exc:
                errors.append(exc)
                continue
            self.socks += socks
            for d in dirs:
                self.dirs[(d.link_id, d.name)] = d
                self.by_fd[d.in_sock.fileno()] = d
        if errors:
            raise errors[0]
        self._update_hold()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.control_path)
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ctl.bind(self.control_path)
        self.ctl.setblocking(False)
        self.ctl.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        with contextlib.suppress(OSError):  # finer select() wake-ups: timer slack 1 µs
            ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
        _set_priority(self.config.get("priority", "fifo"))

    def _open_link(self, link: dict) -> tuple[list[socket.socket], list[_Direction]]:
        """Interfaces, sockets and rings of one link (run in a thread; see Engine.open)."""
        ifs = [link["if_a"], link["if_b"]]
        if self.config.get("prepare", True):
            prepare_interfaces(ifs, link.get("mtu"))
        opened: list[Any] = []
        try:
            sa = _packet_socket(link["if_a"])
            opened.append(sa)
            sb = _packet_socket(link["if_b"])
            opened.append(sb)
            max_frame = link.get("mtu", 1500) + 18  # Ethernet header and one VLAN tag
            tx_a = self._tx_ring(link["if_a"], max_frame)
            opened.append(tx_a)
            tx_b = self._tx_ring(link["if_b"], max_frame)
            opened.append(tx_b)
            dirs = []
            for name, sin, sout, tx in (("ab", sa, sb, tx_b), ("ba", sb, sa, tx_a)):
                model = DirectionModel(_params(link[name]), int(link[f"seed_{name}"]), link.get("mtu", 1500))
                ring = self._ring(sin, max_frame)
                opened.insert(0, ring)  # a ring closes before its socket
                dirs.append(_Direction(link["link_id"], name, model, sin, sout, max_frame, ring, tx))
        except BaseException:
            _close_quietly(*opened)
            raise
        return [sa, sb], dirs

    def _ring(self, sock: socket.socket, max_frame: int) -> _RxRing | None:
        if not self.config.get("rx_ring", os.environ.get("TESTBED_EMU_RX_RING", "1") != "0"):
            return None
        per_socket = min(RING_MAX_BYTES, RING_TOTAL_BYTES // (2 * len(self.config["links"])))
        try:
            return _RxRing(sock, max_frame, per_socket)
        except OSError as exc:  # no ring: plain recv() works everywhere
            print(f"emulator: no receive ring ({exc}); using recv()", file=sys.stderr)
            return None

    def _tx_ring(self, ifname: str, max_frame: int) -> _TxRing | None:
        if not self.config.get("tx_ring", os.environ.get("TESTBED_EMU_TX_RING", "1") != "0"):
            return None
        try:
            return _TxRing(ifname, max_frame)
        except OSError as exc:  # no ring: one send() per frame works everywhere
            print(f"emulator: no transmit ring ({exc}); using send()", file=sys.stderr)
            return None

    def close(self) -> None:
        """Release every socket and ring, many at once: closing a packet socket with a ring
        waits for an RCU grace period or two in the kernel (~50 ms per link on this VM, 10 s
        for 100 links one after another); concurrent closes share the grace periods."""
        rings = {id(d.in_sock): d.ring for d in self.dirs.values()}
        jobs = [functools.partial(_close_quietly, rings.get(id(s)), s) for s in self.socks]
        jobs += [functools.partial(_close_quietly, d.tx) for d in self.dirs.values() if d.tx is not None]
        self.socks = []
        if jobs:
            with ThreadPoolExecutor(max_workers=min(CLOSE_THREADS, len(jobs))) as pool:
                for _ in pool.map(lambda job: job(), jobs):
                    pass
        if getattr(self, "ctl", None) is not None:
            self.ctl.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.control_path)

    # -- control ---------------------------------------------------------------------------
    def _handle_control(self) -> None:
        while True:
            try:
                data, addr = self.ctl.recvfrom(65536)
            except BlockingIOError:
                return
            try:
                reply = self._control(json.loads(data))
            except Exception as exc:  # a bad request must not stop the forwarding
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            if addr:
                with contextlib.suppress(OSError):
                    self.ctl.sendto(json.dumps(reply).encode(), addr)

    def _dir(self, req: dict) -> list[_Direction]:
        link_id = int(req["link_id"])
        names = [req["direction"]] if req.get("direction") else ["ab", "ba"]
        try:
            return [self.dirs[(link_id, n)] for n in names]
        except KeyError:
            raise KeyError(f"no link {link_id} direction {names} in this emulator") from None

    def _control(self, req: dict) -> dict:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "links": sorted({k[0] for k in self.dirs})}
        if op == "set":
            (d,) = self._dir(req)
            self._set_params(d, _params(req["params"]))
            return {"ok": True}
        if op == "down":
            for d in self._dir(req):
                d.model.set_down(bool(req["down"]))
                if req["down"]:
                    d.flush_pending()
            return {"ok": True}
        if op == "stats":
            out = [d.stats() for d in self.dirs.values()]
            if req.get("reset"):
                for d in self.dirs.values():
                    d.reset_stats()
            return {"ok": True, "stats": out, "cpu_s": sum(os.times()[:2]), "wakeups": self.wakeups}
        if op == "shutdown":
            self.stopping = True
            return {"ok": True, "cpu_s": sum(os.times()[:2])}
        raise ValueError(f"unknown op {op!r}")

    def _update_hold(self) -> None:
        """Arrivals may wait unread for at most half the shortest propagation delay (less three
        jitter deviations) of this process's links, and a round; not at all without receive
        rings (no kernel receive stamps: the read time is the arrival time)."""
        leads = [d.model.params.delay_ms - 3 * d.model.params.jitter_ms for d in self.dirs.values()]
        if not leads or any(d.ring is None for d in self.dirs.values()):
            self.hold = 0.0
            return
        self.hold = max(0.0, min(self.round, min(leads) / 2e3))

    def _set_params(self, d: _Direction, params: LinkParams) -> None:
        d.model.update(params)
        self._update_hold()
        if params.reorder and d.queue:  # from FIFO to heap: move what waits
            for t, frame in d.queue:
                heapq.heappush(d.heap, (t, next(self.seq), frame))
            d.queue.clear()

    # -- forwarding --------------------------------------------------------------------------
    def _read(self, d: _Direction, now: float) -> None:
        got = self._read_ring(d, now) if d.ring is not None else self._read_socket(d, now)
        # readable without frames: an error is pending (interface down or gone). Reading it
        # clears it; left pending, select() would report the socket again at once (a busy loop).
        if not got and d.in_sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            d.rx_errors += 1
        if d.queue or d.heap:
            self.active.add(d)

    def _read_socket(self, d: _Direction, now: float) -> int:
        """Read up to READ_BATCH frames with recv(); return how many."""
        recv = d.in_sock.recv
        offer = d.model.offer
        ip_types = IP_ETHERTYPES
        lossy = d.model.params.loss_pct > 0  # else the frame type does not matter
        max_frame = d.max_frame
        use_heap = d.use_heap
        append = d.queue.append
        monotonic = time.monotonic
        n = 0
        for n in range(READ_BATCH):
            try:
                frame = recv(RECV_SIZE)
            except BlockingIOError:
                return n
            except OSError:
                d.rx_errors += 1
                return n
            now = monotonic()  # the frame was there by now: its arrival can only seem late
            size = len(frame)
            if size > max_frame:
                d.oversize += 1
                if d.oversize == 1:
                    _warn(d, f"frame of {size} bytes above the MTU dropped (node side needs `tso off`)")
                continue
            t = offer(size, now, lossy and (frame[12:14] in ip_types or is_ip_frame(frame)))
            if t is None:
                continue
            if use_heap:
                heapq.heappush(d.heap, (t, next(self.seq), frame))
            else:
                append((t, frame))
        return READ_BATCH

    def _read_ring(self, d: _Direction, now: float) -> int:
        """Take up to READ_BATCH frames from the receive ring; return how many."""
        ring = d.ring
        mm = ring.mm
        size_ = ring.frame_size
        nr = ring.frame_nr
        i = ring.index
        unpack = TP2_HDR.unpack_from
        offer = d.model.offer
        ip_types = IP_ETHERTYPES
        lossy = d.model.params.loss_pct > 0  # else the frame type does not matter
        max_frame = d.max_frame
        use_heap = d.use_heap
        append = d.queue.append
        read_at, offset = realtime_offset()
        n = 0
        while n < READ_BATCH:
            off = i * size_
            status = mm[off]  # low byte of tp_status
            if not status & TP_STATUS_USER:
                break
            n += 1
            _status, length, snaplen, mac, _net, sec, nsec = unpack(mm, off)
            arrival = sec + nsec * 1e-9 - offset
            if arrival > read_at:  # it came while this loop ran (a softirq put it in the ring)
                read_at = time.monotonic()
                if arrival > read_at:  # never after it was read (a clock step): that bounds it
                    arrival = read_at
            start = off + mac
            frame = mm[start : start + snaplen]
            mm[off : off + 4] = RELEASE
            i += 1
            if i == nr:
                i = 0
            if status & TP_STATUS_CSUMNOTREADY:
                d.csum_partial += 1
                if d.csum_partial == 1:
                    _warn(d, "frames without a checksum (node side needs `ethtool -K <if> tx off`)")
            if length > snaplen or length > max_frame:
                d.oversize += 1
                if d.oversize == 1:
                    _warn(d, f"frame of {length} bytes above the MTU dropped (node side needs `tso off`)")
                continue
            t = offer(length, arrival, lossy and (frame[12:14] in ip_types or is_ip_frame(frame)))
            if t is None:
                continue
            if use_heap:
                heapq.heappush(d.heap, (t, next(self.seq), frame))
            else:
                append((t, frame))
        ring.index = i
        return n

    def _send_due(self, now: float, busy: bool = False) -> tuple[float | None, bool]:
        """Send every frame due by now (+ SEND_EARLY_S, or WAKE_EARLY_S when `busy`: no busy-wait
        for the last microseconds then); return the next delivery time and whether it sent."""
        limit = now + (WAKE_EARLY_S if busy else SEND_EARLY_S)
        nxt = None
        idle = []
        sent = False
        for d in self.active:
            q = d.heap or d.queue
            if q and q[0][0] <= limit:
                sent = True
                if d.heap:
                    self._send_heap(d, now, limit)
                elif d.tx is not None:
                    self._send_fifo_ring(d, now, limit)
                else:
                    self._send_fifo(d, now, limit)
                q = d.heap or d.queue
            tx = d.tx
            if tx is not None and tx.waiting:  # frames wait in the ring for the receiver
                if tx.retry_at <= limit:
                    sent = tx.flush() or sent
                if tx.waiting and (nxt is None or tx.retry_at < nxt):
                    nxt = tx.retry_at
            if not q:
                if tx is None or not tx.waiting:
                    idle.append(d)
                continue
            t = q[0][0]
            if nxt is None or t < nxt:
                nxt = t
        for d in idle:
            self.active.discard(d)
        return nxt, sent

    def _send_fifo(self, d: _Direction, now: float, limit: float) -> None:
        q = d.queue
        send = d.out_sock.send
        popleft = q.popleft
        late = d.late
        bins = late.bins
        on_time = 0
        budget = SEND_BATCH
        while q and q[0][0] <= limit and budget:
            budget -= 1
            t, frame = popleft()
            try:
                send(frame)
            except BlockingIOError:  # socket buffer full: retry shortly, without spinning
                q.appendleft((limit + RETRY_S, frame))
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the receiver's queue is full: the frame waits
                    d.tx_busy += 1
                    q.appendleft((limit + RETRY_S, frame))
                    break
                d.tx_errors += 1
            lag = now - t  # inlined QDelayHistogram.add: this runs for every frame
            if lag <= 0.0:
                on_time += 1
            elif lag < 0.01:
                bins[int(lag * 1e5)] += 1
                late.count += 1
                if lag > late.max_s:
                    late.max_s = lag
            else:
                late.add(lag)
        late.count += on_time
        late.zeros += on_time

    def _send_fifo_ring(self, d: _Direction, now: float, limit: float) -> None:
        """As _send_fifo, through the transmit ring: one system call per batch."""
        q = d.queue
        popleft = q.popleft
        tx = d.tx
        mm = tx.mm
        size_ = tx.frame_size
        nr = tx.frame_nr
        i = tx.index
        pack_len = _U32.pack_into
        late = d.late
        bins = late.bins
        on_time = 0
        pending = 0
        budget = SEND_BATCH
        while q and q[0][0] <= limit and budget:
            off = i * size_
            status = mm[off]
            if status:  # slot still owned by the kernel (or refused)
                if pending:
                    if not tx.flush():
                        d.tx_errors += pending  # stuck in the ring: count them lost
                    pending = 0
                    continue
                if status & TP_STATUS_WRONG_FORMAT:
                    mm[off : off + 4] = RELEASE
                    d.tx_errors += 1
                    continue
                if tx.broken:  # the interface refuses frames: lose them, as a cut wire would
                    tx.flush()
                    if tx.broken:
                        popleft()
                        d.tx_errors += 1
                    continue
                q[0] = (limit + RETRY_S, q[0][1])  # ring full: retry shortly, without spinning
                break
            t, frame = popleft()
            budget -= 1
            n = len(frame)
            start = off + TX_DATA_OFFSET
            mm[start : start + n] = frame
            pack_len(mm, off + 4, n)  # tp_len
            mm[off] = TP_STATUS_SEND_REQUEST  # last: the slot is the kernel's from here
            i += 1
            if i == nr:
                i = 0
            pending += 1
            lag = now - t
            if lag <= 0.0:
                on_time += 1
            elif lag < 0.01:
                bins[int(lag * 1e5)] += 1
                late.count += 1
                if lag > late.max_s:
                    late.max_s = lag
            else:
                late.add(lag)
        tx.index = i
        if pending and not tx.flush():
            d.tx_errors += pending
        late.count += on_time
        late.zeros += on_time

    def _send_heap(self, d: _Direction, now: float, limit: float) -> None:
        h = d.heap
        send = d.out_sock.send
        budget = SEND_BATCH
        while h and h[0][0] <= limit and budget:
            budget -= 1
            t, _seq, frame = heapq.heappop(h)
            try:
                send(frame)
            except BlockingIOError:
                heapq.heappush(h, (limit + RETRY_S, next(self.seq), frame))
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the receiver's queue is full: the frame waits
                    d.tx_busy += 1
                    heapq.heappush(h, (limit + RETRY_S, next(self.seq), frame))
                    return
                d.tx_errors += 1
            d.late.add(now - t)

    def run(self) -> None:
        # select() rather than epoll: its timeout has microsecond resolution (epoll: ms).
        # Plain fds: select() would call fileno() on every object on every round.
        rlist = [s.fileno() for s in self.socks] + [self.ctl.fileno()]
        if self.owner_fd is not None:
            rlist.append(self.owner_fd)
        quiet = [self.ctl.fileno()] + ([self.owner_fd] if self.owner_fd is not None else [])
        owner = self.config.get("owner_pid")
        by_fd = self.by_fd
        ctl_fd = self.ctl.fileno()
        monotonic = time.monotonic
        sel = select.select
        last_owner_check = monotonic()
        nxt: float | None = None
        woke = last_work = -1.0
        busy = False  # frames were handled in this round and in one less than 2 rounds before
        rnd = self.round
        while not self.stopping:
            now = monotonic()
            if nxt is None:
                wake_at = now + IDLE_TIMEOUT_S
            else:
                wake_at = nxt - WAKE_EARLY_S
                if busy and now < nxt and wake_at < woke + rnd:  # overdue frames (a send budget
                    wake_at = woke + rnd  # ran out) go at once: waiting would not batch more
            held = woke + self.hold  # arrivals do not wake the loop before this
            if nxt is not None and now < held and now < wake_at:  # deaf to arrivals, then read them
                ready = sel(quiet, (), (), min(held, wake_at) - now)[0]  # control and owner only
                if not ready:
                    ready = sel(rlist, (), (), max(0.0, wake_at - monotonic()))[0]
            else:
                ready = sel(rlist, (), (), max(0.0, wake_at - now))[0]
            woke = monotonic()
            self.wakeups += 1
            got = False
            if ready:
                now = monotonic()
                for fd in ready:
                    d = by_fd.get(fd)
                    if d is not None:
                        self._read(d, now)
                        got = True
                    elif fd == ctl_fd:
                        self._handle_control()
                    else:  # the owner's pidfd: the owner exited
                        return
            now = monotonic()
            nxt, sent = self._send_due(now, busy)
            if got or sent:
                busy = woke - last_work < 2 * rnd
                last_work = woke
            else:  # a wake-up before a deadline, or control only: keep exact timing
                busy = False
            if owner and self.owner_fd is None and now - last_owner_check > 1.0:
                last_owner_check = now
                if not _alive(owner):
                    return


def _set_priority(mode: str) -> None:
    """Keep other processes from delaying the forwarding loop (its delays are the product).

    "fifo" (default): real-time SCHED_FIFO at the lowest priority, so ordinary processes
    (including the receivers our sends wake up) never preempt a due send; the kernel's RT
    throttling still leaves them 5 % of the core. "nice": nice -10. "normal": unchanged.
    """
    try:
        if mode == "fifo":
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            return
    except OSError:
        mode = "nice"
    with contextlib.suppress(OSError):
        if mode == "nice":
            os.setpriority(os.PRIO_PROCESS, 0, -10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m testbed.emulator", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="JSON config (links, seeds, owner_pid)")
    ap.add_argument("--control", required=True, help="Unix datagram socket path to create")
    args = ap.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    engine = Engine(config, args.control)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        engine.open()
        engine.run()
    except _Stop:
        pass
    except (RuntimeError, OSError) as exc:  # a missing interface, a failed setting: one line
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):  # stopping already: let the close finish
            signal.signal(sig, signal.SIG_IGN)
        engine.close()
    return 0
