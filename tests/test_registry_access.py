"""Issue 18.6, who may touch the registry: a real ``mlflow server --app-name basic-auth`` on 127.0.0.1 with the
deployed auth settings (infra/mlflow_basic_auth.ini, the ConfigMap of infra/k8s/mlflow.yaml; only the users
database moves to a SQLite file in tmp).

- without credentials the REST API answers 401, while /health (the pods' probes) stays open;
- infra/mlflow_access.py, run as an operator runs it, creates the pipeline, reviewer and overruler users and
  their grants; re-running it changes nothing but a grant altered by hand, a non-admin account is refused,
  and ``rotate`` replaces a password at once;
- the smoke flow runs with the pipeline user's credentials only, registers its versions, and the server
  refuses none of its requests (flow marker; with EDIT instead of MANAGE on the experiment, deleting
  superseded checkpoint copies was refused);
- a reviewer (READ) reads versions, lineage (``python -m hps_core.lineage``), and run and model metrics, but
  registering a version, moving or deleting ``champion``, tagging a version or starting a run in the
  pipeline's experiment is refused with 403, and the registry is the same afterwards;
- an overruler (MANAGE) may move ``champion``.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import json
import os
import re
import runpy
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

from tests.mlflow_server import SERVER_ROOTS, mlflow_server
from tests.test_registry_flow import SMOKE, _env, _lineage, _run_flow

ROOT = Path(__file__).resolve().parent.parent
ACCESS_TOOL = ROOT / "infra" / "mlflow_access.py"
AUTH_INI = ROOT / "infra" / "mlflow_basic_auth.ini"
ADMIN = ("admin", "admin-password-for-tests")
PIPELINE, REVIEWER, OVERRULER = ("hps-pipeline", "pipeline-pw-0123"), ("alice", "reviewer-pw-0123"), \
    ("carol", "overruler-pw-0123")
SFT_NAME, POLICY_NAME, EXPERIMENT = "access-sft", "access-policy", "hps-access"

pytestmark = pytest.mark.slow  # a real server starts (a minute or two on 2 loaded cores); flow runs are marked flow


def _creds(user: tuple[str, str]) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": user[0], "MLFLOW_TRACKING_PASSWORD": user[1]}


@contextlib.contextmanager
def as_user(user: tuple[str, str]) -> Iterator[None]:
    """MLflow's client reads the credentials from the environment at every request."""
    with mock.patch.dict(os.environ, _creds(user)):
        yield


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-auth")
    ini = configparser.ConfigParser()
    ini.read(AUTH_INI)
    ini["mlflow"]["database_uri"] = f"sqlite:///{root / 'basic_auth.db'}"
    with open(root / "basic_auth.ini", "w") as f:
        ini.write(f)
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(root / "basic_auth.ini"), "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-flask-secret"}
    with mlflow_server(root, app_name="basic-auth", env=env) as uri:
        yield uri


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    # Names of this module; floors only, so the first version reliably becomes champion (as test_registry_flow).
    path = tmp_path_factory.mktemp("access-config") / "smoke-access.toml"
    path.write_text(SMOKE.read_text().replace("[data]\n", f'[run]\nexperiment = "{EXPERIMENT}"\n\n[data]\n', 1)
                    + f'\n[register]\nsft_name = "{SFT_NAME}"\npolicy_name = "{POLICY_NAME}"\n'
                    'floors = "margin_hardest > 0"\n')
    return path


def _access_tool(uri: str, admin: tuple[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, **_creds(admin),
           **{f"MLFLOW_ACCESS_PASSWORD_{name.upper().replace('-', '_')}": pw
              for name, pw in (PIPELINE, REVIEWER, OVERRULER)}}
    return subprocess.run([sys.executable, str(ACCESS_TOOL), *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _ensure_args(config: Path) -> list[str]:
    return ["ensure", "--config", str(config), "--pipeline", PIPELINE[0], "--reviewer", REVIEWER[0],
            "--overruler", OVERRULER[0]]


@pytest.fixture(scope="module")
def users(auth_server, config) -> str:
    out = _access_tool(auth_server, ADMIN, *_ensure_args(config))
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _http_status(url: str, user: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(user).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_unauthenticated_requests_are_refused_but_health_is_open(auth_server):
    for path in ("/api/2.0/mlflow/experiments/search?max_results=10",
                 "/api/2.0/mlflow/registered-models/search", "/api/2.0/mlflow/model-versions/search"):
        assert _http_status(auth_server + path) == 401, path
    assert _http_status(auth_server + "/health") == 200  # the Deployment's readiness and liveness probes


def test_access_tool_grants_roles_idempotently_and_needs_the_admin(auth_server, config, users):
    from mlflow.server import get_app_client

    assert f"user {PIPELINE[0]} (pipeline): created" in users
    assert f"{PIPELINE[0]}: MANAGE on experiment {EXPERIMENT}: granted (effective MANAGE)" in users
    assert f"{OVERRULER[0]}: MANAGE on registered model {POLICY_NAME}: granted (effective MANAGE)" in users
    with as_user(ADMIN):  # a grant changed by hand: the reviewer made MANAGE of the policy model
        auth = get_app_client("basic-auth", tracking_uri=auth_server)
        auth.revoke_user_permission(REVIEWER[0], "registered_model", POLICY_NAME)
        auth.grant_user_permission(REVIEWER[0], "registered_model", POLICY_NAME, "MANAGE")
    again = _access_tool(auth_server, ADMIN, *_ensure_args(config))
    assert again.returncode == 0, again.stderr
    assert f"user {REVIEWER[0]} (reviewer): exists" in again.stdout and "created" not in again.stdout
    assert "granted" not in again.stdout
    assert f"{REVIEWER[0]}: READ on registered model {POLICY_NAME}: changed from MANAGE (effective READ)" in again.stdout
    with as_user(ADMIN):
        got = {(u, kind, name): auth.get_user_permission(u, kind, name).permission
               for u, _ in (PIPELINE, REVIEWER, OVERRULER) for kind, name in
               (("registered_model", SFT_NAME), ("registered_model", POLICY_NAME))}
    assert got == {(u, "registered_model", n): perm for u, perm in
                   ((PIPELINE[0], "MANAGE"), (REVIEWER[0], "READ"), (OVERRULER[0], "MANAGE"))
                   for n in (SFT_NAME, POLICY_NAME)}
    refused = _access_tool(auth_server, REVIEWER, *_ensure_args(config))
    assert refused.returncode == 2 and "is not an admin" in refused.stderr, refused.stderr


def _refusals(uri: str) -> list[str]:
    """The requests the server answered 401 or 403 so far, from its access log."""
    log = SERVER_ROOTS[uri] / "mlflow-server.log"
    return [line for line in log.read_text(errors="replace").splitlines() if re.search(r'" 40[13] ', line)]


def test_rotate_changes_a_password_at_once(auth_server, users):
    """``rotate`` in-process (the same main() the operator's command runs): the old password stops working."""
    tool = SimpleNamespace(**runpy.run_path(str(ACCESS_TOOL), run_name="mlflow_access"))  # infra/ is no package
    search = auth_server + "/api/2.0/mlflow/registered-models/search"
    rotated = "rotated-pw-0123"
    for old, new in ((REVIEWER[1], rotated), (rotated, REVIEWER[1])):  # and back, for the tests below
        with mock.patch.dict(os.environ, {**_creds(ADMIN), tool.password_env(REVIEWER[0]): new}):
            assert tool.main(["--tracking-uri", auth_server, "rotate", REVIEWER[0]]) == 0
        assert _http_status(search, (REVIEWER[0], old)) == 401
        assert _http_status(search, (REVIEWER[0], new)) == 200


@pytest.fixture(scope="module")
def flow_run(auth_server, config, users, hps_cache_dir, tmp_path_factory):
    """The smoke flow with the pipeline user's credentials (and no others) in its environment; also the
    requests of the run that the server refused (none expected: a refusal the flow tolerates, such as a
    failed delete of checkpoint copies, is only a warning in the flow's log)."""
    workdir = tmp_path_factory.mktemp("access-flow")
    env = {**_env(auth_server, hps_cache_dir), **_creds(PIPELINE)}
    before = len(_refusals(auth_server))
    status, run, log = _run_flow(workdir, config, env)
    assert status == "successful", log[-5000:]
    return workdir, run, _refusals(auth_server)[before:]


def _registry(uri: str) -> dict:
    """Everything a reviewer's attempts could change, read as the admin: versions, their tags and
    descriptions, aliases, and the runs of the pipeline's experiment."""
    from mlflow import MlflowClient

    with as_user(ADMIN):
        client = MlflowClient(uri, registry_uri=uri)
        state = {}
        for name in (SFT_NAME, POLICY_NAME):
            state[name] = {"aliases": dict(client.get_registered_model(name).aliases), "versions": {
                v.version: (v.status, v.run_id, v.source, v.description, dict(v.tags))
                for v in client.search_model_versions(f"name = '{name}'")}}
        exp = client.get_experiment_by_name(EXPERIMENT)
        state["runs"] = sorted(r.info.run_id for r in client.search_runs([exp.experiment_id]))
        return state


def _refused(call, *args, **kwargs) -> None:
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as e:
        call(*args, **kwargs)
    assert (e.value.get_http_status_code(), e.value.error_code) == (403, "PERMISSION_DENIED"), str(e.value)


@pytest.mark.flow
def test_flow_registers_with_the_pipeline_users_credentials(auth_server, flow_run):
    _, run, refused = flow_run
    assert refused == []
    state = _registry(auth_server)
    assert run["end"].task.data.registered["hps"] == f"models:/{POLICY_NAME}/1"
    assert list(state[SFT_NAME]["versions"]) == ["1"] and list(state[POLICY_NAME]["versions"]) == ["1"]
    assert state[POLICY_NAME]["aliases"] == {"challenger": "1", "champion": "1"}
    assert state[POLICY_NAME]["versions"]["1"][4]["metaflow.pathspec"] == run.pathspec


@pytest.mark.flow
def test_reviewer_reads_everything_but_changes_nothing(auth_server, flow_run, hps_cache_dir):
    from mlflow import MlflowClient

    workdir, run, _ = flow_run
    before = _registry(auth_server)
    with as_user(REVIEWER):
        client = MlflowClient(auth_server, registry_uri=auth_server)
        # read: versions, their lineage tags, the run's and the logged model's metrics
        [v] = client.search_model_versions(f"name = '{POLICY_NAME}'")
        assert client.get_model_version_by_alias(POLICY_NAME, "champion").version == v.version
        assert v.tags["parent_version"] == f"models:/{SFT_NAME}/1" and v.tags["config_digest"]
        assert client.get_model_version(SFT_NAME, "1").run_id
        assert client.get_run(v.run_id).data.metrics
        model_id = v.source.removeprefix("models:/")  # search results carry no model_id; the source names it
        assert {m.key for m in client.get_logged_model(model_id).metrics} >= {"margin_hardest", "harmful_rate"}
        # write: each refused with 403
        _refused(client.create_model_version, POLICY_NAME, v.source, run_id=v.run_id, model_id=model_id)
        _refused(client.set_registered_model_alias, POLICY_NAME, "champion", v.version)
        _refused(client.delete_registered_model_alias, POLICY_NAME, "champion")
        _refused(client.set_model_version_tag, POLICY_NAME, v.version, "gate.decision", "overruled")
        _refused(client.create_run, client.get_experiment_by_name(EXPERIMENT).experiment_id)
    assert _registry(auth_server) == before

    # The whole lineage walk, as the reviewer, from the flow's working directory.
    out = _lineage(workdir, {**_env(auth_server, hps_cache_dir), **_creds(REVIEWER)},
                   f"models:/{POLICY_NAME}@champion", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    chain = json.loads(out.stdout)
    assert chain["links"] and all(v is True for v in chain["links"].values()), chain["links"]
    assert chain["metaflow_run"]["pathspec"] == run.pathspec
    assert _registry(auth_server) == before


@pytest.mark.flow
def test_overruler_may_move_champion(auth_server, flow_run):
    from mlflow import MlflowClient

    with as_user(OVERRULER):
        client = MlflowClient(auth_server, registry_uri=auth_server)
        client.set_registered_model_alias(POLICY_NAME, "champion", "1")  # the call the reviewer was refused
        client.delete_registered_model_alias(POLICY_NAME, "champion")
        client.set_registered_model_alias(POLICY_NAME, "champion", "1")
    assert _registry(auth_server)[POLICY_NAME]["aliases"]["champion"] == "1"
