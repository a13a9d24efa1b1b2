"""MLflow runs, logged models, registry and aliases: the only module of the project that imports mlflow.

Tracking URI (``resolve_tracking_uri``): ``MLFLOW_TRACKING_URI`` when set, else a local SQLite store
``sqlite:///<dir>/mlflow.db`` (MLflow 3's own default; the old ``./mlruns`` file store is refused), with
artifacts under ``<dir>/mlruns`` for experiments created here.

Two trackers share one interface (``Tracker``): ``MlflowTracker`` talks to MLflow, ``NullTracker`` records
nothing, for tests and dry runs, so callers never branch on "is tracking on". The flow's ``start`` step
calls ``create_parent_run``; every later step opens ``child_run(parent_id, ...)`` in its own process; ``end``
calls ``finish_run``. ``MlflowTracker`` sets the process-wide tracking and registry URI (MLflow's model
logging and the SQLite registry read the global one), so use one tracking URI per process.

Models are registered as MLflow 3 logged models of the pyfunc flavor, written as "models from code":
the small ``HFCausalLM`` PythonModel (``hps_core/pyfunc_model.py``) is stored as source inside the model
with the chat renderer it uses (``hps_core/data/chat.py`` as ``code/hps_chat.py``; no pickle, loads
without this project installed) and loads the bundled Hugging Face directory (``artifacts/hf_model``)
with ``local_files_only=True``; it renders each prompt with the model's chat template, as training did. Not the transformers flavor: MLflow 3.17 declares support for transformers
up to 5.17 only (we run 5.23), and it wraps a pipeline/task we do not need; pyfunc keeps loading in our hands.
Metrics given at registration go to the logged model (``LoggedModel.metrics``; linked to the run too)
and are mirrored as ``metric.<name>`` tags on the version: MLflow 3.17's OSS ``ModelVersion`` carries no
metrics (``get_model_version(...).metrics`` is None), so tags are what the registry page shows.

Datasets (``log_file_dataset``, ``log_table_dataset``) are run inputs whose MLflow digest is the first 36
hex digits of our sha256 (MLflow's column limit); the full digest and path ride along as input tags.
``MlflowReader`` is the read-only side (model versions, runs, step runs, JSON artifacts) used by the
lineage walk (``python -m hps_core.lineage``); it creates nothing on the server.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hps_core.redaction import redact_value, scrub_text, secret_values

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

log = logging.getLogger(__name__)

PARENT_RUN_TAG = "mlflow.parentRunId"
MAX_KEY_LEN, MAX_PARAM_LEN, MAX_TAG_LEN = 250, 6000, 8000  # mlflow.utils.validation limits
PARAMS_PER_BATCH, METRICS_PER_BATCH = 100, 1000
DATASET_DIGEST_LEN, MAX_INPUT_TAG_LEN = 36, 500  # MLflow's dataset digest column and input tag limits
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MODEL_TYPE = "hf-causal-lm"
HF_ARTIFACT = "hf_model"  # the HF directory sits at <model>/artifacts/hf_model

# The pyfunc model, logged as code (mlflow "models from code"), and the chat renderer it bundles: both are
# plain files of this package, copied into the model, so a served model needs nothing of hps_core.
PYFUNC_MODEL_FILE = Path(__file__).resolve().parent / "pyfunc_model.py"
CHAT_MODULE_FILE = Path(__file__).resolve().parent / "data" / "chat.py"
BUNDLED_CHAT_MODULE = "hps_chat.py"  # the name pyfunc_model.py imports the renderer by


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


def _local_artifact_root(tracking_uri: str) -> str | None:
    """``<dir>/mlruns`` next to a local SQLite store; None for servers (they decide)."""
    if not tracking_uri.startswith("sqlite:///") or ":memory:" in tracking_uri:
        return None
    return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlruns").as_uri()


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts -> dotted keys; values stringified, secrets masked (``hps_core.redaction``: before
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


def check_hf_model_dir(model_dir: str | Path) -> Path:
    """A Hugging Face directory with config.json and safetensors weights and no pickle files
    (``*.bin``, ``*.pt``, ...: pickle runs code on load, and optimizer state has no place in a registry)."""
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} is not a Hugging Face model directory (no config.json)")
    pickles = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    problems = [] if any(path.rglob("*.safetensors")) else ["holds no *.safetensors weights"]
    problems += [f"holds pickle files ({', '.join(pickles)})"] if pickles else []
    if problems:
        raise ValueError(f"{path} {' and '.join(problems)}. Registered models are safetensors only: export "
                         "the final model with save_pretrained(dir, safe_serialization=True) to a clean dir.")
    return path


def _pip_requirements() -> list[str]:
    reqs = []
    for dist in ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "pandas"):
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist).split('+')[0]}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


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


class NullTracker:
    """Accepts every call and records nothing remote (tests, dry runs). Model dirs are still checked."""

    tracking_uri = "null://"

    def __init__(self) -> None:
        self._n = 0
        self._aliases: dict[tuple[str, str], RegisteredVersion] = {}
        self._versions: dict[str, int] = {}
        self._metrics: dict[str, dict[str, float]] = {}  # model URI -> metrics given at registration

    def _id(self) -> str:
        self._n += 1
        return f"null-run-{self._n}"

    def create_parent_run(self, run_name, tags=None):
        return self._id()

    @contextlib.contextmanager
    def child_run(self, parent_run_id, run_name, tags=None):
        yield self._id()

    def log_params(self, run_id, params):
        flatten_params(params)

    def _noop(self, *args, **kwargs) -> None:
        return None

    finish_run = log_metrics = log_artifact = log_dict = log_figure = log_text = set_tags = _noop
    log_file_dataset = log_table_dataset = _noop

    def artifact_uri(self, run_id, artifact_path):
        return None  # nothing is uploaded: consumers read the producer's local path

    def download_artifacts(self, uri, dst_dir):
        raise TrackingError(f"cannot download {uri}: no MLflow tracker in this process (NullTracker)")

    def register_hf_model(self, run_id, model_dir, registered_name, *, metrics, tags, description,
                          params=None):
        check_hf_model_dir(model_dir)
        version = self._versions[registered_name] = self._versions.get(registered_name, 0) + 1
        self._metrics[f"models:/{registered_name}/{version}"] = {k: float(v) for k, v in metrics.items()}
        return RegisteredVersion(registered_name, version, f"models:/{registered_name}/{version}",
                                 None, run_id)

    def register_artifact_version(self, run_id, local_dir, artifact_path, registered_name, *, tags, description):
        version = self._versions[registered_name] = self._versions.get(registered_name, 0) + 1
        return RegisteredVersion(registered_name, version, f"models:/{registered_name}/{version}", None, run_id)

    def set_alias(self, name, alias, version):
        self._aliases[(name, alias)] = RegisteredVersion(name, int(version), f"models:/{name}/{version}",
                                                         None, None)

    def delete_alias(self, name, alias):
        self._aliases.pop((name, alias), None)

    def get_version_by_alias(self, name, alias):
        return self._aliases.get((name, alias))

    def find_version(self, name, tags):
        return None  # nothing persists between processes here

    def version_metrics(self, version):
        return dict(self._metrics.get(version.model_uri, {}))


class MlflowTracker:
    """Tracker over an MLflow tracking server or local store; one experiment per tracker."""

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = "hps-align") -> None:
        import mlflow

        self.tracking_uri = tracking_uri or resolve_tracking_uri()
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
        for attempt in range(attempts):
            try:
                urllib.request.urlopen(self.tracking_uri.rstrip("/") + "/health", timeout=5).close()
                return
            except urllib.error.HTTPError:
                return  # reachable; auth proxies may not expose /health
            except (urllib.error.URLError, OSError) as e:
                error = e
                if attempt + 1 < attempts:
                    log.warning("MLflow at %s unreachable (%s); retry %d/%d in %d s",
                                self.tracking_uri, e, attempt + 1, attempts - 1, 2 ** attempt)
                    time.sleep(2 ** attempt)
        raise TrackingError(
            f"MLflow tracking server {self.tracking_uri} is unreachable after {attempts} attempts ({error}). "
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

    def log_dict(self, run_id: str, obj: Any, artifact_file: str) -> None:
        with self._guard(f"log {artifact_file}"):
            self.client.log_dict(run_id, redact_value("", obj), artifact_file)

    def log_figure(self, run_id: str, fig: Any, artifact_file: str) -> None:
        with self._guard(f"log {artifact_file}"):
            self.client.log_figure(run_id, fig, artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        with self._guard(f"log {artifact_file}"):
            self.client.log_text(run_id, scrub_text(text), artifact_file)

    # models and registry
    def register_hf_model(self, run_id: str, model_dir: str | Path, registered_name: str, *,
                          metrics: Mapping[str, float], tags: Mapping[str, Any], description: str,
                          params: Mapping[str, Any] | None = None) -> RegisteredVersion:
        """Log ``model_dir`` as a pyfunc logged model of ``run_id``, register it, attach metrics/tags.

        On any failure the half-created version (and a registered model created here, and the logged
        model) are deleted before a TrackingError is raised."""
        import mlflow
        from mlflow.entities import LoggedModelStatus
        from mlflow.exceptions import MlflowException
        from mlflow.models import Model, ModelSignature
        from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

        path = check_hf_model_dir(model_dir)
        str_tags = _str_dict(tags)
        signature = ModelSignature(
            inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("string")]),
            params=ParamSchema([ParamSpec("max_new_tokens", "long", 32),
                                ParamSpec("do_sample", "boolean", False),
                                ParamSpec("temperature", "double", 1.0)]))
        model_id = version = None
        created_registered_model = False
        try:
            run_params = self.client.get_run(run_id).data.params  # as MLflow's own log_model does
            model = self.client.create_logged_model(
                self.experiment_id, name=registered_name, source_run_id=run_id, tags=str_tags,
                params={**run_params, **flatten_params(params or {})}, model_type=MODEL_TYPE)
            model_id = model.model_id
            with tempfile.TemporaryDirectory(prefix="hps-pyfunc-") as tmp, warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*input example", category=UserWarning)
                code = Path(tmp, "hf_causal_lm.py")
                shutil.copyfile(PYFUNC_MODEL_FILE, code)
                chat_module = Path(tmp, "code", BUNDLED_CHAT_MODULE)
                chat_module.parent.mkdir()
                shutil.copyfile(CHAT_MODULE_FILE, chat_module)
                hf_dir = Path(tmp, HF_ARTIFACT)  # MLflow names the copy after the directory (and
                shutil.copytree(path, hf_dir, copy_function=_link_or_copy)  # refuses symlinks)
                Model.log(artifact_path=None, name=registered_name, flavor=mlflow.pyfunc, run_id=run_id,
                          model_id=model_id, python_model=str(code), artifacts={HF_ARTIFACT: str(hf_dir)},
                          code_paths=[str(chat_module)],
                          pip_requirements=_pip_requirements(), signature=signature)
            self.client.finalize_logged_model(model_id, LoggedModelStatus.READY)
            self.log_metrics(run_id, metrics, model_id=model_id)
            try:
                self.client.get_registered_model(registered_name)
            except MlflowException:
                try:
                    self.client.create_registered_model(registered_name)
                    created_registered_model = True
                except MlflowException as e:  # another run created it just now: use theirs
                    if e.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
            version_tags = {**str_tags, **{f"metric.{k}": f"{float(v):.6g}" for k, v in metrics.items()}}
            mv = self.client.create_model_version(
                registered_name, f"models:/{model_id}", run_id=run_id, tags=version_tags,
                description=scrub_text(description), model_id=model_id)
            version = mv.version
            self.client.set_logged_model_tags(model_id, {"mlflow.modelVersions": json.dumps(
                [{"name": registered_name, "version": str(version)}])})
        except Exception as e:
            self._undo_registration(registered_name, version, created_registered_model, model_id)
            raise TrackingError(
                f"registering {path} as {registered_name!r} at MLflow {self.tracking_uri} failed "
                f"(partial version removed): {e}") from e
        return RegisteredVersion(registered_name, int(version), f"models:/{registered_name}/{version}",
                                 model_id, run_id)

    def find_version(self, name: str, tags: Mapping[str, str]) -> RegisteredVersion | None:
        """The newest version of ``name`` carrying all ``tags`` (a resumed run finds what it registered)."""
        from mlflow.exceptions import MlflowException

        clauses = [f"name = '{name}'"] + [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        with self._guard(f"search versions of {name!r}"):
            try:
                found = self.client.search_model_versions(" and ".join(clauses))
            except MlflowException as e:
                if "RESOURCE_DOES_NOT_EXIST" in str(getattr(e, "error_code", "")):
                    return None
                raise
        found = [v for v in found if v.status == "READY"]
        if not found:
            return None
        v = max(found, key=lambda v: int(v.version))
        return RegisteredVersion(name, int(v.version), f"models:/{name}/{v.version}", v.model_id, v.run_id)

    def register_artifact_version(self, run_id: str, local_dir: str | Path, artifact_path: str,
                                  registered_name: str, *, tags: Mapping[str, Any],
                                  description: str) -> RegisteredVersion:
        """Log the files of ``local_dir`` under ``artifact_path`` of ``run_id`` and register them as a new
        version of ``registered_name`` (source ``runs:/<run>/<artifact_path>``): for small models that
        are plain files rather than a pyfunc flavour, such as the routing flow's PPM (JSON coefficients).
        ``mlflow.artifacts.download_artifacts("models:/<name>/<version>")`` gets the files back."""
        from mlflow.exceptions import MlflowException

        self.log_artifact(run_id, local_dir, artifact_path)
        with self._guard(f"register {artifact_path} of run {run_id} as {registered_name!r}"):
            try:
                self.client.get_registered_model(registered_name)
            except MlflowException:
                self.client.create_registered_model(registered_name)
            mv = self.client.create_model_version(registered_name, f"runs:/{run_id}/{artifact_path}", run_id=run_id,
                                                  tags=_str_dict(tags), description=description)
        return RegisteredVersion(registered_name, int(mv.version), f"models:/{registered_name}/{mv.version}",
                                 None, run_id)

    def _undo_registration(self, name, version, created_registered_model, model_id) -> None:
        steps = [(version is not None, self.client.delete_model_version, (name, version)),
                 (created_registered_model, self.client.delete_registered_model, (name,)),
                 (model_id is not None, self.client.delete_logged_model, (model_id,))]
        for wanted, delete, args in steps:
            try:
                if wanted:
                    delete(*args)
            except Exception as e:  # report, keep the original error
                log.warning("cleanup after failed registration at %s: %s", self.tracking_uri, e)

    def set_alias(self, name: str, alias: str, version: int | str) -> None:
        with self._guard(f"set alias {alias!r} on {name} v{version}"):
            self.client.set_registered_model_alias(name, alias, str(version))

    def delete_alias(self, name: str, alias: str) -> None:
        with self._guard(f"delete alias {alias!r} of {name}"):
            self.client.delete_registered_model_alias(name, alias)

    def version_metrics(self, version: RegisteredVersion) -> dict[str, float]:
        """Full-precision metrics of a version: its logged model's, else its ``metric.*`` tags."""
        with self._guard(f"read metrics of {version.model_uri}"):
            return _version_metrics(self.client, version.name, version.version)

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

    def get_version_by_alias(self, name: str, alias: str) -> RegisteredVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(name, alias)
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
                return None
            raise TrackingError(f"MLflow at {self.tracking_uri}: alias {alias!r} of {name}: {e}") from e
        source = mv.source or ""
        model_id = source[len("models:/"):] if source.startswith("models:/m-") else None
        return RegisteredVersion(mv.name, int(mv.version), f"models:/{mv.name}/{mv.version}",
                                 model_id, mv.run_id)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copy2(src, dst)


def _str_dict(d: Mapping[str, Any] | None) -> dict[str, str]:
    """Tags as strings, secrets masked (``hps_core.redaction``)."""
    secrets = secret_values()
    return {str(k): redact_value(str(k), str(v), secrets) for k, v in (d or {}).items()}


TEXT_SUFFIXES = (".json", ".md", ".txt", ".html", ".yaml", ".yml", ".csv", ".log", ".toml")


@contextlib.contextmanager
def _scrubbed_copy(local_path: str | Path) -> Iterator[Path]:
    """``local_path`` itself, or, when one of its text files holds a secret value, a copy with the secrets
    masked (``hps_core.redaction``), so the upload never carries them. Binary files go as they are."""
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


def _version_metrics(client: Any, name: str, version: int | str) -> dict[str, float]:
    mv = client.get_model_version(name, str(version))
    if getattr(mv, "model_id", None):
        metrics = client.get_logged_model(mv.model_id).metrics or []
        if metrics:
            return {m.key: float(m.value) for m in metrics}
    return {k[len("metric."):]: float(v) for k, v in (mv.tags or {}).items() if k.startswith("metric.")}


def parse_model_uri(uri: str) -> tuple[str, str, str]:
    """``models:/<name>/<version>`` -> (name, "version", version); ``models:/<name>@<alias>`` ->
    (name, "alias", alias). Anything else is a ValueError that shows both forms."""
    body = uri[len("models:/"):] if uri.startswith("models:/") else ""
    if "@" in body and "/" not in body:
        name, alias = body.split("@", 1)
        if name and alias:
            return name, "alias", alias
    elif body.count("/") == 1:
        name, version = body.split("/")
        if name and version.isdigit():
            return name, "version", version
    raise ValueError(f"{uri!r} is not a registered model URI; use models:/<name>/<version> "
                     "(models:/hps-policy/3) or models:/<name>@<alias> (models:/hps-policy@champion)")


class MlflowReader:
    """Read-only views of registry entries and runs, as plain dicts, for the lineage walk. Creates
    nothing (no experiment, no run) and leaves the process-wide tracking URI alone."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        import mlflow

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.tracking_uri = tracking_uri or resolve_tracking_uri()
        MlflowTracker._check_reachable(self)  # type: ignore[arg-type]  # same fail-fast probe
        self.client = mlflow.MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)

    _guard = MlflowTracker._guard

    def model_version(self, uri: str) -> dict[str, Any]:
        name, kind, ref = parse_model_uri(uri)
        with self._guard(f"resolve {uri}"):
            mv = (self.client.get_model_version_by_alias(name, ref) if kind == "alias"
                  else self.client.get_model_version(name, ref))
            aliases = [a for a, v in (self.client.get_registered_model(name).aliases or {}).items()
                       if str(v) == str(mv.version)]
            metrics = _version_metrics(self.client, name, mv.version)
        return {"uri": f"models:/{name}/{mv.version}", "name": name, "version": int(mv.version),
                "aliases": sorted(aliases), "run_id": mv.run_id, "model_id": getattr(mv, "model_id", None),
                "source": mv.source, "status": mv.status, "tags": dict(mv.tags or {}),
                "description": mv.description or "", "metrics": metrics}

    def run(self, run_id: str) -> dict[str, Any]:
        with self._guard(f"read run {run_id}"):
            run = self.client.get_run(run_id)
        datasets = []
        for di in (run.inputs.dataset_inputs if run.inputs else None) or []:
            tags = {t.key: t.value for t in di.tags or []}
            datasets.append({"name": di.dataset.name, "digest": di.dataset.digest,
                             "source": di.dataset.source, "context": tags.get("mlflow.data.context"),
                             "sha256": tags.get("hps.sha256"), "path": tags.get("hps.path")})
        return {"run_id": run_id, "name": run.info.run_name, "status": run.info.status,
                "experiment_id": run.info.experiment_id, "params": dict(run.data.params),
                "metrics": dict(run.data.metrics), "tags": dict(run.data.tags), "datasets": datasets}

    def child_runs(self, parent_run_id: str, experiment_id: str) -> dict[str, str]:
        """Run name -> id of the runs whose parent is ``parent_run_id`` (the flow's step runs)."""
        with self._guard(f"list child runs of {parent_run_id}"):
            runs = self.client.search_runs([experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'",
                                           max_results=1000)
        return {r.info.run_name: r.info.run_id for r in runs}

    def run_json(self, run_id: str, artifact_path: str) -> Any | None:
        """A JSON artifact of a run, or None when the run has no such artifact."""
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory(prefix="hps-lineage-") as tmp:
            try:
                local = self.client.download_artifacts(run_id, artifact_path, tmp)
            except (MlflowException, OSError):
                return None
            return json.loads(Path(local).read_text())
