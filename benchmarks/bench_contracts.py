"""Data contracts at scale (issue 4.6): validate a 160,000-row canonical table (the size of HH-RLHF's
training split) and report wall time, rows/s and peak memory. Reports, never asserts.

Run as:
    /tmp/venv/bin/python benchmarks/bench_contracts.py [--rows 160000] [--responses-per-prompt 2]

Peak memory is the process's peak resident set size (ru_maxrss) above what it held once the table was
built: if GX copied the table once per expectation (27 row + 13 group expectations) the increase would be
a large multiple of the table's own size.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=160_000)
    parser.add_argument("--responses-per-prompt", type=int, default=2, help="2 = pairwise like HH-RLHF")
    args = parser.parse_args()

    from data_contracts import enforce_contracts, render_data_docs, validate_canonical

    validate_canonical(synthetic_table(100, 2))  # import GX and warm up outside the measurement
    table = synthetic_table(args.rows, args.responses_per_prompt)
    table_mb = table.memory_usage(deep=True).sum() / 2**20
    base = peak_rss_mb()
    results = {"rows": len(table), "prompts": int(table["prompt_id"].nunique()), "table_mb": round(table_mb, 1),
               "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}"}

    t0 = time.perf_counter()
    report = validate_canonical(table)
    t_fail = time.perf_counter() - t0
    results["validate_s"] = round(t_fail, 2)
    results["validate_rows_per_s"] = round(len(table) / t_fail)
    results["validate_peak_rss_increase_mb"] = round(peak_rss_mb() - base, 1)
    results["expectations"] = report.statistics["evaluated_expectations"]
    results["passed"] = report.success

    bad = table.copy()
    bad.loc[bad.index[::1000], "response"] = ""  # 0.1 % empty responses -> quarantine rows and their groups
    t0 = time.perf_counter()
    out = enforce_contracts(bad, on_invalid="quarantine", min_keep_fraction=0.5)
    t_q = time.perf_counter() - t0
    results["quarantine_s"] = round(t_q, 2)
    results["quarantine_rows_per_s"] = round(len(bad) / t_q)
    results["quarantined_rows"] = int(out.counts["rows_quarantined"])
    results["peak_rss_increase_mb_after_quarantine"] = round(peak_rss_mb() - base, 1)

    t0 = time.perf_counter()
    html = render_data_docs(out.report)
    results["data_docs_s"] = round(time.perf_counter() - t0, 2)
    results["data_docs_kb"] = round(len(html) / 1024)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
