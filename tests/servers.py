"""Start a real server process for a test, wait until it answers, stop its whole process group after.

Used by tests/mlflow_server.py (MLflow), tests/s3_server.py (moto's S3) and tests/postgres_server.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "<no server log>"


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness check: GET ``url`` answers 200."""
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False
    return check


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


@contextlib.contextmanager
def server_process(name: str, cmd: list[str], *, ready: Callable[[], bool], log_path: Path, timeout_s: float,
                   env: dict[str, str] | None = None, cwd: str | Path | None = None,
                   stop_signal: int = signal.SIGTERM) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` in its own session (output to ``log_path``) until ``ready()``; yield it; stop the group."""
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} before becoming ready; "
                                   f"log tail ({log_path}):\n{tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {timeout_s:.0f}s; log tail ({log_path}):\n{tail(log_path)}")
            time.sleep(0.25)
        yield proc
    finally:
        stop(proc, stop_signal)
