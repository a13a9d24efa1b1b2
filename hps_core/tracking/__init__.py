"""MLflow runs, logged models, registry and aliases: the only package of the project that imports mlflow.

Two trackers share one interface (``base.Tracker``): ``MlflowTracker`` talks to MLflow, ``NullTracker``
records nothing. ``base`` (interface, URI), ``mlflow_tracker`` (runs, metrics, artifacts, datasets),
``registration`` (logged models, versions, aliases), ``reader`` (the read side), ``pyfunc_model`` (the
served model, logged as code), ``handoff`` (files between steps by artifact URI), ``step_context`` (what
every step function gets).
"""

import os

# Before any mlflow import in this process: no telemetry, no progress bars in step logs.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from hps_core.tracking.base import (  # noqa: E402,F401
    PARENT_RUN_TAG,
    RegisteredVersion,
    Tracker,
    TrackingError,
    flatten_params,
    resolve_tracking_uri,
)
from hps_core.tracking.mlflow_tracker import MlflowTracker  # noqa: E402,F401
from hps_core.tracking.null import NullTracker  # noqa: E402,F401
from hps_core.tracking.reader import MlflowReader, parse_model_uri  # noqa: E402,F401
from hps_core.tracking.registration import check_hf_model_dir  # noqa: E402,F401
