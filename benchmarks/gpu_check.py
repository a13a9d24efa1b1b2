"""The GPU path of the pipeline, step by step, on a machine with CUDA (no MLflow, Metaflow or GX needed):

    python benchmarks/gpu_check.py --out gpu_check.json

Runs the default config's steps through ``hps_core.recipes.hps`` with a NullTracker (data -> groups -> SFT ->
reward model -> HPS -> evaluate), then the torchrun + DDP launch path with NCCL (one rank: two NCCL ranks
cannot share one GPU). Reports per step: wall time, device, compute dtype, peak GPU memory, and the
metrics the flow would log; fails if anything ran on the CPU that should not have.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="TOML config (default: the embedded hps_core/config/default.toml)")
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--allow-cpu", action="store_true", help="dry run of the script itself on a CPU machine")
    args = parser.parse_args()

    import torch

    from hps_core.recipes import hps as pipeline
    from hps_core.config.loading import load_config
    from hps_core.data import load_canonical
    from hps_core.models.loading import load_causal_lm
    from hps_core.tracking.step_context import StepContext
    from hps_core.train.launch import StageSpec, launch
    from hps_core.train.model_setup import compute_dtype
    from hps_core.tracking.null import NullTracker

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        raise SystemExit("no CUDA device: this check is for GPU machines (--allow-cpu for a dry run)")
    cfg = load_config(args.config)
    root = Path(tempfile.mkdtemp(prefix="hps-gpu-check-"))
    ctx = StepContext(cfg, root / "run", NullTracker(), "gpu-check")
    report: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__, "steps": {}}

    def timed(name, fn):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        report["steps"][name] = {"seconds": round(time.perf_counter() - start, 2),
                                 "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None}
        print(name, report["steps"][name], flush=True)
        return out

    loaded = load_canonical(cfg.data, cfg.run.seed, ctx.path("data"))
    canonical = ctx.path("data", "canonical.parquet")
    loaded.table.to_parquet(canonical, index=False)
    groups = timed("build_groups", lambda: pipeline.build_groups(ctx, str(canonical)))
    sft = timed("train_sft", lambda: pipeline.train_sft(ctx, groups["groups"], groups["base"]))
    rm = timed("train_reward_model", lambda: pipeline.train_reward_model(ctx, groups["groups"], groups["base"]))
    hps = timed("train_hps", lambda: pipeline.train_hps(ctx, groups["groups"], groups["negatives"], sft["model"]))
    ev = timed("evaluate", lambda: pipeline.evaluate(ctx, groups["groups"], sft["model"], hps["model"], rm["model"]))

    model, _ = load_causal_lm(hps["model_dir"])
    report["saved_model"] = {"device": str(next(model.parameters()).device), "dtype": str(next(model.parameters()).dtype),
                             "compute_dtype": str(compute_dtype(model))}
    report["train_metrics"] = {k: sft["metrics"].get(k) for k in ("loss", "tokens_per_s", "step_time_s")}
    report["hps_metrics"] = {k: hps["metrics"].get(k) for k in ("loss", "rewards/margins", "tokens_per_s", "step_time_s")}
    report["evaluate"] = {p: {k: ev["metrics"][p].get(k) for k in ("reward_mean", "harmful_rate", "margin_hardest", "bleu")
                              if k in ev["metrics"][p]} for p in ("sft", "hps")}

    # The multi-process launch path with NCCL, one rank (a second rank would need a second GPU).
    spec = StageSpec("sft", cfg.to_dict(), groups["base"]["path"], groups["groups"]["path"],
                     str(root / "ddp_sft"), cfg.run.seed, checkpoint_dir=str(root / "ddp_ckpt"))
    result = timed("torchrun_nccl_sft", lambda: launch(spec, 1, root / "torchrun"))
    log = (root / "torchrun" / "torchrun.log").read_text()
    report["torchrun_nccl"] = {"loss": result.get("loss"), "log_tail": log[-1500:]}
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
