"""Helpers for qtp's process-level tests: a server subprocess and CLI runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
QTP = [sys.executable, "-m", "protocols.qtp.cli"]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`qtp serve` in a subprocess; `target` is HOST:PORT, `client_args` pins its certificate."""

    def __init__(
        self,
        workdir: Path,
        root: Path | None = None,
        args: list[str] | None = None,
        env: dict | None = None,
        port: int | None = None,
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.args = list(args or [])
        self.env = env
        self.port = port or free_udp_port()
        self.state = self.workdir / "server-state"
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / f"server-{self.port}.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def cert(self) -> Path:
        return self.state / "server-cert.pem"

    def client_args(self, cstate: Path | None = None) -> list[str]:
        return [
            "--ca",
            str(self.cert),
            "--state-dir",
            str(cstate or self.workdir / "client-state"),
            "--no-progress",
        ]

    def start(self, timeout: float = 30) -> Server:
        ready = self.workdir / f"ready-{self.port}"
        ready.unlink(missing_ok=True)
        argv = [
            *QTP,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--state-dir",
            str(self.state),
            "--ready-file",
            str(ready),
            *self.args,
        ]
        if self.root is not None:
            argv += ["--root", str(self.root)]
        env = dict(os.environ, **(self.env or {}))
        self._logf = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self._logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"qtp serve exited {self.proc.returncode}: {self.log.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"qtp serve not ready after {timeout} s: {self.log.read_text()}")
            time.sleep(0.05)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._logf.close()
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run(args: list[str], *, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        QTP + [str(a) for a in args],
        cwd=REPO,
        env=dict(os.environ, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stats_of(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def tree(root: Path) -> dict[str, bytes | None]:
    """Relative path -> content (None for directories), internal qtp files excluded."""
    out: dict[str, bytes | None] = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = None if p.is_dir() else p.read_bytes()
    return out
