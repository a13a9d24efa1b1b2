"""A local S3 stand-in for tests: moto's server on 127.0.0.1 with one bucket, and the environment that
points Metaflow's S3 datastore at it (``argo-workflows create`` uploads the code package even with
``--only-json``)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.servers import free_port, http_ok, server_process

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_server(tmp_path: str | Path, bucket: str, timeout_s: float = 60) -> Iterator[dict[str, str]]:
    """Start moto_server, create ``bucket``; yield the environment for Metaflow (S3 datastore under
    ``s3://<bucket>/metaflow``) and boto3; stop the server after."""
    import boto3

    root = Path(tmp_path)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    env = {**os.environ, **CREDENTIALS}
    with server_process("moto_server", [*cmd, "-H", "127.0.0.1", "-p", str(port)],
                        ready=http_ok(f"{endpoint}/moto-api/"), log_path=root / "moto-server.log",
                        timeout_s=timeout_s, env=env, cwd=root):
        boto3.client("s3", endpoint_url=endpoint, **_boto_credentials()).create_bucket(Bucket=bucket)
        yield {**CREDENTIALS,
               "METAFLOW_S3_ENDPOINT_URL": endpoint,
               "METAFLOW_DEFAULT_DATASTORE": "s3",
               "METAFLOW_DATASTORE_SYSROOT_S3": f"s3://{bucket}/metaflow"}


def _boto_credentials() -> dict[str, str]:
    return {"aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "region_name": CREDENTIALS["AWS_DEFAULT_REGION"]}


def read_object(env: dict[str, str], url: str) -> bytes:
    """The bytes of ``s3://bucket/key`` from the stand-in ``env`` points at."""
    import boto3

    bucket, _, key = url.removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=env["METAFLOW_S3_ENDPOINT_URL"], **_boto_credentials())
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()
