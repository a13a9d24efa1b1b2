"""Per-rank memory of DDP vs FSDP training: 2 CPU ranks on gloo, the training loop of the pipeline.

Run as:
    python benchmarks/bench_fsdp_memory.py                       # Llama, 8 layers, hidden 512, vocab 16384
    python benchmarks/bench_fsdp_memory.py --layers 4 --hidden 256 --json out.json

For each strategy, two fresh processes (``torch.multiprocessing.spawn``, gloo on 127.0.0.1) build the same
randomly initialised Llama (tied LM head, as the pipeline's tiny model), run ``hps_core.train.loop.train_loop``
for ``--steps`` optimizer steps (global batch 8 = 2 ranks x 2 micro-batches of 2, sequences of ``--seq``
tokens, the loss of ``response_logps``, i.e. the code path of SFT) with ``[resources] strategy`` set to
"ddp" or "fsdp", and report per rank:
- the bytes this rank holds of parameters, gradients and AdamW state (torch accounting: a sharded
  parameter's local shard, measured just before each optimizer step, the largest kept), and
- the process's peak resident set size (``ru_maxrss``): everything, the torch/transformers import
  (~0.5 GB) and activations included, so its difference is the one to read; "RSS before training" is
  the high-water mark once the full model is built (on every rank, under both strategies).
FSDP should hold about half of the parameter + gradient + optimizer bytes per rank; DDP all of them (plus
its gradient buckets, visible in RSS only). Never asserts anything; nothing here is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# glibc's malloc raises its mmap threshold as large blocks are freed, then keeps later large blocks on the
# heap, where a freed one still counts in RSS: the full weights each rank frees once sharded, the gathered
# layers FSDP frees after use. A fixed 1 MiB threshold (read at start-up, so set here for the spawned
# ranks) returns every freed large tensor to the OS, so peak RSS follows live tensors. Without it the
# FSDP ranks' peak RSS measured as high as DDP's.
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(1024 * 1024))

import torch  # noqa: E402

MB = 1024 * 1024


def _local(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _bytes(tensors) -> int:
    return sum(_local(t).numel() * t.element_size() for t in tensors if t is not None)


def _rank(rank: int, port: int, strategy: str, args: argparse.Namespace, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from transformers import LlamaConfig, LlamaForCausalLM

    from hps_core.train import distributed, loop
    from hps_core.train.logprobs import response_logps

    distributed.init_from_env()
    torch.manual_seed(0)  # every rank builds the same start weights
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.75),
                         num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64, num_key_value_heads=2,
                         max_position_embeddings=args.seq, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    tokens = torch.randint(0, args.vocab, (8 * args.steps, args.seq), generator=torch.Generator().manual_seed(1))
    held = {"params": 0, "grads": 0, "optimizer": 0}

    def measure(optimizer, *_):  # just before each optimizer step: gradients and (after step 1) AdamW state exist
        params = [p for g in optimizer.param_groups for p in g["params"]]
        now = {"params": _bytes(params), "grads": _bytes(p.grad for p in params),
               "optimizer": _bytes(t for s in optimizer.state.values() for t in s.values() if t.ndim > 0)}
        if sum(now.values()) > sum(held.values()):
            held.update(now)

    build = loop._adamw

    def adamw_measured(model, settings):
        optimizer = build(model, settings)
        optimizer.register_step_pre_hook(measure)
        return optimizer

    loop._adamw = adamw_measured  # the benchmark's probe; the loop is otherwise the pipeline's

    def loss_fn(model, rows):
        ids = tokens[rows]
        response = torch.zeros_like(ids, dtype=torch.bool)
        response[:, args.seq // 2 :] = True
        logps, counts = response_logps(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                               "response_mask": response})
        return -(logps / counts).sum(), len(rows), {}, int(ids.numel())

    plan = loop.split_steps([list(range(8 * s, 8 * s + 8)) for s in range(args.steps)], args.micro)
    settings = loop.LoopSettings(lr=1e-4, log_every=10**6, strategy=strategy, description=f"bench-{strategy}")
    try:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        loop.train_loop(model, plan, loss_fn, settings)
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        record = {"strategy": strategy, "rank": rank, "n_params": n_params, **held, "rss_before": rss_before,
                  "peak_rss": peak_rss}
        Path(out_dir, f"{strategy}-{rank}.json").write_text(json.dumps(record))
    finally:
        distributed.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--micro", type=int, default=2,
                        help="micro-batch size: 2 = two micro-batches per rank and step (gradient accumulation), 4 = one")
    parser.add_argument("--json", type=Path, help="also write the records here")
    args = parser.parse_args(argv)
    records = []
    with tempfile.TemporaryDirectory() as out:
        for strategy in ("ddp", "fsdp"):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            torch.multiprocessing.spawn(_rank, args=(port, strategy, args, out), nprocs=2, join=True)
            records += [json.loads(Path(out, f"{strategy}-{r}.json").read_text()) for r in range(2)]
    n = records[0]["n_params"]
    print(f"Llama {args.layers} layers, hidden {args.hidden}, vocab {args.vocab} (tied head): {n / 1e6:.1f} M parameters "
          f"({n * 4 / MB:.0f} MB fp32); 2 gloo ranks, {args.steps} steps, load average {os.getloadavg()[0]:.1f}")
    print(f"micro-batch {args.micro}: {4 // args.micro} micro-batch(es) per rank and step")
    print("| strategy | rank | parameters MB | gradients MB | AdamW state MB | sum MB | RSS before training MB | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in records:
        total = r["params"] + r["grads"] + r["optimizer"]
        print(f"| {r['strategy']} | {r['rank']} | {r['params'] / MB:.1f} | {r['grads'] / MB:.1f} | "
              f"{r['optimizer'] / MB:.1f} | {total / MB:.1f} | {r['rss_before'] / MB:.0f} | {r['peak_rss'] / MB:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "json"},
                                         "records": records}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
