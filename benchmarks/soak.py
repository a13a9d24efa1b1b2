"""Soak: the default flow several times in a row in one working directory, as a laptop user runs it.

    python benchmarks/soak.py --runs 3 --json soak.json [--config tests/configs/smoke.toml]

After each run it records: wall time; processes left behind (any live process started since the soak
began whose command line names the flow, MLflow, torchrun or the working directory); disk use of the
working directory by part (.metaflow datastore, .hps run outputs and cache, MLflow store); what the
registered model versions hold; and the growth of the system temp directory. A healthy run leaves no
process and no temp file, and the working directory grows by the run's own outputs only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def du(path: Path) -> int:
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def strays(since: float, workdir: Path) -> list[str]:
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid", "create_time", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.info["pid"] == me or proc.info["create_time"] < since:
                continue
            if any(s in cmd for s in ("hps_flow.py", "mlflow", "torch.distributed.run", str(workdir))):
                found.append(f"{proc.info['pid']}: {cmd[:160]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def registered_bytes(workdir: Path) -> int:
    """Bytes of the registered models' files in the local MLflow artifact store (logged models)."""
    return sum(du(p) for p in (workdir / "mlruns").glob("models/*/artifacts"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--config", default=None, help="flow config (default: the flow's default)")
    parser.add_argument("--workdir", default=None, help="default: a fresh temp directory")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hps-soak-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # Metaflow's local datastore is the nearest .metaflow above the cwd; make it this one, not /tmp's.
    (workdir / ".metaflow").mkdir(exist_ok=True)
    tmp_root = Path(tempfile.gettempdir())
    tmp_before = {p.name for p in tmp_root.iterdir()}
    tmp_bytes_before = du(tmp_root) - du(workdir) if workdir.is_relative_to(tmp_root) else du(tmp_root)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HPS_CACHE_DIR")}
    config = ["--config", "config", str(Path(args.config).resolve())] if args.config else []
    since = time.time()
    rows = []
    for i in range(1, args.runs + 1):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(ROOT / "flows" / "hps_flow.py"), *config, "run"], cwd=workdir,
                              env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"run {i} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        time.sleep(2)  # let exiting children be reaped before looking
        left = strays(since, workdir)
        tmp_new = sorted({p.name for p in tmp_root.iterdir()} - tmp_before - {workdir.name})
        row = {
            "run": i, "wall_s": round(wall, 1), "stray_processes": left,
            "metaflow_mb": du(workdir / ".metaflow") / 1e6,
            "runs_mb": du(workdir / ".hps" / "runs") / 1e6,
            "cache_mb": du(workdir / ".hps" / "cache") / 1e6,
            "mlflow_mb": (du(workdir / "mlruns") + du(workdir / "mlflow.db")) / 1e6,
            "registered_models_mb": registered_bytes(workdir) / 1e6,
            "workdir_mb": du(workdir) / 1e6,
            "new_temp_entries": tmp_new,
            "temp_growth_mb": ((du(tmp_root) - du(workdir) if workdir.is_relative_to(tmp_root) else du(tmp_root))
                               - tmp_bytes_before) / 1e6,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    growth = [round(b["workdir_mb"] - a["workdir_mb"], 1) for a, b in zip(rows, rows[1:])]
    summary = {"workdir": str(workdir), "runs": rows, "workdir_growth_per_run_mb": growth}
    print("\n| run | wall | stray processes | .metaflow MB | run outputs MB | cache MB | MLflow MB | registered models MB | new temp entries |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['wall_s']:.0f} s | {len(r['stray_processes'])} | {r['metaflow_mb']:.1f} | {r['runs_mb']:.1f} | "
              f"{r['cache_mb']:.1f} | {r['mlflow_mb']:.1f} | {r['registered_models_mb']:.1f} | {len(r['new_temp_entries'])} |")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
