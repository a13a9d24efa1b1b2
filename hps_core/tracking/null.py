"""A tracker that records nothing, for tests and dry runs, so callers never branch on "is tracking on"."""

from __future__ import annotations

import contextlib
from hps_core.tracking.base import RegisteredVersion, TrackingError, flatten_params
from hps_core.tracking.registration import check_hf_model_dir



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

    def list_artifacts(self, run_id, path):
        return []

    def delete_artifacts(self, run_id, path):
        return None

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
