"""Cost of one preference-training step by method: dpo-bt, dpo-hps, dpo-pl at n responses per prompt.

Methods are comparison entries (``hps_core.config.compare_spec``), so on-policy hardness is measured too:
``--methods dpo-bt dpo-hps dpo-hps:policy dpo-hps:mix@refresh_top_m=3 dpo-pl``.

Run as:
    python benchmarks/bench_methods.py --json bench_methods.json
    python benchmarks/bench_methods.py --model small --ns 4 8 16 --steps 12 --repeats 3 --json out.json

What is measured, per (method, n): the real trainer (``hps_core.train.preference.train_preference``) on a
generated world, ``--warmup`` + ``--steps`` optimizer steps of ``--batch-size`` prompts each, logging every
step. Reported:
- ``step_s``: the loop's ``step_time_s`` (forward, backward, clip and AdamW step of one optimizer step;
  logging and data planning excluded), MINIMUM over the measured steps of every repeat. On a shared
  machine other processes only ever add time, so the minimum is the estimate least polluted by them
  (the reason ``timeit`` reports it); ratios use it. ``step_s_median`` (median of per-run medians) is
  reported beside it so the spread is visible.
- ``tokens_per_s``: non-padding tokens of a step over its time (the loop's own metric), maximum over steps.
- ``peak_mem_mb``: on CPU, the growth of the process's peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``)
  from just before ``train_preference`` (data built, libraries imported) to its end: the model, the
  reference pass and training. tracemalloc cannot see torch's allocations, and a peak is only meaningful
  per process, so every (method, n, repeat) runs in its own fresh subprocess. On CUDA,
  ``torch.cuda.max_memory_allocated``.
Configurations run round-robin (all configs of repeat 1, then repeat 2, ...) so that drifting load on a
shared machine does not bias one method. Timings are reported, never asserted.

Groups: the generated world supplies at most 16 distinct responses per prompt, so each group here is a
world prompt with ``n`` responses drawn without replacement from the world's response pool, with random
scores: what matters for cost is the number and length of the sequences, which is the same for every
method at a given n. dpo-bt and dpo-hps train on 2 sequences per prompt whatever n; dpo-pl on all n.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {  # name -> TinyModelConfig fields
    "tiny": {},  # the flow's default tiny model (hidden 128, 3 layers, vocab 1024)
    "small": {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2},
}


def _world(n: int, n_prompts: int, seed: int = 0):
    """(groups table, tokenizer corpus): n_prompts world prompts, each with n pooled responses."""
    import numpy as np
    import pandas as pd

    from hps_core.data.synthetic import format_prompt, generate_world
    from hps_core.sampling.groups import build_groups

    records = generate_world(seed=seed, n_prompts=200, responses_per_prompt=12)
    pool = sorted({r for rec in records for r in rec["responses"]})
    rng = np.random.default_rng([seed, n])
    rows = []
    for i, rec in enumerate(records[:n_prompts]):
        picked = rng.choice(len(pool), size=n, replace=False)
        for j, (k, score) in enumerate(zip(picked, rng.normal(size=n))):
            rows.append({"prompt_id": f"p{i:04d}", "prompt": rec["prompt"], "response_id": f"p{i:04d}-{j}",
                         "response": pool[k], "score": float(score), "is_harmful": None, "split": "train"})
    corpus = [format_prompt(rec["prompt"]) for rec in records] + [" " + r for r in pool]
    return build_groups(pd.DataFrame(rows)), corpus


def _model_config(name: str):
    from hps_core.config.schema import TinyModelConfig

    return TinyModelConfig(**MODELS[name])


def run_one(method: str, n: int, args) -> dict:
    """One configuration, in this (fresh) process."""
    import resource

    import torch

    from hps_core.config.compare_spec import parse_method_spec
    from hps_core.config.schema import ModelConfig, PreferenceTrainConfig
    from hps_core.sampling.groups import ONLINE_RULE, draw_epoch_negatives
    from hps_core.sampling.negatives import is_online
    from hps_core.models.loading import build_tiny_model
    from hps_core.sampling.hardness import make_gamma_schedule
    from hps_core.train.preference import train_preference

    if args.threads:
        torch.set_num_threads(args.threads)
    tiny = _model_config(args.model)
    steps = args.warmup + args.steps
    groups, corpus = _world(n, steps * args.batch_size)
    model_dir = build_tiny_model(corpus, tiny, seed=0, cache_dir=Path(args.cache_dir))
    spec = parse_method_spec(method)  # "dpo-hps", "dpo-hps:policy", "dpo-hps:mix@refresh_every=4", ...
    pm = spec.preference_model
    cfg = spec.apply_to(PreferenceTrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-4, warmup_ratio=0.0,
                                              log_every=1, checkpoint_every=0))
    rule = {"hps": ONLINE_RULE if is_online(cfg) else "hps", "bt": "random"}.get(pm)
    negatives = draw_epoch_negatives(groups.iloc[:0] if rule is None else groups, rule=rule or "random",
                                     schedule=make_gamma_schedule("constant", gamma=1.0), n_epochs=1, seed=0,
                                     examples_per_step=args.batch_size)
    model_cfg = ModelConfig(max_prompt_tokens=48, max_length=112, tiny=tiny)
    logs = []
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as out:
        trained = train_preference(str(model_dir), groups, negatives, model_cfg, cfg, Path(out) / "model",
                                   log_fn=lambda m, step: logs.append(m) if "step_time_s" in m else None)
    rss_growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before  # Linux: KiB
    measured = logs[args.warmup:]
    return {
        "method": method,
        "n": n,
        "step_s_min": min(m["step_time_s"] for m in measured),
        "step_s_median": statistics.median(m["step_time_s"] for m in measured),
        "tokens_per_s_max": max(m["tokens_per_s"] for m in measured),
        "peak_mem_mb": (torch.cuda.max_memory_allocated() / 2**20) if cuda else rss_growth_kb / 1024,
        "memory_kind": "cuda_max_allocated" if cuda else "rss_peak_growth",
        "sequences_per_step": args.batch_size * (n if pm == "pl" else 2),
        # on-policy hardness: no-grad forwards of the refresh pass, per step (step 0 has none)
        "refreshed_per_step": trained.get("hps/refreshed_sequences", 0.0) / max(trained["steps"] - 1, 1),
        "steps_measured": len(measured),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["dpo-bt", "dpo-hps", "dpo-pl"])
    ap.add_argument("--ns", nargs="+", type=int, default=[4, 8, 16])
    ap.add_argument("--model", choices=sorted(MODELS), default="tiny")
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per optimizer step")
    ap.add_argument("--steps", type=int, default=10, help="measured steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="steps run but not measured")
    ap.add_argument("--repeats", type=int, default=3, help="fresh-process runs per configuration (median)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "hps_bench_models"))
    ap.add_argument("--json", dest="json_path", help="write the results as JSON to this path")
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one[0], int(args.one[1]), args)))
        return 0

    configs = [(m, n) for n in args.ns for m in args.methods]
    passthrough = ["--model", args.model, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--threads", str(args.threads), "--cache-dir", args.cache_dir]
    runs: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
    for rep in range(args.repeats):
        for method, n in configs:
            proc = subprocess.run([sys.executable, __file__, "--one", method, str(n), *passthrough],
                                  capture_output=True, text=True, cwd=ROOT)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                sys.stderr.write(proc.stderr[-4000:])
                raise SystemExit(f"benchmark run {method} n={n} failed (exit {proc.returncode})")
            runs[(method, n)].append(json.loads(line[len("RESULT "):]))
            last = runs[(method, n)][-1]
            print(f"repeat {rep + 1}/{args.repeats} {method:8s} n={n:2d} step min {last['step_s_min'] * 1e3:7.1f} ms, "
                  f"median {last['step_s_median'] * 1e3:7.1f} ms", file=sys.stderr)

    results = []
    for (method, n), rs in runs.items():
        results.append({
            "method": method, "n": n,
            "step_s": min(r["step_s_min"] for r in rs),
            "step_s_median": statistics.median(r["step_s_median"] for r in rs),
            "tokens_per_s": max(r["tokens_per_s_max"] for r in rs),
            "peak_mem_mb": statistics.median(r["peak_mem_mb"] for r in rs),
            "memory_kind": rs[0]["memory_kind"],
            "sequences_per_step": rs[0]["sequences_per_step"],
            "refreshed_per_step": rs[0].get("refreshed_per_step", 0.0),
            "step_s_min_runs": [r["step_s_min"] for r in rs],
        })
    by = {(r["method"], r["n"]): r for r in results}
    ratios = {}
    for n in args.ns:
        for key, num, den in (("hps_over_bt", "dpo-hps", "dpo-bt"), ("pl_over_hps", "dpo-pl", "dpo-hps")):
            if (num, n) in by and (den, n) in by:
                ratios[f"{key}_n{n}"] = by[(num, n)]["step_s"] / by[(den, n)]["step_s"]
                ratios[f"{key}_n{n}_median"] = by[(num, n)]["step_s_median"] / by[(den, n)]["step_s_median"]
        for method in (m for m in args.methods if m.startswith("dpo-hps:") and (m, n) in by and ("dpo-bt", n) in by):
            ratios[f"{method}_over_bt_n{n}"] = by[(method, n)]["step_s"] / by[("dpo-bt", n)]["step_s"]
    import torch

    report = {
        "command": "python benchmarks/bench_methods.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("one", "json_path", "cache_dir")},
        "model": {"preset": args.model, **vars(_model_config(args.model))},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"},
        "results": results,
        "ratios": ratios,
    }
    print(markdown_table(results, ratios))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2))
    return 0


def markdown_table(results: list[dict], ratios: dict[str, float]) -> str:
    lines = ["| method | n | sequences / step (+ refreshed) | step, min (ms) | step, median (ms) | tokens/s | peak memory (MB) |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["n"], r["method"])):
        refreshed = f" + {r['refreshed_per_step']:.0f}" if r.get("refreshed_per_step") else ""
        lines.append(f"| {r['method']} | {r['n']} | {r['sequences_per_step']}{refreshed} | {r['step_s'] * 1e3:.1f} | "
                     f"{r['step_s_median'] * 1e3:.1f} | {r['tokens_per_s']:.0f} | {r['peak_mem_mb']:.0f} |")
    lines.append("")
    lines += [f"- {k}: {v:.2f}x" for k, v in ratios.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
