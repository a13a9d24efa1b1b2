"""A real ``mlflow server`` process on 127.0.0.1 for tests (DESIGN section 7).

Use the context manager directly, or import the fixture into ``tests/conftest.py``::

    from tests.mlflow_server import mlflow_server_uri  # noqa: F401  (session-scoped fixture)

The server stores runs and the registry in ``<tmp>/mlflow.db`` and proxies artifacts to
``<tmp>/artifacts``; the whole process group is terminated at the end. ``app_name="basic-auth"`` runs
MLflow's auth app (its settings come from ``env``: ``MLFLOW_AUTH_CONFIG_PATH`` and the admin password);
``/health`` stays open under it, so readiness is checked the same way.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.servers import free_port, http_ok, server_process

STARTUP_TIMEOUT_S = float(os.environ.get("HPS_TEST_MLFLOW_STARTUP_S", "240"))  # slow on a loaded 2-core box
SERVER_ROOTS: dict[str, Path] = {}  # URI of a running server -> its directory (store, artifacts/, log)


def _mlflow_executable() -> list[str]:
    exe = Path(sys.executable).with_name("mlflow")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]


@contextlib.contextmanager
def mlflow_server(tmp_path: str | Path, timeout_s: float = STARTUP_TIMEOUT_S,
                  backend_store_uri: str | None = None, app_name: str | None = None,
                  env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Start ``mlflow server`` in ``tmp_path``; yield ``http://127.0.0.1:<port>``; stop it after.

    ``backend_store_uri`` (runs and registry) defaults to ``sqlite:///<tmp_path>/mlflow.db``; ``app_name``
    is passed as ``--app-name`` (e.g. ``basic-auth``); ``env`` is added to the server's environment."""
    root = Path(tmp_path).resolve()
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        *_mlflow_executable(), "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", backend_store_uri or f"sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
        *(["--app-name", app_name] if app_name else []),
    ]
    server_env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", **(env or {})}
    server_env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"http://127.0.0.1:{port}"
    with server_process("mlflow server", cmd, ready=http_ok(f"{uri}/health"), log_path=root / "mlflow-server.log",
                        timeout_s=timeout_s, env=server_env, cwd=root):
        SERVER_ROOTS[uri] = root
        try:
            yield uri
        finally:
            SERVER_ROOTS.pop(uri, None)


@pytest.fixture(scope="session")
def mlflow_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a real MLflow tracking server shared by the test session."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri
