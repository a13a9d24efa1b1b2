"""What every flow of this project sets up before Metaflow, MLflow or transformers are imported.

Each flow file starts with ``import flow_env  # noqa: F401``; importing it is the whole job.
"""

import getpass
import os

# Containers and CI often run as root or without $USER; Metaflow refuses both, so name the user.
if not any(os.environ.get(v, "root") != "root" for v in ("METAFLOW_USER", "SUDO_USER", "USERNAME", "USER")):
    _user = getpass.getuser()
    os.environ["METAFLOW_USER"] = _user if _user != "root" else "hps-runner"
# HF_HUB_OFFLINE is left to the user: a hub id in the config means "fetch that model" (the default config
# names none, so nothing downloads by surprise); HF_HUB_OFFLINE=1 keeps to the local hub cache. The start
# step checks every configured model (hps_core.models.sources) before any data step runs.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hps_core.common.redaction import install_output_scrubbing  # noqa: E402

install_output_scrubbing()  # values of HF_TOKEN, *_PASSWORD, *_KEY, ... never reach the step logs
