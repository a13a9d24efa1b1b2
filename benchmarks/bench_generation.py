"""Generation and scoring throughput of the evaluation for the tiny default models (samples/s).

Run as:
    HPS_CACHE_DIR=/tmp/hps_cache python benchmarks/bench_generation.py            # flow defaults
    python benchmarks/bench_generation.py --prompts 64 --batch-sizes 8 32 64 --json out.json

Measures the code the evaluate step runs (``hps_core.evaluate.generation.generate``, ``RewardScorer.score``, the
held-out log-prob pass) on the default tiny Llama built from the generated world, with the flow's default
evaluation settings (k = 2 samples, 40 new tokens, temperature 0.7, top-p 0.95). The models are untrained
(random init): throughput depends on shapes, not on weights, except that an untrained model rarely stops
early at EOS, so generation here is the worst case of max_new_tokens per sample. Reports the fastest of
``--repeats`` timed runs after one warm-up (on a shared machine the fastest run is the least disturbed
one) and the load average, so numbers from a busy machine are recognisable; never asserts anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from hps_core.config.loading import load_config  # noqa: E402


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, kernels, tokenizer caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64, help="eval prompts to generate for (flow default 64)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--score-pairs", type=int, default=256, help="(prompt, response) pairs to score")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from hps_core.data.synthetic import format_prompt, generate_world
    from hps_core.evaluate.generation import generate
    from hps_core.models.loading import (
        build_tiny_model,
        default_cache_dir,
        load_causal_lm,
        load_reward_model,
        pick_device,
    )
    from hps_core.models.reward import RewardScorer
    from hps_core.data.encoding import Encoder
    from hps_core.train.preference import sequence_logps

    cfg = load_config()
    world = generate_world(cfg.run.seed, cfg.data.n_prompts, cfg.data.responses_per_prompt)
    prompts = sorted({r["prompt"] for r in world})
    responses = sorted({" " + x for r in world for x in r["responses"]})
    base = build_tiny_model([format_prompt(p) for p in prompts] + responses, cfg.model.tiny, seed=cfg.run.seed,
                            cache_dir=default_cache_dir() / "models")
    device = pick_device()
    policy, tok = load_causal_lm(str(base), device=device)
    rm, rm_tok = load_reward_model(str(base), num_labels=1, device=device)
    params = sum(p.numel() for p in policy.parameters())
    eval_prompts = prompts[: args.prompts]
    pairs = [(r["prompt"], x) for r in world for x in r["responses"]][: args.score_pairs]

    rows = []
    for bs in args.batch_sizes:
        ev = replace(cfg.evaluate, batch_size=bs)
        out: list = []
        t = _timed(lambda: out.__setitem__(slice(None), generate(policy, tok, eval_prompts, cfg.model, ev, seed=0, desc="generate")), args.repeats)
        n_samples = len(eval_prompts) * ev.samples_per_prompt
        new_tokens = sum(len(tok(s, add_special_tokens=False)["input_ids"]) for group in out for s in group)
        rows.append({"stage": "generation", "batch_size": bs, "samples": n_samples, "seconds": t,
                     "samples_per_s": n_samples / t, "new_tokens_per_s": new_tokens / t})

        scorer = RewardScorer(rm, rm_tok, cfg.model, batch_size=bs)
        t = _timed(lambda: scorer.score([p for p, _ in pairs], [r for _, r in pairs], desc="score"), args.repeats)
        rows.append({"stage": "reward scoring", "batch_size": bs, "samples": len(pairs), "seconds": t, "samples_per_s": len(pairs) / t})

        encoder = Encoder(tok, cfg.model.max_prompt_tokens, cfg.model.max_length)
        encoded = [encoder.encode(p, r) for p, r in pairs]
        t = _timed(lambda: sequence_logps(policy, encoded, tok.pad_token_id, bs, "log-probs"), args.repeats)
        rows.append({"stage": "held-out log-probs", "batch_size": bs, "samples": len(pairs), "seconds": t, "samples_per_s": len(pairs) / t})

    env = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "policy_parameters": params,
           "k": cfg.evaluate.samples_per_prompt, "max_new_tokens": cfg.evaluate.max_new_tokens,
           "load_average_1min": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count()}
    print(f"\n{env}\n")
    print("| stage | batch size | samples | seconds | samples/s |")
    print("|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["stage"], r["batch_size"])):
        print(f"| {r['stage']} | {r['batch_size']} | {r['samples']} | {r['seconds']:.2f} | {r['samples_per_s']:.1f} |")
    result = {"environment": env, "results": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
