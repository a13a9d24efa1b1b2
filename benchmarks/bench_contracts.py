"""Data contracts at scale (issues 4.6 and 19.6): validate a canonical table of HH-like texts and report
wall time, rows/s and peak memory, for the fail policy and for quarantine. Reports, never asserts.

Run as:
    python benchmarks/bench_contracts.py                                   # 160k rows, pairs (HH-RLHF's size)
    python benchmarks/bench_contracts.py --rows 1600000 --responses-per-prompt 100   # the reference recipe

Each policy runs in a fresh process that builds the table once, so its peak resident set size (ru_maxrss)
is what a `validate` step holding that table needs: "peak RSS" is that whole-process peak while validating
(the peak of building the table is reset first, on Linux), "over the table" is that peak minus what the
process held once the table was built (GX working set, derived columns, shards, the quarantine's copy).
The quarantine run empties every 1000th response (0.1 % of the rows fail, with their groups if too small).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd


def synthetic_table(n_rows: int, k: int, seed: int = 0) -> pd.DataFrame:
    """HH-like canonical table: n_rows / k prompts of k responses, texts of realistic length (~300 chars)."""
    rng = np.random.default_rng(seed)
    n_prompts = n_rows // k
    pid = pd.Series(np.repeat(np.arange(n_prompts), k))
    j = pd.Series(np.tile(np.arange(k), n_prompts)).astype(str)
    ids = pid.map("{:016x}".format)
    filler = " and some more words of the conversation so far" * 4
    return pd.DataFrame({
        "prompt_id": ids, "prompt": "\n\nHuman: question number " + pid.astype(str) + filler + "\n\nAssistant:",
        "response_id": ids + "-" + j, "response": "Answer " + j + " to question " + pid.astype(str) + filler,
        "score": rng.normal(size=len(pid)), "is_harmful": pd.array(rng.random(len(pid)) < 0.1, dtype="boolean"),
        "label_source": "human", "source": "synthetic@sha256:000000000000",
        "split": np.where(pid % 10 == 0, "eval", "train"), "origin": "train.jsonl:" + (pid + 1).astype(str),
    })


def _proc_status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux) in MB, None where there is none."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """The process's peak resident set size (VmHWM, which reset_peak_rss resets; else ru_maxrss)."""
    peak = _proc_status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    now = _proc_status_mb("VmRSS")
    return now if now is not None else peak_rss_mb()


def reset_peak_rss() -> bool:
    """Forget the peak so far (Linux >= 4.0): building the table peaks higher than holding it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(policy: str, rows: int, k: int, shard_rows: int) -> dict:
    """One policy on a freshly built table, in this process."""
    from data_contracts import enforce_contracts, render_data_docs, validate_canonical

    validate_canonical(synthetic_table(100, 2))  # import GX and warm up outside the measurement
    table = synthetic_table(rows, k)
    if policy == "quarantine":
        table.loc[table.index[::1000], "response"] = ""
    out = {"policy": policy, "rows": len(table), "prompts": int(table["prompt_id"].nunique()),
           "table_mb": round(table.memory_usage(deep=True).sum() / 2**20, 1), "shard_rows": shard_rows}
    out["peak_reset"] = reset_peak_rss()
    base = rss_mb()
    t0 = time.perf_counter()
    if policy == "fail":
        report = validate_canonical(table, shard_rows=shard_rows)
        out.update(passed=report.success, expectations=report.statistics["evaluated_expectations"])
    else:
        result = enforce_contracts(table, on_invalid="quarantine", min_keep_fraction=0.5, shard_rows=shard_rows)
        report = result.report
        out["quarantined_rows"] = int(result.counts["rows_quarantined"])
    seconds = time.perf_counter() - t0
    out.update(seconds=round(seconds, 2), rows_per_s=round(len(table) / seconds),
               peak_rss_mb=round(peak_rss_mb()), over_table_mb=round(peak_rss_mb() - base))
    t0 = time.perf_counter()
    out["data_docs_kb"] = round(len(render_data_docs(report)) / 1024)
    out["data_docs_s"] = round(time.perf_counter() - t0, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=160_000)
    parser.add_argument("--responses-per-prompt", type=int, default=2, help="2 = pairwise like HH-RLHF")
    parser.add_argument("--shard-rows", type=int, default=None,
                        help="rows per shard of the row suite (default: data_contracts' SHARD_ROWS; 0 = one run)")
    parser.add_argument("--policy", choices=["fail", "quarantine"], help=argparse.SUPPRESS)  # the child
    args = parser.parse_args()
    if args.shard_rows is None:
        from data_contracts.shards import SHARD_ROWS
        args.shard_rows = SHARD_ROWS
    if args.policy:
        print(json.dumps(measure(args.policy, args.rows, args.responses_per_prompt, args.shard_rows)))
        return
    results = []
    for policy in ("fail", "quarantine"):
        cmd = [sys.executable, __file__, "--policy", policy, "--rows", str(args.rows),
               "--responses-per-prompt", str(args.responses_per_prompt), "--shard-rows", str(args.shard_rows)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}",
                      "results": results}, indent=2))
    print("\n| policy | rows | wall time | rows/s | peak RSS | over the table |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['policy']} | {r['rows']:,} | {r['seconds']} s | {r['rows_per_s']:,} | "
              f"{r['peak_rss_mb']:,} MB | {r['over_table_mb']:,} MB (table {r['table_mb']:,} MB) |")


if __name__ == "__main__":
    main()
