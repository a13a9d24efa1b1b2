"""A real ``mlflow server`` process on 127.0.0.1 for tests (DESIGN section 7).

Use the context manager directly, or import the fixture into ``tests/conftest.py``::

    from tests.mlflow_server import mlflow_server_uri  # noqa: F401  (session-scoped fixture)

The server stores runs and the registry in ``<tmp>/mlflow.db`` and proxies artifacts to
``<tmp>/artifacts``; the whole process group is terminated at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = float(os.environ.get("HPS_TEST_MLFLOW_STARTUP_S", "240"))  # slow on a loaded 2-core box


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_executable() -> list[str]:
    exe = Path(sys.executable).with_name("mlflow")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "<no server log>"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


@contextlib.contextmanager
def mlflow_server(tmp_path: str | Path, timeout_s: float = STARTUP_TIMEOUT_S) -> Iterator[str]:
    """Start ``mlflow server`` in ``tmp_path``; yield ``http://127.0.0.1:<port>``; stop it after."""
    root = Path(tmp_path).resolve()
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log_path = root / "mlflow-server.log"
    cmd = [
        *_mlflow_executable(), "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
    ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode} before becoming "
                                   f"healthy; log tail:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server on {uri} not healthy after {timeout_s:.0f}s; "
                                   f"log tail:\n{_tail(log_path)}")
            time.sleep(0.25)
        yield uri
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def mlflow_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a real MLflow tracking server shared by the test session."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri
