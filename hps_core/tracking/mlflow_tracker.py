"""MLflow runs, logged models, registry and aliases: the only module of the project that imports mlflow.

Tracking URI (``resolve_tracking_uri``): ``MLFLOW_TRACKING_URI`` when set, else a local SQLite store
``sqlite:///<dir>/mlflow.db`` (MLflow 3's own default; the old ``./mlruns`` file store is refused), with
artifacts under ``<dir>/mlruns`` for experiments created here.

Two trackers share one interface (``Tracker``): ``MlflowTracker`` talks to MLflow, ``NullTracker`` records
nothing, for tests and dry runs, so callers never branch on "is tracking on". The flow's ``start`` step
calls ``create_parent_run``; every later step opens ``child_run(parent_id, ...)`` in its own process; ``end``
calls ``finish_run``. ``MlflowTracker`` sets the process-wide tracking and registry URI (MLflow's model
logging and the SQLite registry read the global one), so use one tracking URI per process.

Datasets (``log_file_dataset``, ``log_table_dataset``) are run inputs whose MLflow digest is the first 36
hex digits of our sha256 (MLflow's column limit); the full digest and path ride along as input tags.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hps_core.common.redaction import redact_value, scrub_text, secret_values
from hps_core.tracking.base import live_tracking_uri, mask_uri_credentials, strip_uri_credentials, PARENT_RUN_TAG, TrackingError, _local_artifact_root, flatten_params, resolve_tracking_uri
from hps_core.tracking.registration import ModelRegistration
from hps_core.tracking.base import MAX_KEY_LEN, MAX_TAG_LEN, _link_or_copy, _str_dict

log = logging.getLogger(__name__)


PARAMS_PER_BATCH, METRICS_PER_BATCH = 100, 1000
# MLflow's own HTTP client retries 7 times with a 120 s timeout per attempt: an outage in the middle of a
# step can hang it for 20 minutes or more. These bounds apply unless the user set the variable: a server
# that refuses connections fails a call after 5 retries, sleeping 0+4+8+16+32 s (+ up to 1 s jitter each),
# about 65 s; a server that accepts and never answers after 6 x 60 s + 65 s, about 7 minutes. A retried
# write is not duplicated: MLflow stores a metric once per (key, step, timestamp, value).
HTTP_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


def bound_http_retries(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> dict[str, str]:
    """Set :data:`HTTP_BOUNDS` where ``environ`` has no value of its own; returns the values in force."""
    for name, value in HTTP_BOUNDS.items():
        environ.setdefault(name, value)
    return {name: environ[name] for name in HTTP_BOUNDS}
DATASET_DIGEST_LEN, MAX_INPUT_TAG_LEN = 36, 500  # MLflow's dataset digest column and input tag limits


class MlflowTracker(ModelRegistration):
    """Tracker over an MLflow tracking server or local store; one experiment per tracker."""

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = "hps-align") -> None:
        import mlflow

        bound_http_retries()  # before the first request: MLflow reads these per call
        self.tracking_uri = live_tracking_uri(tracking_uri or resolve_tracking_uri())
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._check_reachable()
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        self.client = mlflow.MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
        with self._guard(f"open experiment {experiment_name!r}"):
            self.experiment_id = self._get_or_create_experiment(experiment_name)

    def _get_or_create_experiment(self, name: str) -> str:
        """Two flows starting at once both find no experiment and both create it: the loser reads it."""
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=_local_artifact_root(self.tracking_uri))
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS" or not (exp := self.client.get_experiment_by_name(name)):
                raise
            return exp.experiment_id

    def _check_reachable(self) -> None:
        """Wait for a server that is briefly down (a restart, a network blip) with bounded retries and
        exponential backoff (``HPS_MLFLOW_CONNECT_RETRIES``, default 5: 1+2+4+8 s), then fail with the URI,
        instead of MLflow's own minutes of retries on every call."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return
        attempts = max(1, int(os.environ.get("HPS_MLFLOW_CONNECT_RETRIES", "5")))
        # /health needs no credentials (urllib cannot send URL userinfo anyway), and the probe trusts what
        # MLflow's own client trusts: a private CA (MLFLOW_TRACKING_SERVER_CERT_PATH) or, if the user chose
        # so, no verification (MLFLOW_TRACKING_INSECURE_TLS).
        health = strip_uri_credentials(self.tracking_uri).rstrip("/") + "/health"
        shown = mask_uri_credentials(self.tracking_uri)
        for attempt in range(attempts):
            try:
                urllib.request.urlopen(health, timeout=5, context=_tls_context()).close()
                return
            except urllib.error.HTTPError:
                return  # reachable; auth proxies may not expose /health
            except (urllib.error.URLError, OSError) as e:
                error = e
                if attempt + 1 < attempts:
                    log.warning("MLflow at %s unreachable (%s); retry %d/%d in %d s",
                                shown, e, attempt + 1, attempts - 1, 2 ** attempt)
                    time.sleep(2 ** attempt)
        raise TrackingError(
            f"MLflow tracking server {shown} is unreachable after {attempts} attempts ({error}). "
            "Start it (see infra/), fix MLFLOW_TRACKING_URI, or unset it to use a local sqlite:///mlflow.db "
            "store; then `resume` the flow: finished steps are not run again."
        ) from error

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        from mlflow.exceptions import MlflowException

        try:
            yield
        except (MlflowException, OSError) as e:
            raise TrackingError(f"MLflow at {self.tracking_uri}: could not {what}: {e}") from e

    # runs
    def create_parent_run(self, run_name: str, tags: Mapping[str, Any] | None = None) -> str:
        with self._guard(f"create run {run_name!r}"):
            return self.client.create_run(self.experiment_id, run_name=run_name,
                                          tags=_str_dict(tags)).info.run_id

    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        with self._guard(f"end run {run_id}"):
            self.client.set_terminated(run_id, status=status)

    @contextlib.contextmanager
    def child_run(self, parent_run_id: str, run_name: str,
                  tags: Mapping[str, Any] | None = None) -> Iterator[str]:
        """A child run under ``parent_run_id``; FAILED (KILLED on interrupt) if the body raises."""
        with self._guard(f"create child run {run_name!r}"):
            run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags={
                **_str_dict(tags), PARENT_RUN_TAG: parent_run_id}).info.run_id
        try:
            yield run_id
        except BaseException as e:
            status = "FAILED" if isinstance(e, Exception) else "KILLED"
            try:
                self.client.set_terminated(run_id, status=status)
            except Exception:  # keep the step's own error
                log.warning("could not mark run %s %s at %s", run_id, status, self.tracking_uri)
            raise
        self.finish_run(run_id)

    def _log_batch(self, run_id: str, kind: str, items: list, size: int) -> None:
        with self._guard(f"log {kind}"):
            for i in range(0, len(items), size):
                self.client.log_batch(run_id, **{kind: items[i:i + size]})

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k[:MAX_KEY_LEN], v[:MAX_TAG_LEN]) for k, v in _str_dict(tags).items()]
        self._log_batch(run_id, "tags", items, PARAMS_PER_BATCH)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Flattened (dotted keys), stringified, truncated, batched. MLflow params are immutable:
        logging a key again with another value fails."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten_params(params).items()]
        self._log_batch(run_id, "params", items, PARAMS_PER_BATCH)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None,
                    model_id: str | None = None) -> None:
        """Batched. Non-finite values are logged as they are (MLflow stores NaN/inf). With ``model_id``
        the metrics also land on that logged model (``get_logged_model(model_id).metrics``)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k[:MAX_KEY_LEN], float(v), now, step or 0, model_id=model_id)
                 for k, v in metrics.items()]
        if bad := [m.key for m in items if not math.isfinite(m.value)]:
            log.info("logging non-finite metrics %s", bad)
        self._log_batch(run_id, "metrics", items, METRICS_PER_BATCH)

    # artifacts
    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str | None = None) -> None:
        with self._guard(f"upload {local_path}"), _scrubbed_copy(local_path) as local_path:
            if Path(local_path).is_dir():
                self.client.log_artifacts(run_id, str(local_path), artifact_path)
            else:
                self.client.log_artifact(run_id, str(local_path), artifact_path)

    def artifact_uri(self, run_id: str, artifact_path: str) -> str:
        """A URI any process that knows the tracking server can download from (``runs:/<id>/<path>``)."""
        return f"runs:/{run_id}/{artifact_path.strip('/')}"

    def download_artifacts(self, uri: str, dst_dir: str | Path) -> Path:
        """Download ``uri`` (file or directory) into ``dst_dir``; returns the local path of what it names."""
        import mlflow.artifacts

        with self._guard(f"download {uri}"):
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst_dir),
                                                            tracking_uri=self.tracking_uri))

    def list_artifacts(self, run_id: str, path: str) -> list[str]:
        """The names (last path part) of the files and folders directly under ``path`` of the run's artifacts."""
        with self._guard(f"list the artifacts under {path}"):
            return [Path(info.path).name for info in self.client.list_artifacts(run_id, path)]

    def delete_artifacts(self, run_id: str, path: str) -> None:
        """Delete ``path`` (a file or folder) from the run's artifacts, where the artifact store allows it
        (local, S3/GCS/Azure, a server's proxied store)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        with self._guard(f"delete the artifacts under {path}"):
            repo = get_artifact_repository(self.client.get_run(run_id).info.artifact_uri)
            repo.delete_artifacts(path)

    def log_dict(self, run_id: str, obj: Any, artifact_file: str) -> None:
        with self._guard(f"log {artifact_file}"):
            self.client.log_dict(run_id, redact_value("", obj), artifact_file)

    def log_figure(self, run_id: str, fig: Any, artifact_file: str) -> None:
        with self._guard(f"log {artifact_file}"):
            self.client.log_figure(run_id, fig, artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        with self._guard(f"log {artifact_file}"):
            self.client.log_text(run_id, scrub_text(text), artifact_file)

    # datasets: MLflow stores at most 36 characters of digest, so it gets the first 36 hex digits of
    # our sha256 and the input tags carry the full one (and, for files, the path) for the lineage walk.
    def log_file_dataset(self, run_id: str, path: str | Path, sha256: str, *, name: str,
                         context: str) -> None:
        """A raw file as a dataset input of ``run_id`` (metadata only: source path + our digest)."""
        from mlflow.data.meta_dataset import MetaDataset

        dataset = MetaDataset(_dataset_source(str(path)), name=name, digest=sha256[:DATASET_DIGEST_LEN])
        self._log_dataset(run_id, dataset, context, {"sha256": sha256, "path": str(path)})

    def log_table_dataset(self, run_id: str, table: Any, *, name: str, sha256: str, source: str,
                          context: str) -> None:
        """A pandas table as a dataset input (schema and row count shown in the UI), digest ours."""
        import mlflow.data

        dataset = mlflow.data.from_pandas(table, source=_dataset_source(source), name=name,
                                          digest=sha256[:DATASET_DIGEST_LEN])
        self._log_dataset(run_id, dataset, context, {"sha256": sha256, "path": source})

    def _log_dataset(self, run_id: str, dataset: Any, context: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import DatasetInput, InputTag

        input_tags = [InputTag("mlflow.data.context", context)]
        input_tags += [InputTag(f"hps.{k}", scrub_text(str(v))[:MAX_INPUT_TAG_LEN]) for k, v in tags.items()]
        with self._guard(f"log dataset {dataset.name!r}"):
            self.client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), input_tags)])






TEXT_SUFFIXES = (".json", ".md", ".txt", ".html", ".yaml", ".yml", ".csv", ".log", ".toml")


@contextlib.contextmanager
def _scrubbed_copy(local_path: str | Path) -> Iterator[Path]:
    """``local_path`` itself, or, when one of its text files holds a secret value, a copy with the secrets
    masked (``hps_core.common.redaction``), so the upload never carries them. Binary files go as they are."""
    path = Path(local_path)
    secrets = secret_values()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    dirty = {}
    for f in files:
        if secrets and f.suffix.lower() in TEXT_SUFFIXES:
            text = f.read_text(encoding="utf-8", errors="replace")
            clean = scrub_text(text, secrets)
            if clean != text:
                dirty[f] = clean
    if not dirty:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="hps-scrubbed-") as tmp:
        copy = Path(tmp, path.name)
        if path.is_dir():
            shutil.copytree(path, copy, copy_function=_link_or_copy)
        for f, clean in dirty.items():
            target = copy if path.is_file() else copy / f.relative_to(path)
            target.unlink(missing_ok=True)  # a hard link: replace, never write through to the original
            target.write_text(clean, encoding="utf-8")
        yield copy


def _dataset_source(path: str) -> Any:
    """A local-path dataset source; MLflow's resolver warns that two registered source types both fit."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways")
        return resolve_dataset_source(path)


def _tls_context():
    """The TLS settings MLflow's client uses, for the reachability probe (None: Python's defaults)."""
    import ssl

    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return ssl._create_unverified_context()  # the user turned verification off for MLflow itself
    cafile = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    return ssl.create_default_context(cafile=cafile) if cafile else None
