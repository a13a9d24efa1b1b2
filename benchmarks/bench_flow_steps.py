"""Where the default run's wall time goes (issue 19.5): run ``python flows/hps_flow.py run`` in an empty
directory (a fresh clone's first run: the tiny model is built on the way, the MLflow store is created) and
report each step's wall time, how much of it was the step's own code (Metaflow's ``finished_at``; the rest is
the card rendered after it and the runtime's bookkeeping), and the share of the run spent outside training
and evaluation. Reports, never asserts.

Run as:
    python benchmarks/bench_flow_steps.py [--config tests/configs/tiny_flow.toml] [--runs 1] [--json out.json]

Load matters (2 cores, steps side by side): the machine's 1-minute load average before and after is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "hps_flow.py"
TRAINING = {"train_sft", "train_reward_model", "train_hps", "evaluate"}  # the model's work; the rest is the pipeline's
# The non-training steps (plus the two the DAG has since grown: join_models, and expand when k = 0).
OVERHEAD = ("start", "validate", "build_groups", "join_models", "expand", "register", "end")
_LINE = re.compile(r"^(\S+ \S+) \[\d+/(\w+)/[\w-]+ \(pid \d+\)\] Task (is starting|finished successfully)")


def step_walls(log: str) -> dict[str, tuple[datetime, datetime]]:
    """Step -> (started, finished) from the runtime's own log lines (first start, last finish per step)."""
    seen: dict[str, list[datetime]] = {}
    for line in log.splitlines():
        if m := _LINE.match(line):
            when, step, what = datetime.fromisoformat(m.group(1)), m.group(2), m.group(3)
            span = seen.setdefault(step, [when, when])
            span[0], span[1] = (min(span[0], when), span[1]) if what == "is starting" else (span[0], max(span[1], when))
    return {step: (a, b) for step, (a, b) in seen.items()}


def own_code_seconds(workdir: Path) -> dict[str, float]:
    """Step -> seconds from task creation to Metaflow's finished_at (the step's code, before its card)."""
    code = ("import json; from metaflow import Flow, namespace; namespace(None); r = Flow('HPSFlow').latest_run; "
            "print(json.dumps({s.id: max((t.finished_at - t.created_at).total_seconds() for t in s) for s in r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {}


def one_run(config: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-flow-") as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HPS_CACHE_DIR")}
        command = [sys.executable, str(FLOW)] + (["--config", "config", config] if config else []) + ["run"]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - start
        log = done.stdout + done.stderr
        if done.returncode != 0:
            raise SystemExit(f"the flow failed:\n{log[-4000:]}")
        spans, own = step_walls(log), own_code_seconds(Path(tmp))
    steps = {s: {"wall_s": round((b - a).total_seconds(), 2), "own_code_s": round(own.get(s, float("nan")), 2)}
             for s, (a, b) in sorted(spans.items(), key=lambda kv: kv[1][0])}
    overhead = sum(steps[s]["wall_s"] for s in OVERHEAD if s in steps)
    return {"wall_s": round(wall, 1), "steps": steps, "overhead_s": round(overhead, 1),
            "overhead_share": round(overhead / wall, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="a TOML config (default: the embedded default)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    runs = [one_run(args.config) for _ in range(args.runs)]
    result = {"config": args.config or "embedded default", "load_1min_before": round(load_before, 2),
              "load_1min_after": round(os.getloadavg()[0], 2), "cores": os.cpu_count(), "runs": runs}
    print("| step | wall s | of which the step's code | kind |\n|---|---:|---:|---|")
    for step, t in runs[-1]["steps"].items():
        kind = "training/evaluation" if step in TRAINING else "pipeline"
        print(f"| `{step}` | {t['wall_s']:.1f} | {t['own_code_s']:.1f} | {kind} |")
    for r in runs:
        print(f"run: {r['wall_s']} s wall; pipeline steps {r['overhead_s']} s = {100 * r['overhead_share']:.0f} %")
    print(f"load (1 min) before {result['load_1min_before']}, after {result['load_1min_after']}; {result['cores']} cores")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
