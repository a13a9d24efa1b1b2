"""Issue 8.3: secrets never reach logged params, tags, artifacts, cards or logs.

The smoke flow (tests/configs/smoke.toml) runs through Metaflow's Runner against the real MLflow server
with HF_TOKEN, MLFLOW_TRACKING_USERNAME/PASSWORD, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, a custom MY_API_KEY and a password inside MLFLOW_TRACKING_URI set to unique canary strings, in the flow's environment only (the
server process was started earlier without them, so anything of theirs it stores came from the run). Then
everything the run wrote is searched for the canaries: the run's directory (outputs under .hps, the
Metaflow datastore, metadata, cards and logs under .metaflow), the shared cache, the MLflow server's store
and artifacts, every run, logged model, registered model and version through the MLflow API, and the
Runner's stdout/stderr. Compressed and encoded files are searched decoded (gzip'd Metaflow artifacts, the
base64 data inside card HTML, parquet tables); :func:`test_scanner_sees_through_every_encoding` checks that.

No config key of this project names a secret (token, secret, password, key: ``hps_core.common.redaction``), so
there is no config value to plant; :func:`test_no_config_key_is_secret_named` fails when one is added, so
that this test grows a canary for it.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import uuid
from pathlib import Path

import pytest

from hps_core.config.schema import PipelineConfig
from hps_core.common.redaction import is_secret_name
from hps_core.tracking.base import flatten_params

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "hps_flow.py"
SMOKE = ROOT / "tests" / "configs" / "smoke.toml"
SECRET_ENV = ("HF_TOKEN", "MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
              "AWS_SESSION_TOKEN", "MY_API_KEY")
CARD_DATA = re.compile(rb'"([A-Za-z0-9+/=]{200,})"')  # Metaflow embeds card components as base64 JSON


def decoded_views(path: Path) -> list[bytes]:
    """The file's bytes and every decoded form a canary could hide in."""
    data = path.read_bytes()
    views = [data]
    if data[:2] == b"\x1f\x8b":
        try:
            views.append(gzip.decompress(data))
        except (OSError, EOFError):
            pass
    for view in list(views):
        for blob in CARD_DATA.findall(view):
            try:
                views.append(base64.b64decode(blob, validate=True))
            except ValueError:
                pass
    if path.suffix == ".parquet":
        import pandas as pd

        views.append(pd.read_parquet(io.BytesIO(data)).to_csv().encode("utf-8", "replace"))
    return views


def files_holding(roots: list[Path], canaries: list[str]) -> dict[str, list[str]]:
    """canary -> files (under ``roots``) that hold it in any decoded view."""
    found: dict[str, list[str]] = {}
    needles = [(c, c.encode()) for c in canaries]
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            views = decoded_views(path)
            for canary, needle in needles:
                if any(needle in v for v in views):
                    found.setdefault(canary, []).append(str(path))
    return found


def mlflow_texts(uri: str) -> list[str]:
    """Every run's params, tags and metric names, every logged model's, every registered model's and
    version's tags and description, every experiment's tags: as text."""
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    experiments = client.search_experiments()
    out = [json.dumps({"experiment": e.name, "tags": e.tags}) for e in experiments]
    ids = [e.experiment_id for e in experiments]
    for run in client.search_runs(ids, max_results=5000):
        out.append(json.dumps({"params": run.data.params, "tags": run.data.tags, "metrics": list(run.data.metrics),
                               "name": run.info.run_name}))
    for model in client.search_logged_models(ids):
        out.append(json.dumps({"tags": model.tags, "params": model.params, "name": model.name}))
    for rm in client.search_registered_models():
        out.append(json.dumps({"name": rm.name, "tags": rm.tags, "description": rm.description}))
        for mv in client.search_model_versions(f"name = '{rm.name}'"):
            out.append(json.dumps({"tags": mv.tags, "description": mv.description, "source": mv.source}))
    return out


def test_scanner_sees_through_every_encoding(tmp_path):
    """The search below can fail: a canary in a gzip'd pickle, in a card's base64 data, in a parquet cell
    and in plain text is found; the file without one is not reported."""
    import pickle

    import pandas as pd

    canary = f"CANARY-{uuid.uuid4().hex}"
    (tmp_path / "artifact").write_bytes(gzip.compress(pickle.dumps({"x": canary})))
    payload = base64.b64encode(json.dumps({"components": [{"text": canary + " " * 200}]}).encode()).decode()
    (tmp_path / "card.html").write_text(f'<script>window.__MF_DATA__["abc"] = "{payload}"</script>')
    pd.DataFrame({"text": [canary]}).to_parquet(tmp_path / "t.parquet")
    (tmp_path / "log.txt").write_text(f"line {canary}\n")
    (tmp_path / "clean.txt").write_text("nothing here")
    found = files_holding([tmp_path], [canary])
    assert sorted(Path(p).name for p in found[canary]) == ["artifact", "card.html", "log.txt", "t.parquet"]
    assert all(canary.encode() not in v for v in decoded_views(tmp_path / "card.html")[:1])  # only decoded


def test_no_config_key_is_secret_named():
    secret_keys = [k for k in flatten_params(PipelineConfig().to_dict()) if is_secret_name(k)]
    assert secret_keys == [], f"plant a canary config value for {secret_keys} in the flow test below"


@pytest.mark.flow
def test_no_secret_reaches_anything_the_run_wrote(tmp_path, mlflow_server_uri, hps_cache_dir):
    from metaflow import Runner

    from tests.mlflow_server import SERVER_ROOTS

    canaries = {name: f"CANARY-{name}-{uuid.uuid4().hex}" for name in SECRET_ENV}
    # Credentials inside the tracking URI too: the run stores the URI masked and each step re-reads it from
    # its environment (hps_core.tracking.base.live_tracking_uri), so the password is in no artifact or log.
    canaries["URI_PASSWORD"] = f"CANARY-URI-{uuid.uuid4().hex}"
    uri_with_password = mlflow_server_uri.replace("://", f"://hps-test:{canaries['URI_PASSWORD']}@", 1)
    env = {**os.environ, **{k: v for k, v in canaries.items() if k != "URI_PASSWORD"},
           "MLFLOW_TRACKING_USERNAME": "hps-test", "MLFLOW_TRACKING_URI": uri_with_password,
           "HPS_CACHE_DIR": str(hps_cache_dir), "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    work = tmp_path / "work"
    work.mkdir()
    with Runner(str(FLOW), cwd=str(work), env=env, show_output=False,
                config=[("config", str(SMOKE))]).run() as running:
        status, run, log = running.status, running.run, running.stdout + running.stderr
    assert status == "successful", log[-3000:]
    # The environment reached the run: it tracked into the server named by the same env dict.
    parent_id = run["end"].task.data.mlflow_parent_run_id
    assert run["end"].task.data.tracking_uri == mlflow_server_uri.replace("://", "://hps-test:***@", 1)
    assert any(t == f"mlflow_run:{parent_id}" for t in run.tags)
    assert len(log) > 1000  # the steps' output was captured, so searching it means something

    values = list(canaries.values())
    found = files_holding([work, Path(hps_cache_dir), SERVER_ROOTS[mlflow_server_uri]], values)
    assert found == {}, f"secrets found in files: {found}"
    texts = mlflow_texts(mlflow_server_uri)
    assert any(parent_id in t for t in texts)  # the run is among what was searched
    assert [v for v in values if any(v in t for t in texts)] == []
    assert [v for v in values if v in log] == []
