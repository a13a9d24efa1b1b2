"""A throwaway PostgreSQL server for tests, from the distribution's binaries (Debian: ``apt-get install
postgresql``): a fresh cluster in a temp dir, trust auth, TCP on 127.0.0.1 and a free port, the socket
in the temp dir (not /var/run/postgresql). PostgreSQL refuses to run as root, so as root the cluster is
made and run by the ``postgres`` user the package creates. Stopped with a fast shutdown, then deleted."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.servers import free_port, server_process

INSTALL_HINT = "install the server with `apt-get install postgresql` (.ci/run does this on a fresh machine)"
USER, DATABASE = "hps", "mlflow"


def postgres_bindir() -> Path | None:
    """Where ``initdb`` and ``postgres`` are: on PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).parent
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(debian[-1]).parent if debian else None


def _as_server_user(root: Path) -> list[str]:
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    try:
        import pwd

        pw = pwd.getpwnam("postgres")
    except KeyError:
        pw = None
    if runuser is None or pw is None:
        raise RuntimeError(f"running as root, PostgreSQL needs an unprivileged user: no `postgres` user or no "
                           f"runuser here; {INSTALL_HINT} (it creates the user)")
    for path in (root, *root.rglob("*")):
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return [runuser, "-u", "postgres", "--"]


def _accepts_connections(port: int):
    def check() -> bool:
        import psycopg

        try:
            psycopg.connect(host="127.0.0.1", port=port, user=USER, dbname="postgres", connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False
    return check


@contextlib.contextmanager
def postgres_server(log_dir: str | Path, timeout_s: float = 120) -> Iterator[str]:
    """Start PostgreSQL with an empty database ``mlflow``; yield ``postgresql://hps@127.0.0.1:<port>/mlflow``."""
    import psycopg

    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError(f"no PostgreSQL server binaries (initdb, postgres) found; {INSTALL_HINT}")
    # A dir of its own under /tmp: pytest's tmp dirs are private to their owner, the server user must enter.
    root = Path(tempfile.mkdtemp(prefix="hps-postgres-"))
    try:
        os.chmod(root, 0o700)
        as_user = _as_server_user(root)
        data = root / "data"
        init = subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
                               "--encoding=UTF8", "--no-locale"], capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}{init.stderr}")
        port = free_port()
        # fsync off: a test database that dies with the test needs no crash safety, and it is much faster.
        cmd = [*as_user, str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
               "-k", str(root), "-c", "fsync=off"]
        with server_process("postgres", cmd, ready=_accepts_connections(port),
                            log_path=Path(log_dir) / "postgres.log", timeout_s=timeout_s,
                            stop_signal=signal.SIGINT):  # SIGINT = fast shutdown: clients are cut off
            # autocommit: CREATE DATABASE cannot run inside a transaction
            with psycopg.connect(host="127.0.0.1", port=port, user=USER, dbname="postgres", autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")
            yield f"postgresql://{USER}@127.0.0.1:{port}/{DATABASE}"
    finally:
        shutil.rmtree(root, ignore_errors=True)
