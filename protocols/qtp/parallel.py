"""Striping: one transfer over N connections in N processes (so it scales with cores).

The parent splits the work (chunk ranges of one file or of the generated stream, or the
files of a directory), forks one worker per connection, collects their reports over pipes
(verified chunks, progress, final result) and merges the statistics. Workers run their own
event loop and QUIC connection; the server side spreads them over its worker processes
(SO_REUSEPORT) when it runs with --workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

from .messages import ErrorCode, QtpError

log = logging.getLogger("qtp")


def split_ranges(ranges: list[tuple[int, int]], n: int) -> list[list[tuple[int, int]]]:
    """Cut chunk ranges into at most n groups of nearly equal chunk counts (order kept)."""
    total = sum(b - a for a, b in ranges)
    if total == 0:
        return []
    n = max(1, min(n, total))
    bounds = [total * k // n for k in range(n + 1)]
    groups: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    pos = 0  # chunks before the current range
    for a, b in ranges:
        for k in range(n):
            lo, hi = bounds[k], bounds[k + 1]
            s, e = max(lo, pos), min(hi, pos + (b - a))
            if s < e:
                groups[k].append((a + s - pos, a + e - pos))
        pos += b - a
    return [g for g in groups if g]


def split_items(items: list[Any], n: int, weight: Callable[[Any], int]) -> list[list[Any]]:
    """Greedy balance (largest first) of items over n bins by weight."""
    bins: list[list[Any]] = [[] for _ in range(max(1, n))]
    loads = [0] * len(bins)
    for it in sorted(items, key=weight, reverse=True):
        k = loads.index(min(loads))
        bins[k].append(it)
        loads[k] += weight(it) + 1
    return [b for b in bins if b]


class WorkerFailed(QtpError):
    pass


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Linux: get `sig` when the parent process dies (also if it is SIGKILLed)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(pipe: mpc.Connection, target: Callable, args: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides
    die_with_parent(signal.SIGKILL)

    def report(msg: Any) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            pipe.send(msg)

    try:
        res = asyncio.run(target(*args, report=report))
        report(("done", res))
    except QtpError as exc:
        report(("error", exc.code, exc.message, type(exc).__name__))
    except BaseException as exc:
        report(("error", int(ErrorCode.INTERNAL), f"{type(exc).__name__}: {exc}", "crash"))
        log.debug("worker crashed:\n%s", traceback.format_exc())
    finally:
        with contextlib.suppress(Exception):
            pipe.close()


def run_workers(
    target: Callable,
    arg_list: list[tuple],
    on_report: Callable[[int, Any], None] | None = None,
    poll: Callable[[], None] | None = None,
) -> list[Any]:
    """Run `target(*args, report=...)` (a coroutine function) in one forked process per
    args tuple; return their results in order. Raises the first worker error (the other
    workers are stopped)."""
    ctx = mp.get_context("fork")
    procs, readers = [], {}
    results: list[Any] = [None] * len(arg_list)
    pending = set(range(len(arg_list)))
    error: tuple | None = None
    try:
        for k, args in enumerate(arg_list):
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_child, args=(w, target, args), daemon=True)
            p.start()
            w.close()
            procs.append(p)
            readers[r] = k
        while pending and error is None:
            ready = mpc.wait(list(readers), timeout=0.1)
            if poll is not None:
                poll()
            for r in ready:
                k = readers[r]
                try:
                    msg = r.recv()
                except (EOFError, OSError):
                    del readers[r]
                    if k in pending:
                        code = procs[k].exitcode
                        error = (int(ErrorCode.INTERNAL), f"worker {k} died (exit code {code})", "crash")
                    continue
                kind = msg[0]
                if kind == "done":
                    results[k] = msg[1]
                    pending.discard(k)
                elif kind == "error":
                    error = msg[1:]
                    pending.discard(k)
                elif on_report is not None:
                    on_report(k, msg)
        if error is not None:
            raise WorkerFailed(error[0], error[1])
        return results
    finally:
        deadline = time.monotonic() + (5 if error is None else 0.5)
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()
                p.join(1)
            if p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
        for r in readers:
            r.close()
