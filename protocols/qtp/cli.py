"""The `qtp` command: serve, get, put, send, ls.

Exit codes (also in README.md):
  0 ok · 1 local error (files, internal) · 2 usage · 3 connection/handshake failed ·
  4 refused by the server (forbidden, not found, too large, busy, changed, unsupported,
  bad request) · 5 integrity (verification failed after retries) · 6 timeout
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path

import click

from ..base import TransferStats
from . import commands, config
from . import messages as m
from .client import ClientOptions, HandshakeFailed, LocalError, TransferTimeout
from .messages import ErrorCode, QtpError

EXIT_OK, EXIT_LOCAL, EXIT_USAGE, EXIT_CONNECT, EXIT_REFUSED, EXIT_INTEGRITY, EXIT_TIMEOUT = range(7)
DEFAULT_PORT = 4433

REFUSED = {
    ErrorCode.FORBIDDEN,
    ErrorCode.NOT_FOUND,
    ErrorCode.TOO_LARGE,
    ErrorCode.BUSY,
    ErrorCode.CHANGED,
    ErrorCode.UNSUPPORTED,
    ErrorCode.BAD_REQUEST,
    ErrorCode.NO_SPACE,
}


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, HandshakeFailed):
        return EXIT_CONNECT
    if isinstance(exc, TransferTimeout):
        return EXIT_TIMEOUT
    if isinstance(exc, LocalError | OSError):
        return EXIT_LOCAL
    if isinstance(exc, QtpError):
        if exc.code == ErrorCode.INTEGRITY:
            return EXIT_INTEGRITY
        if exc.code == ErrorCode.TIMEOUT:
            return EXIT_TIMEOUT
        if exc.code in REFUSED:
            return EXIT_REFUSED
        if exc.message.startswith("connection closed"):
            return EXIT_CONNECT
        return EXIT_LOCAL
    return EXIT_LOCAL


def parse_target(text: str) -> tuple[str, int]:
    """HOST[:PORT] or [V6]:PORT."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not host:
        raise click.BadParameter(f"no host in {text!r}")
    try:
        p = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise click.BadParameter(f"bad port in {text!r}") from None
    if not 0 < p < 65536:
        raise click.BadParameter(f"port out of range in {text!r}")
    return host, p


class SizeType(click.ParamType):
    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return commands.parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeType()


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="qtp: %(message)s", stream=sys.stderr)
    if verbose < 3:
        logging.getLogger("quic").setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """qtp: QUIC-based bulk transfer (aioquic)."""


# ---------------------------------------------------------------------------- serve


@cli.command()
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    help="Directory to serve (get/put/ls); without it only send/gen.",
)
@click.option("--host", default="", help="Address to listen on (default: all).")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@click.option("--cert", type=click.Path(dir_okay=False, exists=True), help="PEM certificate (chain).")
@click.option("--key", type=click.Path(dir_okay=False, exists=True), help="PEM private key.")
@click.option(
    "--state-dir", type=click.Path(file_okay=False), help="Self-signed cert location (default ~/.cache/qtp)."
)
@click.option("--sink", is_flag=True, help="Verify uploads, then discard them (write nothing).")
@click.option("--read-only", is_flag=True, help="Refuse put and mkdir.")
@click.option(
    "--cc",
    type=click.Choice(config.CONGESTION_CONTROLS),
    default=config.DEFAULT_CC,
    show_default=True,
    help="Congestion control when the server sends.",
)
@click.option("--mtu", type=int, help="Path MTU (default: the route's MTU, capped at 9000).")
@click.option("--bdp", type=SIZE, help="Bandwidth-delay product hint; windows are >= 2 x BDP.")
@click.option(
    "--workers", type=int, default=1, show_default=True, help="Processes sharing the port (SO_REUSEPORT)."
)
@click.option("--socket-buffer", type=SIZE, default="16Mi", show_default=True, help="SO_RCVBUF/SO_SNDBUF.")
@click.option("--max-size", type=SIZE, default="1Ti", show_default=True, help="Largest transfer accepted.")
@click.option("--max-connections", type=int, default=64, show_default=True)
@click.option(
    "--max-transfers", type=int, default=128, show_default=True, help="Concurrent transfers per process."
)
@click.option("--idle-timeout", type=float, default=30.0, show_default=True)
@click.option("--stall-timeout", type=float, default=60.0, show_default=True)
@click.option("--qlog", "qlog_dir", type=click.Path(file_okay=False), help="Write qlog traces here.")
@click.option("--ready-file", type=click.Path(dir_okay=False), help="Write 'HOST PORT' here once listening.")
@click.option("-v", "--verbose", count=True)
def serve(
    root,
    host,
    port,
    cert,
    key,
    state_dir,
    sink,
    read_only,
    cc,
    mtu,
    bdp,
    workers,
    socket_buffer,
    max_size,
    max_connections,
    max_transfers,
    idle_timeout,
    stall_timeout,
    qlog_dir,
    ready_file,
    verbose,
):
    """Run a server until SIGTERM/SIGINT."""
    from . import io
    from .server import ServerOptions
    from .server import serve as run_server

    _setup_logging(verbose)
    if (cert is None) != (key is None):
        raise click.UsageError("--cert and --key go together")
    if root is not None and not Path(root).is_dir():
        raise click.UsageError(f"--root {root} is not a directory")
    try:
        config.ensure_cc(cc)
    except QtpError as exc:
        raise click.UsageError(exc.message) from None
    opts = ServerOptions(
        host=host,
        port=port,
        root=root,
        sink=sink,
        read_only=read_only,
        cert=cert,
        key=key,
        state_dir=state_dir,
        cc=cc,
        mtu=mtu,
        bdp=bdp,
        max_connections=max_connections,
        max_transfers=max_transfers,
        max_size=max_size,
        idle_timeout=idle_timeout,
        stall_timeout=stall_timeout,
        qlog_dir=qlog_dir,
        reuse_port=workers > 1,
        socket_buffer=socket_buffer,
    )
    if not cert:  # create the self-signed certificate once, before any worker starts
        from . import certs

        names = [host] if host and host not in ("0.0.0.0", "::") else []
        opts.cert, opts.key = map(str, certs.ensure_self_signed(state_dir, names))
    try:
        first = io.make_server_socket(host, port, reuse_port=workers > 1)
    except OSError as exc:
        click.echo(f"qtp: cannot listen on {host or '*'}:{port}: {exc.strerror}", err=True)
        sys.exit(EXIT_LOCAL)
    bound = first.getsockname()
    actual_port = bound[1]

    def announce() -> None:
        where = f"{host or '*'}:{actual_port}"
        click.echo(
            f"qtp: serving {root or '(no root: send/gen only)'} on {where} (workers {workers}, cc {cc}, "
            f"certificate {opts.cert})",
            err=True,
        )
        if ready_file:
            tmp = Path(ready_file + ".tmp")
            tmp.write_text(f"{host or '0.0.0.0'} {actual_port}\n")
            tmp.replace(ready_file)

    if workers <= 1:
        asyncio.run(run_server(opts, sock=first, ready=lambda s, a: announce()))
        return
    opts.port = actual_port
    ctx = mp.get_context("fork")
    ready_q = ctx.Queue()
    procs = []

    def worker(k: int) -> None:
        from .parallel import die_with_parent

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        die_with_parent(signal.SIGTERM)
        sock = first if k == 0 else io.make_server_socket(host, actual_port, reuse_port=True)
        asyncio.run(run_server(opts, sock=sock, ready=lambda s, a: ready_q.put(k)))

    for k in range(workers):
        p = ctx.Process(target=worker, args=(k,), daemon=False)
        p.start()
        procs.append(p)
    first.close()
    for _ in range(workers):
        with contextlib.suppress(Exception):
            ready_q.get(timeout=30)
    announce()

    def stop(*_):
        for p in procs:
            if p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in procs:
        p.join()


# ---------------------------------------------------------------------------- client commands


def client_options(f):
    opts = [
        click.option(
            "--cc",
            type=click.Choice(config.CONGESTION_CONTROLS),
            default=config.DEFAULT_CC,
            show_default=True,
            help="Congestion control of this side's sending (the server's for get).",
        ),
        click.option(
            "--connections",
            "-n",
            type=int,
            default=1,
            show_default=True,
            help="Stripe the transfer over N connections in N processes.",
        ),
        click.option(
            "--json",
            "json_path",
            type=click.Path(dir_okay=False, allow_dash=True),
            help="Write TransferStats JSON here ('-' for stdout).",
        ),
        click.option("--insecure", is_flag=True, help="Do not verify the server's certificate."),
        click.option(
            "--ca",
            type=click.Path(dir_okay=False, exists=True),
            help="Trusted CA file; a single self-signed certificate is pinned.",
        ),
        click.option("--server-name", help="Name to verify the certificate against (default: HOST)."),
        click.option("--mtu", type=int, help="Path MTU (default: the route's MTU, capped at 9000)."),
        click.option("--bdp", type=SIZE, help="Bandwidth-delay product hint; windows are >= 2 x BDP."),
        click.option("--chunk-size", type=SIZE, default=str(m.DEFAULT_CHUNK), show_default=True),
        click.option(
            "--socket-buffer", type=SIZE, default="16Mi", show_default=True, help="SO_RCVBUF/SO_SNDBUF."
        ),
        click.option(
            "--state-dir", type=click.Path(file_okay=False), help="Tickets and pins (~/.cache/qtp)."
        ),
        click.option("--qlog", "qlog_dir", type=click.Path(file_okay=False), help="Write qlog traces here."),
        click.option("--no-resume", is_flag=True, help="Ignore partial files from interrupted transfers."),
        click.option("--no-0rtt", "no_0rtt", is_flag=True, help="No session resumption / 0-RTT."),
        click.option(
            "--parallel", type=int, default=8, show_default=True, help="Files in flight (directories)."
        ),
        click.option("--timeout", type=float, default=10.0, show_default=True, help="Handshake timeout (s)."),
        click.option("--idle-timeout", type=float, default=30.0, show_default=True),
        click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal)."),
        click.option("-v", "--verbose", count=True),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _make_options(kw: dict, total: int | None = None) -> ClientOptions:
    chunk = kw["chunk_size"]
    if not m.MIN_CHUNK <= chunk <= m.MAX_CHUNK:
        raise click.BadParameter(
            f"chunk size must be in [{m.MIN_CHUNK}, {m.MAX_CHUNK}]", param_hint="--chunk-size"
        )
    if kw["connections"] < 1:
        raise click.BadParameter("must be >= 1", param_hint="--connections")
    if kw.get("mtu") is not None and not 1228 <= kw["mtu"] <= 65535:
        raise click.BadParameter("must be in [1228, 65535]", param_hint="--mtu")
    try:
        config.ensure_cc(kw["cc"])
    except QtpError as exc:
        raise click.UsageError(exc.message) from None
    return ClientOptions(
        cc=kw["cc"],
        mtu=kw["mtu"],
        insecure=kw["insecure"],
        ca=kw["ca"],
        server_name=kw["server_name"],
        state_dir=kw["state_dir"],
        chunk_size=chunk,
        bdp=kw["bdp"],
        idle_timeout=kw["idle_timeout"],
        handshake_timeout=kw["timeout"],
        qlog_dir=kw["qlog_dir"],
        session_tickets=not kw["no_0rtt"],
        early_data=not kw["no_0rtt"],
        parallel_files=kw["parallel"],
        socket_buffer=kw["socket_buffer"],
        resume=not kw["no_resume"],
    )


class _Terminated(Exception):
    """SIGTERM: end the transfer, still writing the statistics."""


class _Progress:
    def __init__(self, enabled: bool | None, total: int | None, desc: str):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run(kind: str, kw: dict, fn, total: int | None = None) -> None:
    """Run a transfer command: stats JSON (also on failure), summary line, exit code."""
    _setup_logging(kw["verbose"])
    opts = _make_options(kw)
    progress = _Progress(kw["progress"], total, kind)
    opts.progress = progress if progress.bar is not None else None
    code = EXIT_OK

    def terminated(signum, frame):
        raise _Terminated()

    signal.signal(signal.SIGTERM, terminated)
    try:
        stats = fn(opts)
    except (KeyboardInterrupt, _Terminated) as exc:
        progress.close()
        stats = TransferStats(
            protocol="qtp",
            cc=kw["cc"],
            ok=False,
            error="terminated" if isinstance(exc, _Terminated) else "interrupted",
        )
        code = 130
    except (QtpError, OSError) as exc:
        progress.close()
        msg = (
            str(exc)
            if isinstance(exc, QtpError)
            else f"{exc.strerror or exc}: {getattr(exc, 'filename', '')}"
        )
        stats = TransferStats(
            protocol="qtp", cc=kw["cc"], ok=False, error=msg.splitlines()[0] if msg else kind
        )
        code = exit_code_for(exc)
    finally:
        progress.close()
    stats.extra.setdefault("command", kind)
    stats.extra["exit_code"] = code
    if kw["json_path"]:
        if kw["json_path"] == "-":
            click.echo(stats.to_json())
        else:
            stats.write(kw["json_path"])
    if stats.ok:
        if kw["json_path"] != "-":
            click.echo(
                f"qtp {kind}: {stats.bytes} bytes in {stats.duration_s:.3f} s = "
                f"{stats.goodput_mbps:.1f} Mbit/s"
                f" ({stats.extra.get('connections', 1)} connection(s))",
                err=True,
            )
    else:
        click.echo(f"qtp {kind}: error: {stats.error}", err=True)
    sys.exit(code if code or stats.ok else EXIT_INTEGRITY)


@cli.command()
@click.argument("target")
@click.argument("remote")
@click.option(
    "-o", "--output", "local", default=None, help="Local destination (default: REMOTE's name here)."
)
@click.option(
    "--server-cc",
    type=click.Choice(config.CONGESTION_CONTROLS),
    help="Ask the server (the sender) to use this cc.",
)
@client_options
def get(target, remote, local, server_cc, **kw):
    """Download REMOTE (a file or directory, or gen:SIZE[:SEED]) from TARGET (HOST[:PORT])."""
    host, port = parse_target(target)
    gen = commands.parse_gen(remote)

    def run(opts):
        opts.server_cc = server_cc or (kw["cc"] if kw["cc"] != config.DEFAULT_CC else None)
        if gen is not None:
            return _get_gen(host, port, opts, gen[0], gen[1], kw["connections"])
        return commands.get(
            host, port, opts, remote, local or Path(remote.rstrip("/")).name or ".", kw["connections"]
        )

    _run("get", kw, run, total=gen[0] if gen else None)


def _get_gen(host, port, opts, size, seed, connections):
    from .client import Client, unix_now
    from .transfer import IntervalCounter

    stats = TransferStats(protocol="qtp", cc=opts.server_cc or opts.cc, ok=False, start=unix_now())
    counter = IntervalCounter(stats.start)

    async def go():
        client = await Client.connect(host, port, opts, wait_handshake=False)
        try:
            r = await client.get_generated(size, seed, counter=counter)
            return r, commands._conn_summary(client)
        except QtpError as exc:
            raise client.translate(exc) from None
        finally:
            await client.close()

    if connections > 1:
        click.echo("qtp get: gen: payloads use one connection", err=True)
    r, conn = asyncio.run(go())
    stats.ok = True
    stats.first_byte = counter.first
    stats.intervals = counter.intervals()
    commands._finish(stats, r.bytes_verified, counter.last)
    commands._merge_transport(stats, [conn])
    stats.extra.update({"bad_chunks": r.bad_chunks, "connections": 1, "direction": "server->client"})
    return stats


@cli.command()
@click.argument("local")
@click.argument("target")
@click.argument("remote")
@client_options
def put(local, target, remote, **kw):
    """Upload LOCAL (file, directory or gen:SIZE[:SEED]) to REMOTE on TARGET (HOST[:PORT])."""
    host, port = parse_target(target)
    try:
        gen = commands.parse_gen(local)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if gen is None and not Path(local).exists():
        raise click.BadParameter(f"{local} does not exist", param_hint="LOCAL")
    total = gen[0] if gen else (Path(local).stat().st_size if Path(local).is_file() else None)
    _run(
        "put", kw, lambda opts: commands.put(host, port, opts, local, remote, kw["connections"]), total=total
    )


@cli.command()
@click.argument("target")
@click.option("--size", type=SIZE, required=True, help="Bytes to send (e.g. 100M, 1GiB).")
@click.option("--seed", type=int, default=0, show_default=True)
@client_options
def send(target, size, seed, **kw):
    """Send SIZE generated bytes to TARGET's sink; the server verifies and reports timing."""
    host, port = parse_target(target)
    _run("send", kw, lambda opts: commands.send(host, port, opts, size, seed, kw["connections"]), total=size)


@cli.command()
@click.argument("target")
@click.argument("remote", default="")
@client_options
def ls(target, remote, **kw):
    """List REMOTE (a directory, recursively, or a file) on TARGET."""
    _setup_logging(kw["verbose"])
    host, port = parse_target(target)
    opts = _make_options(kw)
    try:
        entries = commands.ls(host, port, opts, remote)
    except (QtpError, OSError) as exc:
        click.echo(f"qtp ls: error: {exc}", err=True)
        sys.exit(exit_code_for(exc))
    if kw["json_path"]:
        text = json.dumps([[e.path, e.type, e.size, e.mtime_ns] for e in entries])
        if kw["json_path"] == "-":
            click.echo(text)
        else:
            Path(kw["json_path"]).write_text(text)
    else:
        for e in entries:
            click.echo(f"{e.size:>14} {e.path}{'/' if e.type == 'dir' else ''}")


def main() -> None:
    """`qtp` entry point. QTP_PROFILE=PREFIX (development aid) writes a cProfile of each
    process to PREFIX.<pid>.prof."""
    prefix = os.environ.get("QTP_PROFILE")
    if not prefix:
        cli()
        return
    import cProfile

    prof = cProfile.Profile(time.process_time)
    prof.enable()
    try:
        cli()
    finally:
        prof.disable()
        prof.dump_stats(f"{prefix}.{os.getpid()}.prof")


if __name__ == "__main__":
    main()
