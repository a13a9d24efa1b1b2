"""Who may touch the registry: users and permissions on an MLflow server that runs MLflow's auth app.

The server runs ``mlflow server --app-name basic-auth`` with ``default_permission = NO_PERMISSIONS``
(infra/k8s/mlflow.yaml), so an account sees nothing until it is granted something here. Three roles:

| role        | experiments | registered models | why |
|-------------|-------------|-------------------|-----|
| pipeline    | MANAGE      | MANAGE            | runs, metrics, artifacts, logged models, and deleting its own files; versions, `challenger`, `champion` |
| reviewer    | READ        | READ              | versions, lineage tags, runs and metrics, the UI; serving accounts that load `@champion` get this role too |
| overruler   | READ        | MANAGE            | may move `champion` by hand against the gate (rollback) |

The pipeline needs MANAGE, not EDIT, on its experiments: the pipeline deletes files of its own runs (the
copies of superseded training checkpoints, hps_core/tracking/checkpoint_mirror.py) and the logged model of
a registration that failed half-way; the auth app lets nobody below MANAGE delete proxied artifacts
(DELETE /api/2.0/mlflow-artifacts/...: "manage") or logged models ("delete"). With EDIT those deletes get
403 and the checkpoint copies pile up in the artifact store. MANAGE is also what MLflow gives the creator
of an experiment.

Usage (the server's admin account in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD; each user's password
in MLFLOW_ACCESS_PASSWORD_<USER>, the name upper-cased with every other character than A-Z, 0-9 as "_"; passwords
never go on the command line, where `ps` and shell history would keep them)::

    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000 MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=...
    export MLFLOW_ACCESS_PASSWORD_HPS_PIPELINE=... MLFLOW_ACCESS_PASSWORD_ALICE=...
    python infra/mlflow_access.py ensure --config flows/configs/production.toml \\
        --pipeline hps-pipeline --reviewer alice --reviewer bob --overruler carol
    python infra/mlflow_access.py rotate alice        # new password from MLFLOW_ACCESS_PASSWORD_ALICE

``ensure`` is idempotent: it creates missing users (an existing user keeps its password; ``rotate`` changes
it), creates the experiment and the registered models as the admin when they do not exist yet, sets each
grant to its role's level (a level changed by hand is put back) and then reads every user's effective
permission back from the server, failing if one differs from its role. Creating the resources here, not in the first pipeline run, matters: the auth app lets any
authenticated account create an experiment or a registered model and makes its creator MANAGE of it, so
whoever created `hps-policy` first would own its `champion`. A model name the pipeline creates itself
(a new config run before ``ensure``) is the pipeline's by that same rule; run ``ensure`` with the config
then, so the reviewers and overrulers get theirs.

Experiments and registered models come from pipeline configs (``[run] experiment``, ``[register] sft_name``
and ``policy_name``) and from ``--experiment`` / ``--model`` for flows with another config schema (the
routing flow's ``hyper-ppm``). The effective permission check uses the server's own resolver.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: hps_core.config reads the configs
    sys.path.insert(0, str(ROOT))

PASSWORD_ENV_PREFIX = "MLFLOW_ACCESS_PASSWORD_"
EXPERIMENT, REGISTERED_MODEL = "experiment", "registered_model"
SYNTHETIC_ROLE = re.compile(r"__user_\d+__")  # the auth app's per-user role, where per-user grants live


@dataclass(frozen=True)
class Role:
    experiment: str
    registered_model: str


ROLES = {
    "pipeline": Role(experiment="MANAGE", registered_model="MANAGE"),  # MANAGE on experiments: see the docstring
    "reviewer": Role(experiment="READ", registered_model="READ"),
    "overruler": Role(experiment="READ", registered_model="MANAGE"),
}


class AccessError(RuntimeError):
    """A setup problem the operator must fix; printed without a traceback."""


def password_env(username: str) -> str:
    return PASSWORD_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", username.upper())


def password_for(username: str) -> str | None:
    return os.environ.get(password_env(username)) or None


def registry_names(configs: list[str], experiments: list[str], models: list[str]) -> tuple[list[str], list[str]]:
    """(experiment names, registered model names), in order, without repeats."""
    from hps_core.config import load_config

    exps, names = list(experiments), list(models)
    for path in configs:
        cfg = load_config(path)
        exps.append(cfg.run.experiment)
        names += [cfg.register.sft_name, cfg.register.policy_name]
    return list(dict.fromkeys(exps)), list(dict.fromkeys(names))


def _clients(uri: str):
    """The auth app's admin client and a tracking/registry client, both as the env's (admin) user."""
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    if not os.environ.get("MLFLOW_TRACKING_USERNAME") or not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        raise AccessError("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to the server's admin account "
                          "(basic_auth.ini admin_username; its first password is MLFLOW_AUTH_ADMIN_PASSWORD)")
    return get_app_client("basic-auth", tracking_uri=uri), MlflowClient(uri, registry_uri=uri)


def _status(e: Exception) -> int | None:
    get = getattr(e, "get_http_status_code", None)
    return get() if get else None


def check_admin(auth, admin: str) -> None:
    """Fail early and clearly when the env's account is not the server's admin (or the server has no auth app)."""
    from mlflow.exceptions import MlflowException

    try:
        user = auth.get_user(admin)
    except MlflowException as e:
        if _status(e) == 401:
            raise AccessError(f"the server refused {admin!r}: wrong MLFLOW_TRACKING_USERNAME / PASSWORD") from e
        if _status(e) == 404 and "users/get" in str(e):
            raise AccessError("the server has no user API: is it running `mlflow server --app-name basic-auth`?") from e
        raise
    if not user.is_admin:
        raise AccessError(f"{admin!r} is not an admin of the server; users and grants need the admin account")


def ensure_user(auth, username: str) -> str:
    """Create ``username`` if missing; an existing user keeps its password (``rotate`` changes it)."""
    from mlflow.exceptions import MlflowException

    try:
        auth.get_user(username)
        return "exists"
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    password = password_for(username)
    if not password:
        raise AccessError(f"user {username!r} does not exist yet: put its password in {password_env(username)}")
    if len(password) < 12:
        raise AccessError(f"{password_env(username)}: MLflow requires passwords of at least 12 characters")
    try:
        auth.create_user(username, password)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":  # another operator created it just now
            raise
        return "exists"
    return "created"


def ensure_experiment(client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    if exp := client.get_experiment_by_name(name):
        return exp.experiment_id
    try:
        return client.create_experiment(name)  # artifact location: the server's (proxied) default
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS" or not (exp := client.get_experiment_by_name(name)):
            raise
        return exp.experiment_id


def ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def grant(auth, username: str, kind: str, resource_id: str, wanted: str) -> str:
    """Give ``username`` exactly ``wanted`` on the resource: a new grant, or the existing one set to it.

    The REST grant only inserts (RESOURCE_ALREADY_EXISTS when the user already holds a level there, e.g. the
    MANAGE its creator gets); the existing row lives in the user's own role, ``__user_<id>__``, and is updated
    in place rather than revoked and granted again, which would leave a moment with no access."""
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(username, kind, resource_id, wanted)
        return "granted"
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    for role in auth.list_user_roles(username):
        if not SYNTHETIC_ROLE.fullmatch(role.name):
            continue
        for row in role.permissions:
            if (row.resource_type, row.resource_pattern) == (kind, resource_id):
                if row.permission == wanted:
                    return "unchanged"
                auth.update_role_permission(row.id, wanted)
                return f"changed from {row.permission}"
    raise AccessError(f"the server says {username!r} already holds a grant on {kind} {resource_id!r}, "
                      "but it is in none of the user's own roles")


def ensure(args: argparse.Namespace) -> int:
    uri, admin = args.tracking_uri, os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    users = [(u, "pipeline") for u in args.pipeline] + [(u, "reviewer") for u in args.reviewer] + \
            [(u, "overruler") for u in args.overruler]
    if len({u for u, _ in users}) != len(users):
        raise AccessError("a user may have one role only: " + ", ".join(sorted(
            {u for u, _ in users if [v for v, _ in users].count(u) > 1})))
    experiments, models = registry_names(args.config, args.experiment, args.model)
    if not experiments and not models:
        raise AccessError("nothing to grant on: pass --config (or --experiment / --model)")
    auth, client = _clients(uri)
    check_admin(auth, admin)
    if admin in {u for u, _ in users}:
        raise AccessError(f"{admin!r} is the admin account (unrestricted); give the pipeline and people their own")

    for username, role in users:
        print(f"user {username} ({role}): {ensure_user(auth, username)}")
    exp_ids = {name: ensure_experiment(client, name) for name in experiments}
    for name in models:
        ensure_registered_model(client, name)
    resources = [(EXPERIMENT, exp_ids[n], f"experiment {n}") for n in experiments] + \
                [(REGISTERED_MODEL, n, f"registered model {n}") for n in models]

    wrong = []
    for username, role in users:
        for kind, resource_id, label in resources:
            wanted = getattr(ROLES[role], kind)
            done = grant(auth, username, kind, resource_id, wanted)
            got = auth.get_user_permission(username, kind, resource_id).permission
            print(f"  {username}: {wanted} on {label}: {done} (effective {got})")
            if got != wanted:
                wrong.append(f"{username} has {got} on {label}, not {wanted}")
    if wrong:  # e.g. a DENY or a wider role grant made by hand elsewhere
        raise AccessError("effective permissions differ from the roles:\n  " + "\n  ".join(wrong))
    return 0


def rotate(args: argparse.Namespace) -> int:
    """Set ``username``'s password to the one in its MLFLOW_ACCESS_PASSWORD_<USER> variable."""
    auth, _ = _clients(args.tracking_uri)
    admin = os.environ["MLFLOW_TRACKING_USERNAME"]
    check_admin(auth, admin)
    password = password_for(args.username)
    if not password or len(password) < 12:
        raise AccessError(f"put the new password (12 characters or more) in {password_env(args.username)}")
    # The server asks for the current password when an account changes its own (the admin rotating itself).
    current = os.environ["MLFLOW_TRACKING_PASSWORD"] if args.username == admin else None
    auth.update_user_password(args.username, password, current_password=current)
    print(f"user {args.username}: password changed; update every Secret that holds it")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="the MLflow server (default: MLFLOW_TRACKING_URI)")
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("ensure", help="create users, experiments, registered models and grants (idempotent)")
    e.add_argument("--config", action="append", default=[], help="a pipeline config: its experiment and models")
    e.add_argument("--experiment", action="append", default=[], help="an experiment name (repeatable)")
    e.add_argument("--model", action="append", default=[], help="a registered model name (repeatable)")
    for role, what in (("pipeline", "MANAGE on experiments and models"), ("reviewer", "READ on both"),
                       ("overruler", "READ on experiments, MANAGE on models: may move champion")):
        e.add_argument(f"--{role}", action="append", default=[], metavar="USER", help=f"{what} (repeatable)")
    r = sub.add_parser("rotate", help="set a user's password from MLFLOW_ACCESS_PASSWORD_<USER>")
    r.add_argument("username")
    args = parser.parse_args(argv)
    if not args.tracking_uri or not args.tracking_uri.startswith(("http://", "https://")):
        parser.error("the server's http(s) URI is needed: --tracking-uri or MLFLOW_TRACKING_URI")
    return args


def main(argv: list[str] | None = None) -> int:
    from mlflow.exceptions import MlflowException

    args = parse_args(argv)
    try:
        return ensure(args) if args.command == "ensure" else rotate(args)
    except AccessError as e:
        print(f"mlflow_access: {e}", file=sys.stderr)
        return 2
    except MlflowException as e:  # the server said no: its message is the useful part, not our stack
        print(f"mlflow_access: MLflow at {args.tracking_uri} refused: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
