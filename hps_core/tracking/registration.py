"""Models registered as MLflow 3 logged models of the pyfunc flavor, written as "models from code".


the small ``HFCausalLM`` PythonModel (``hps_core/tracking/pyfunc_model.py``) is stored as source inside the model
with the chat renderer it uses (``hps_core/data/chat.py`` as ``code/hps_chat.py``; no pickle, loads
without this project installed) and loads the bundled Hugging Face directory (``artifacts/hf_model``)
with ``local_files_only=True``; it renders each prompt with the model's chat template, as training did. Not the transformers flavor: MLflow 3.17 declares support for transformers
up to 5.17 only (we run 5.23), and it wraps a pipeline/task we do not need; pyfunc keeps loading in our hands.
Metrics given at registration go to the logged model (``LoggedModel.metrics``; linked to the run too)
and are mirrored as ``metric.<name>`` tags on the version: MLflow 3.17's OSS ``ModelVersion`` carries no
metrics (``get_model_version(...).metrics`` is None), so tags are what the registry page shows.

"""

from __future__ import annotations

import logging

import importlib.metadata
import json
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hps_core.common.redaction import scrub_text
from hps_core.tracking.base import RegisteredVersion, TrackingError, flatten_params
from hps_core.tracking.base import _link_or_copy, _str_dict

log = logging.getLogger(__name__)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MODEL_TYPE = "hf-causal-lm"
HF_ARTIFACT = "hf_model"  # the HF directory sits at <model>/artifacts/hf_model

# The pyfunc model, logged as code (mlflow "models from code"), and the chat renderer it bundles: both are
# plain files of this package, copied into the model, so a served model needs nothing of hps_core.
PYFUNC_MODEL_FILE = Path(__file__).resolve().parent / "pyfunc_model.py"
CHAT_MODULE_FILE = Path(__file__).resolve().parents[1] / "data" / "chat.py"
BUNDLED_CHAT_MODULE = "hps_chat.py"  # the name pyfunc_model.py imports the renderer by


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
class ModelRegistration:
    """MlflowTracker's registry side: logged models, versions, aliases (``self.client``,
    ``self._guard`` and the run logging come from MlflowTracker)."""

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


def _version_metrics(client: Any, name: str, version: int | str) -> dict[str, float]:
    mv = client.get_model_version(name, str(version))
    if getattr(mv, "model_id", None):
        metrics = client.get_logged_model(mv.model_id).metrics or []
        if metrics:
            return {m.key: float(m.value) for m in metrics}
    return {k[len("metric."):]: float(v) for k, v in (mv.tags or {}).items() if k.startswith("metric.")}
