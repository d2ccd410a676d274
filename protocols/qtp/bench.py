"""Loopback benchmark: qtp vs the naive use of aioquic, same datagram size and cc.

    python -m protocols.qtp.bench --size 200M --mtu 1500 --reps 3 [--json out.json]

"naive" is what aioquic's documentation suggests: `aioquic.asyncio.serve/connect`, one
stream through the asyncio StreamReader/StreamWriter adapter, `writer.write()` of 1 MiB
pieces with `await writer.drain()`; the receiving side reads and verifies the payload.
Both use the same max_datagram_size and congestion control; each side runs in its own
process. Reported: goodput (payload bits / wall time from before connecting to the
receiver's last byte) and CPU seconds of sender and receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------------------- naive aioquic


async def naive_server(port: int, cert: str, key: str, mds: int, cc: str, ready_file: str) -> None:
    from aioquic.asyncio import serve
    from aioquic.quic.configuration import QuicConfiguration

    from protocols.payload import PayloadVerifier

    cfg = QuicConfiguration(
        is_client=False, alpn_protocols=["naive"], max_datagram_size=mds, congestion_control_algorithm=cc
    )
    cfg.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cpu0 = _cpu_self()
        header = await reader.readexactly(16)
        size, seed = int.from_bytes(header[:8], "big"), int.from_bytes(header[8:], "big")
        v = PayloadVerifier(seed)
        first = None
        while v.position < size:
            data = await reader.read(1 << 20)
            if not data:
                break
            if first is None:
                first = time.time()
            v.feed(data)
        last = time.time()
        writer.write(
            json.dumps(
                {"bytes": v.verified if v.ok else 0, "first": first, "last": last, "cpu": _cpu_self() - cpu0}
            ).encode()
        )
        writer.write_eof()
        handle.writers.append(writer)  # keep it: a collected writer would send FIN early

    handle.writers = []
    await serve(
        "127.0.0.1", port, configuration=cfg, stream_handler=lambda r, w: asyncio.ensure_future(handle(r, w))
    )
    Path(ready_file).write_text("ready")
    await asyncio.Event().wait()


async def naive_client(port: int, size: int, seed: int, mds: int, cc: str) -> dict:
    from aioquic.asyncio import connect
    from aioquic.quic.configuration import QuicConfiguration

    from protocols.payload import payload

    cfg = QuicConfiguration(
        is_client=True,
        alpn_protocols=["naive"],
        max_datagram_size=mds,
        congestion_control_algorithm=cc,
        verify_mode=ssl.CERT_NONE,
    )
    start = time.time()
    cpu0 = _cpu_self()
    async with connect("127.0.0.1", port, configuration=cfg) as conn:
        reader, writer = await conn.create_stream()
        writer.write(size.to_bytes(8, "big") + seed.to_bytes(8, "big"))
        gen = payload(seed)
        for chunk in gen.chunks(0, size, 1 << 20):
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        reply = json.loads(await reader.read())
    return {
        "start": start,
        "end": reply["last"],
        "bytes": reply["bytes"],
        "cpu_sender": _cpu_self() - cpu0,
        "cpu_receiver": reply["cpu"],
    }


# ---------------------------------------------------------------------------- runs


def _py() -> list[str]:
    return [sys.executable]


def _wait_file(path: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(
                f"server did not start (exit {proc.poll()}): {proc.stderr.read() if proc.stderr else ''}"
            )
        time.sleep(0.05)


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_naive(size: int, mds: int, cc: str, cert: str, key: str, workdir: str) -> dict:
    port = _free_port()
    ready = os.path.join(workdir, f"naive-{port}.ready")
    code = (
        f"import asyncio,sys; sys.path.insert(0,{str(HERE)!r}); "
        "from protocols.qtp.bench import naive_server; "
        f"asyncio.run(naive_server({port},{cert!r},{key!r},{mds},{cc!r},{ready!r}))"
    )
    srv = subprocess.Popen([*_py(), "-c", code], stderr=subprocess.PIPE)
    try:
        _wait_file(ready, srv)
        code = (
            f"import asyncio,sys,json; sys.path.insert(0,{str(HERE)!r}); "
            "from protocols.qtp.bench import naive_client; "
            f"print(json.dumps(asyncio.run(naive_client({port},{size},7,{mds},{cc!r}))))"
        )
        out = subprocess.run([*_py(), "-c", code], capture_output=True, text=True, timeout=600)
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(5)
    dur = r["end"] - r["start"]
    return {
        "impl": "naive",
        "goodput_mbps": r["bytes"] * 8 / dur / 1e6,
        "duration_s": dur,
        "bytes": r["bytes"],
        "cpu_sender": r["cpu_sender"],
        "cpu_receiver": r["cpu_receiver"],
    }


def run_qtp(
    size: int,
    mtu: int,
    cc: str,
    cert: str,
    key: str,
    workdir: str,
    connections: int = 1,
    extra: list[str] | None = None,
) -> dict:
    port = _free_port()
    ready = os.path.join(workdir, f"qtp-{port}.ready")
    qtp = [*_py(), "-m", "protocols.qtp.cli"]
    srv = subprocess.Popen(
        [
            *qtp,
            "serve",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--cert",
            cert,
            "--key",
            key,
            "--cc",
            cc,
            "--mtu",
            str(mtu),
            "--ready-file",
            ready,
            "--workers",
            str(connections),
        ],
        stderr=subprocess.PIPE,
        cwd=HERE,
    )
    try:
        _wait_file(ready, srv)
        js = os.path.join(workdir, f"qtp-{port}.json")
        cmd = (
            qtp
            + [
                "send",
                f"127.0.0.1:{port}",
                "--size",
                str(size),
                "--cc",
                cc,
                "--mtu",
                str(mtu),
                "--ca",
                cert,
                "--json",
                js,
                "--no-0rtt",
                "-n",
                str(connections),
                "--state-dir",
                workdir,
            ]
            + (extra or [])
        )
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=HERE)
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        st = json.loads(Path(js).read_text())
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(10)
    return {
        "impl": f"qtp{'' if connections == 1 else f'-n{connections}'}",
        "goodput_mbps": st["goodput_mbps"],
        "duration_s": st["duration_s"],
        "bytes": st["bytes"],
        "cpu_sender": st["cpu_s_client"],
        "cpu_receiver": st["cpu_s_server"],
        "rtt_smoothed_ms": st["rtt_smoothed_ms"],
        "packets_lost": st["packets_lost"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="200M")
    ap.add_argument("--mtu", type=int, default=1500)
    ap.add_argument("--cc", default="cubic")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--connections", type=int, default=1, help="also run qtp with N connections")
    ap.add_argument("--only", choices=["qtp", "naive"])
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from protocols.qtp import certs
    from protocols.qtp.commands import parse_size

    size = parse_size(args.size)
    mds = args.mtu - 28
    with tempfile.TemporaryDirectory(prefix="qtp-bench-") as wd:
        cert, key = map(str, certs.ensure_self_signed(wd))
        rows = []
        for rep in range(args.reps):
            runs = []
            if args.only != "qtp":
                runs.append(lambda: run_naive(size, mds, args.cc, cert, key, wd))
            if args.only != "naive":
                runs.append(lambda: run_qtp(size, args.mtu, args.cc, cert, key, wd))
                if args.connections > 1:
                    runs.append(lambda: run_qtp(size, args.mtu, args.cc, cert, key, wd, args.connections))
            for run in runs:
                r = run()
                r.update(rep=rep, mtu=args.mtu, cc=args.cc, size=size, load=os.getloadavg()[0])
                rows.append(r)
                print(
                    f"rep {rep} {r['impl']:>8}: {r['goodput_mbps']:8.1f} Mbit/s  {r['duration_s']:6.2f} s  "
                    f"cpu snd {r['cpu_sender']:.2f} s rcv {r['cpu_receiver']:.2f} s  (load {r['load']:.1f})",
                    flush=True,
                )
    summary = {}
    for impl in sorted({r["impl"] for r in rows}):
        rs = [r for r in rows if r["impl"] == impl]
        cpu_per_gb = [max(r["cpu_sender"], r["cpu_receiver"]) / (r["bytes"] / 1e9) for r in rs]
        summary[impl] = {
            "goodput_mbps_median": round(statistics.median(r["goodput_mbps"] for r in rs), 1),
            "bottleneck_cpu_s_per_GB_median": round(statistics.median(cpu_per_gb), 2),
            "cpu_bound_goodput_mbps": round(8000 / statistics.median(cpu_per_gb), 1),
        }
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
