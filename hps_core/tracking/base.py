"""What every tracker shares: the Tracker interface, registered versions, errors, the tracking URI.

Tracking URI (``resolve_tracking_uri``): ``MLFLOW_TRACKING_URI`` when set, else a local SQLite store
``sqlite:///<dir>/mlflow.db`` (MLflow 3's own default; the old ``./mlruns`` file store is refused), with
artifacts under ``<dir>/mlruns`` for experiments created here.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hps_core.common.redaction import redact_value, secret_values


log = logging.getLogger(__name__)

MAX_KEY_LEN, MAX_PARAM_LEN, MAX_TAG_LEN = 250, 6000, 8000  # mlflow.utils.validation limits
PARENT_RUN_TAG = "mlflow.parentRunId"


class TrackingError(RuntimeError):
    """A tracking failure a user can act on; the message names the tracking URI."""


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: int
    model_uri: str  # models:/<name>/<version>
    model_id: str | None  # the MLflow 3 logged model behind the version
    run_id: str | None


def resolve_tracking_uri(default_dir: str | Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<abs default_dir or cwd>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    if os.environ.get("METAFLOW_KUBERNETES_WORKLOAD"):
        # Every step is its own pod: a local store would be a new, empty database per step.
        raise TrackingError(
            "MLFLOW_TRACKING_URI is not set in this Kubernetes pod, so MLflow would write to a local file that "
            "dies with the pod. Put it in the Kubernetes secret named by METAFLOW_KUBERNETES_SECRETS "
            "(infra/README.md, 'Secrets')."
        )
    base = Path(default_dir) if default_dir is not None else Path.cwd()
    return f"sqlite:///{(base.expanduser().resolve() / 'mlflow.db').as_posix()}"


_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:]*)(?::(?P<password>[^/@]*))?@")
CREDENTIALS_MASK = "***"


def mask_uri_credentials(uri: str) -> str:
    """``uri`` without the credentials a ``scheme://user:password@host`` (or ``scheme://token@host``) URI
    carries: the form a run may store (Metaflow artifacts, printed lines). :func:`live_tracking_uri` turns
    it back into the real one from the environment."""
    m = _USERINFO.match(uri)
    if not m:
        return uri
    user = CREDENTIALS_MASK if m["password"] is None else f"{m['user']}:{CREDENTIALS_MASK}"
    return f"{m['scheme']}{user}@{uri[m.end():]}"


def strip_uri_credentials(uri: str) -> str:
    """``uri`` with its ``user:password@`` part removed (for requests that carry no credentials)."""
    m = _USERINFO.match(uri)
    return uri if not m else m["scheme"] + uri[m.end():]


def live_tracking_uri(stored: str) -> str:
    """The tracking URI to connect with, given the one a run stored: as stored when it carried no
    credentials; else ``MLFLOW_TRACKING_URI`` from this process's environment, when it is the same URI with
    its credentials (each step reads them there, so they are never written into the run)."""
    if CREDENTIALS_MASK not in stored or mask_uri_credentials(stored) != stored:
        return stored
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env and mask_uri_credentials(env) == stored:
        return env
    raise TrackingError(
        f"the run's MLflow tracking URI {stored} carries credentials, which a run never stores; set "
        "MLFLOW_TRACKING_URI to that URI with its credentials in this step's environment (on Kubernetes: the "
        "secret named by METAFLOW_KUBERNETES_SECRETS), or put them in MLFLOW_TRACKING_USERNAME / "
        "MLFLOW_TRACKING_PASSWORD and leave them out of the URI")


def _local_artifact_root(tracking_uri: str) -> str | None:
    """``<dir>/mlruns`` next to a local SQLite store; None for servers (they decide)."""
    if not tracking_uri.startswith("sqlite:///") or ":memory:" in tracking_uri:
        return None
    return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlruns").as_uri()


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts -> dotted keys; values stringified, secrets masked (``hps_core.common.redaction``: before
    truncation, so no cut-off piece of a secret survives), truncated to MLflow's limits."""
    secrets = secret_values()
    return {name[:MAX_KEY_LEN]: redact_value(name, value, secrets)[:MAX_PARAM_LEN]
            for name, value in _flat_strings(params, prefix)}


def _flat_strings(params: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, str]]:
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flat_strings(value, f"{name}.")
        else:
            yield name, str(value)


class Tracker(Protocol):
    tracking_uri: str

    def create_parent_run(self, run_name: str, tags: Mapping[str, Any] | None = None) -> str: ...
    def finish_run(self, run_id: str, status: str = "FINISHED") -> None: ...
    def child_run(self, parent_run_id: str, run_name: str,
                  tags: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager[str]: ...
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None,
                    model_id: str | None = None) -> None: ...
    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str | None = None) -> None: ...
    def artifact_uri(self, run_id: str, artifact_path: str) -> str | None: ...
    def download_artifacts(self, uri: str, dst_dir: str | Path) -> Path: ...
    def list_artifacts(self, run_id: str, path: str) -> list[str]: ...
    def delete_artifacts(self, run_id: str, path: str) -> None: ...
    def log_dict(self, run_id: str, obj: Any, artifact_file: str) -> None: ...
    def log_figure(self, run_id: str, fig: Any, artifact_file: str) -> None: ...
    def log_text(self, run_id: str, text: str, artifact_file: str) -> None: ...
    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None: ...
    def register_hf_model(self, run_id: str, model_dir: str | Path, registered_name: str, *,
                          metrics: Mapping[str, float], tags: Mapping[str, Any], description: str,
                          params: Mapping[str, Any] | None = None) -> RegisteredVersion: ...
    def set_alias(self, name: str, alias: str, version: int | str) -> None: ...
    def register_artifact_version(self, run_id: str, local_dir: str | Path, artifact_path: str,
                                  registered_name: str, *, tags: Mapping[str, Any],
                                  description: str) -> RegisteredVersion: ...
    def find_version(self, name: str, tags: Mapping[str, str]) -> RegisteredVersion | None: ...
    def delete_alias(self, name: str, alias: str) -> None: ...
    def get_version_by_alias(self, name: str, alias: str) -> RegisteredVersion | None: ...
    def version_metrics(self, version: RegisteredVersion) -> dict[str, float]: ...
    def log_file_dataset(self, run_id: str, path: str | Path, sha256: str, *, name: str,
                         context: str) -> None: ...
    def log_table_dataset(self, run_id: str, table: Any, *, name: str, sha256: str, source: str,
                          context: str) -> None: ...


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copy2(src, dst)


def _str_dict(d: Mapping[str, Any] | None) -> dict[str, str]:
    """Tags as strings, secrets masked (``hps_core.common.redaction``)."""
    secrets = secret_values()
    return {str(k): redact_value(str(k), str(v), secrets) for k, v in (d or {}).items()}
