"""Speed race: TRL's DPOTrainer against our preference trainer on the same HH-RLHF pairs and tokens.

Run as:
    python benchmarks/bench_trl_race.py --pairs 320 --repeats 3 --threads 2 --json bench_trl_race.json
    python benchmarks/bench_trl_race.py --data ../shared/datasets/hh-rlhf --pairs 40 --repeats 1   # a quick look
    python benchmarks/bench_trl_race.py --model smollm2 --pairs 48 --repeats 1 --json bench_trl_race_smollm2.json

Setup (identical for both trainers):
- the first ``--pairs`` HH-RLHF harmless-base test pairs (``--data``) whose prompt leaves room for at least
  one completion token (see below), split into prompt / chosen / rejected by the project's HH-RLHF adapter;
- one tokenizer (byte-level BPE trained on the data) and one 4-layer, 256-wide Llama (``--model small``,
  bench_methods' small preset), built locally from ``--seed`` and saved once to a temp directory that both
  trainers load; or ``--model smollm2``: the real SmolLM2-135M-Instruct (30 layers, 576 wide, 49,152-token
  vocabulary, ChatML template), converted from its GGUF file as the real-model tests do
  (``tests/real_model.py``). At that vocabulary the LM head dominates each step: another regime;
- the text is tokenised ONCE, by our trainer's ``Encoder``; TRL gets those ids pre-tokenised
  (``prompt_ids`` / ``chosen_ids`` / ``rejected_ids``, the columns its own ``_prepare_dataset`` would have
  produced: only that method is overridden, which also takes TRL's tokenisation out of its timing);
- truncation to ``--max-length`` as TRL's default ``truncation_mode="keep_start"`` does it (cut the end of
  prompt + completion); a pair whose prompt alone fills ``max_length`` would keep no completion token, so
  it is dropped before either trainer sees it (TRL drops it too), and our prompt limit is set to
  ``max_length - 1`` so our encoder cuts the same tokens;
- one epoch, ``--batch-size`` pairs per optimizer step, same lr (cosine, no warmup), beta, grad clipping
  and seed; fp32 on CPU with ``--threads`` intra-op threads.
TRL runs at its fastest CPU settings: ``precompute_ref_log_probs=True`` (one reference pass, like ours),
``gradient_checkpointing=False``, ``use_cpu=True``, its fused LM head (always on in TRL 1.16).

Fairness checks (the run fails if one does not hold), from hooks that record what each trainer computed:
- both trained on the same sequences, each once, with the same completion-token count per sequence;
- the first training batch's policy log-probs of each trainer equal the other trainer's reference
  log-probs of the same sequences (at step 0 the policy IS the reference: same weights, same tokens),
  and all reference log-probs agree. The tolerance is ``--tol`` (1e-4) per completion token: a summed
  log-prob of a 250-token completion is about -1,700, where float32's spacing is already 1.2e-4.
  A first-step DPO loss of log 2 proves nothing, since the policy starts equal to its reference.

Measured, per trainer, each run in its own fresh subprocess (so one trainer's peak memory cannot inflate
the other's), the two trainers alternating over ``--repeats`` so drifting load on a shared machine hits
both alike; medians reported:
- ``pairs/s`` end to end: pairs over the wall time from loading the model to the end of training, which
  covers the reference pass and (ours only) tokenising and saving the trained model;
- ``pairs/s`` of the training loop: pairs of steps 2..n over the time between the end of step 1 and the
  end of the last step (per-step timestamps from a TRL callback and from our loop's log hook);
- ``tokens/s``: completion tokens and all tokens of the trained sequences (prompt + completion, the same
  for both) over the end-to-end time; beside them the tokens the forward passes actually computed,
  padding included (TRL: a row per sequence, padded to the longest of a random batch; ours: a row per
  pair, the prompt once and both completions after it, batches grouped by length);
- peak memory: the process's peak RSS (``VmHWM`` of /proc/self/status) at the end, and its growth from
  just before loading the model (libraries imported, data read).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "hh-rlhf"
DATA_FILE = "harmless-base-test.jsonl.gz"
MODELS = {  # name -> TinyModelConfig fields; "small" is the race's, "tiny" is for the fairness test
    "small": {"vocab_size": 1024, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256},
    "tiny": {"vocab_size": 1024, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 256},
}
REAL_MODELS = ("smollm2",)  # pretrained, not built: SmolLM2-135M-Instruct from its GGUF file
TRAINERS = ("ours", "trl")


@dataclass(frozen=True)
class RaceSettings:
    pairs: int = 320
    batch_size: int = 8
    max_length: int = 256
    lr: float = 5e-5
    beta: float = 0.1
    seed: int = 0
    threads: int = 2
    model: str = "small"


# ---------------------------------------------------------------------------------------------- setup


def load_hh_pairs(data: Path) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) of every HH-RLHF record in ``data`` (a directory or the .jsonl.gz)."""
    from hps_core.data.hh_rlhf import split_pair

    path = Path(data)
    path = path / DATA_FILE if path.is_dir() else path
    if not path.is_file():
        raise SystemExit(f"no HH-RLHF data at {path}; pass --data DIR holding {DATA_FILE}")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return [split_pair(r["chosen"], r["rejected"], f"{path}:{i + 1}") for i, r in enumerate(records)]


def prepare(workdir: Path, data: Path, settings: RaceSettings) -> dict:
    """Build the model and tokenise the pairs once; write ``pairs.json`` for both trainers. Returns its
    summary (pairs kept and dropped, model directory)."""
    from hps_core.config.schema import TinyModelConfig
    from hps_core.models.loading import build_tiny_model, load_tokenizer, tiny_corpus
    from hps_core.data.encoding import Encoder

    triples = load_hh_pairs(data)
    if settings.model in REAL_MODELS:
        from tests.real_model import smollm2_dir

        model_dir = smollm2_dir()
    else:
        corpus = tiny_corpus([p for p, _, _ in triples], [r for _, c, rj in triples for r in (c, rj)])
        model_dir = build_tiny_model(corpus, TinyModelConfig(**MODELS[settings.model]), seed=settings.seed,
                                     cache_dir=workdir / "models")
    tokenizer = load_tokenizer(str(model_dir))
    whole = Encoder(tokenizer, max_prompt_tokens=10**9, max_length=10**9)  # untruncated: TRL truncates itself
    kept, dropped = [], 0
    for i, (prompt, chosen, rejected) in enumerate(triples):
        if len(kept) == settings.pairs:
            break
        c, r = whole.encode(prompt, chosen), whole.encode(prompt, rejected)
        if c.n_prompt >= settings.max_length:  # keep_start would leave no completion token
            dropped += 1
            continue
        kept.append({"record": i, "prompt": prompt, "chosen": chosen, "rejected": rejected,
                     "prompt_ids": c.input_ids[:c.n_prompt], "chosen_ids": c.input_ids[c.n_prompt:],
                     "rejected_ids": r.input_ids[r.n_prompt:]})
    if len(kept) < settings.pairs:
        raise SystemExit(f"only {len(kept)} pairs of {len(triples)} fit max_length={settings.max_length}; "
                         f"ask for fewer --pairs or a larger --max-length")
    summary = {"model_dir": str(model_dir), "pairs": len(kept), "dropped_long_prompts": dropped,
               "records_read": kept[-1]["record"] + 1, "settings": asdict(settings)}
    (workdir / "pairs.json").write_text(json.dumps({**summary, "examples": kept}))
    return summary


def sequence_keys(examples: list[dict], max_length: int) -> dict[tuple[int, ...], list[str]]:
    """Truncated token ids of every trained sequence -> its names (``"<pair>c"``, ``"<pair>r"``)."""
    keys: dict[tuple[int, ...], list[str]] = {}
    for i, ex in enumerate(examples):
        for side in ("chosen", "rejected"):
            ids = tuple((ex["prompt_ids"] + ex[f"{side}_ids"])[:max_length])
            keys.setdefault(ids, []).append(f"{i}{side[0]}")
    return keys


class Recorder:
    """What a trainer computed, per sequence: reference log-probs (no-grad passes), completion tokens
    trained on, the first training batch's policy log-probs, token totals and per-step timestamps."""

    def __init__(self, keys: dict[tuple[int, ...], list[str]]):
        self.keys = keys
        self.reference: dict[str, float] = {}
        self.first_batch: dict[str, float] = {}
        self.completion_tokens: dict[str, int] = {}
        self.tokens = {"completion": 0, "non_padding": 0, "padded": 0}
        self.step_ends: list[float] = []
        self.unknown = 0

    def record(self, sequences: list[list[int]], logps, counts, padded_tokens: int, training: bool) -> None:
        """One forward's sequences (prompt + completion token ids, in output order) and their results."""
        names = []
        for seq in sequences:
            found = self.keys.get(tuple(seq))
            self.unknown += found is None
            names.append(found or [])
        values, counts = logps.detach().double().tolist(), counts.tolist()
        if not training:
            for ns, v in zip(names, values):
                self.reference.update((n, v) for n in ns)
            return
        if not self.first_batch:
            self.first_batch = {n: v for ns, v in zip(names, values) for n in ns}
        for ns, c in zip(names, counts):
            for n in ns:
                self.completion_tokens[n] = self.completion_tokens.get(n, 0) + int(c)
        self.tokens["completion"] += int(sum(counts))
        self.tokens["non_padding"] += sum(map(len, sequences))
        self.tokens["padded"] += padded_tokens


def padded_rows(input_ids, attention_mask) -> list[list[int]]:
    """The sequences of a right-padded batch, one per row."""
    return [row[:n] for row, n in zip(input_ids.tolist(), attention_mask.sum(dim=1).tolist())]


def shared_rows(batch) -> list[list[int]]:
    """The sequences of a ``collate_shared`` batch (prompt + each response), in output order."""
    out = []
    for ids, seg in zip(batch["input_ids"].tolist(), batch["segment_ids"].tolist()):
        prompt = [t for t, s in zip(ids, seg) if s == 0]
        out += [prompt + [t for t, s in zip(ids, seg) if s == k] for k in range(1, max(seg) + 1)]
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status; peak RSS needs Linux")


# ------------------------------------------------------------------------------------------- trainers


def import_model_code() -> None:
    """Import the model classes both trainers load, before either is timed: transformers imports them
    lazily, on the first ``from_pretrained``, which would otherwise count seconds of imports against
    whichever trainer loads its model inside the timed span."""
    import transformers.models.llama.modeling_llama  # noqa: F401
    from transformers import AutoModelForCausalLM  # noqa: F401


def run_ours(workdir: Path, settings: RaceSettings, out_dir: Path) -> dict:
    """Our trainer (``train_preference``, method dpo-bt) on the prepared pairs; returns its record."""
    import pandas as pd
    import torch

    from hps_core.config.schema import ModelConfig, PreferenceTrainConfig, TinyModelConfig
    from hps_core.sampling.groups import build_groups
    from hps_core.train import preference

    prepared = json.loads((workdir / "pairs.json").read_text())
    examples = prepared["examples"]
    rec = Recorder(sequence_keys(examples, settings.max_length))
    rows = []
    for i, ex in enumerate(examples):
        for side, score in (("chosen", 1.0), ("rejected", 0.0)):
            rows.append({"prompt_id": f"hh{i:05d}", "prompt": ex["prompt"], "response_id": f"hh{i:05d}{side[0]}",
                         "response": ex[side], "score": score, "is_harmful": None, "split": "train"})
    groups = build_groups(pd.DataFrame(rows))
    # One epoch, the pairs' own negative, steps of batch_size in the groups' order (TRL shuffles with its own
    # sampler; what is compared is the work per step and over the run, not the order).
    negatives = pd.DataFrame({"epoch": 0, "step": [i // settings.batch_size for i in range(len(groups))],
                              "prompt_id": groups["prompt_id"], "negative_rank": 1, "gamma": 0.0})
    cfg = PreferenceTrainConfig(method="dpo-bt", epochs=1, batch_size=settings.batch_size, lr=settings.lr,
                                beta=settings.beta, warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0,
                                log_every=1, checkpoint_every=0)
    model_cfg = ModelConfig(max_prompt_tokens=settings.max_length - 1, max_length=settings.max_length,
                            tiny=TinyModelConfig(**MODELS.get(settings.model, MODELS["small"])))

    original = preference.response_logps

    def recording(model, batch):
        sums, counts = original(model, batch)
        shared = "segment_ids" in batch
        seqs = shared_rows(batch) if shared else padded_rows(batch["input_ids"], batch["attention_mask"])
        rec.record(seqs, sums, counts, batch["input_ids"].numel(), torch.is_grad_enabled())
        return sums, counts

    preference.response_logps = recording
    import_model_code()
    try:
        rss_before = peak_rss_mb()
        started, started_cpu = time.perf_counter(), time.process_time()
        train_preference_result = preference.train_preference(
            prepared["model_dir"], groups, negatives, model_cfg, cfg, out_dir, seed=settings.seed,
            log_fn=lambda metrics, step: rec.step_ends.append(time.perf_counter()) if "loss" in metrics else None)
        total_s, cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
    finally:
        preference.response_logps = original
    return _result("ours", rec, settings, len(examples), total_s, cpu_s, rss_before,
                   steps=int(train_preference_result["steps"]))


def run_trl(workdir: Path, settings: RaceSettings, out_dir: Path) -> dict:
    """TRL's DPOTrainer on the prepared pairs (pre-tokenised: same ids as ours); returns its record."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    prepared = json.loads((workdir / "pairs.json").read_text())
    examples = prepared["examples"]
    rec = Recorder(sequence_keys(examples, settings.max_length))

    class PretokenizedDPOTrainer(DPOTrainer):
        """DPOTrainer fed the ids our encoder produced; everything after tokenisation is TRL's own."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            rec.step_ends.append(time.perf_counter())

    def hook(module, args, kwargs, output):
        labels = kwargs["labels"][:, 1:]
        logps = output.log_probs.sum(dim=1)  # what TRL sums: zero at non-completion positions
        rec.record(padded_rows(kwargs["input_ids"], kwargs["attention_mask"]), logps, (labels != -100).sum(dim=1),
                   kwargs["input_ids"].numel(), torch.is_grad_enabled())

    dataset = Dataset.from_dict({k: [ex[k] for ex in examples] for k in ("prompt_ids", "chosen_ids", "rejected_ids")})
    config = DPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=settings.batch_size, num_train_epochs=1,
        learning_rate=settings.lr, lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, beta=settings.beta, max_length=settings.max_length, truncation_mode="keep_start",
        precompute_ref_log_probs=True, gradient_checkpointing=False, use_cpu=True, bf16=False,
        seed=settings.seed, logging_steps=10, save_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0,
    )
    import_model_code()
    rss_before = peak_rss_mb()
    started, started_cpu = time.perf_counter(), time.process_time()
    model = AutoModelForCausalLM.from_pretrained(prepared["model_dir"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(prepared["model_dir"])
    model.register_forward_hook(hook, with_kwargs=True)
    trainer = PretokenizedDPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                                     callbacks=[StepClock()])
    trainer.train()
    total_s, cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
    return _result("trl", rec, settings, len(examples), total_s, cpu_s, rss_before,
                   steps=int(trainer.state.global_step))


def _result(trainer: str, rec: Recorder, settings: RaceSettings, pairs: int, total_s: float, cpu_s: float,
            rss_before: float, *, steps: int) -> dict:
    import torch

    ends = rec.step_ends
    loop_pairs = pairs - settings.batch_size  # steps 2..n (the last batch may be short)
    return {
        "trainer": trainer, "pairs": pairs, "steps": steps, "total_s": total_s, "cpu_s": cpu_s,
        "threads": torch.get_num_threads(),
        "pairs_per_s": pairs / total_s,
        "loop_pairs_per_s": loop_pairs / (ends[-1] - ends[0]) if len(ends) > 1 else float("nan"),
        "completion_tokens": rec.tokens["completion"], "non_padding_tokens": rec.tokens["non_padding"],
        "padded_tokens": rec.tokens["padded"],
        "completion_tokens_per_s": rec.tokens["completion"] / total_s,
        "tokens_per_s": rec.tokens["non_padding"] / total_s,
        "peak_rss_mb": peak_rss_mb(), "rss_growth_mb": peak_rss_mb() - rss_before,
        "unknown_sequences": rec.unknown, "reference": rec.reference, "first_batch": rec.first_batch,
        "completion_per_sequence": rec.completion_tokens,
    }


RUNNERS = {"ours": run_ours, "trl": run_trl}


def run_in_subprocess(trainer: str, workdir: Path, settings: RaceSettings) -> dict:
    """One trainer run in a fresh process (its own peak RSS); returns its record."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1",
           "OMP_NUM_THREADS": str(settings.threads)}
    cmd = [sys.executable, __file__, "--one", trainer, "--workdir", str(workdir),
           *[a for k, v in asdict(settings).items() for a in (f"--{k.replace('_', '-')}", str(v))]]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    result_file = workdir / f"result-{trainer}.json"
    if proc.returncode != 0 or not result_file.is_file():
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-6000:])
        raise SystemExit(f"the {trainer} run failed (exit {proc.returncode}); its output is above")
    result = json.loads(result_file.read_text())
    result_file.unlink()
    return result


# ------------------------------------------------------------------------------------- fairness check


def check_same_work(ours: dict, trl: dict, tol: float) -> dict:
    """Compare what the two trainers computed; return the comparison, with ``ok`` and the failures."""
    failures = []
    for r in (ours, trl):
        if r["unknown_sequences"]:
            failures.append(f"{r['trainer']} computed {r['unknown_sequences']} sequence(s) that are not the "
                            "prepared ones")
    a, b = ours["completion_per_sequence"], trl["completion_per_sequence"]
    if a != b:
        differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        failures.append(f"completion tokens per sequence differ on {len(differ)} sequence(s), first {differ[:5]}: "
                        f"ours {[a.get(k) for k in differ[:5]]}, trl {[b.get(k) for k in differ[:5]]}")
    if ours["completion_tokens"] != trl["completion_tokens"]:
        failures.append(f"completion tokens: ours {ours['completion_tokens']}, trl {trl['completion_tokens']}")

    def worst(values: dict, against: dict, what: str) -> float:
        missing = sorted(set(values) - set(against))
        if missing or not values:
            failures.append(f"{what}: no counterpart for {missing[:5] or 'an empty batch'}")
            return float("nan")
        per_token = [abs(values[k] - against[k]) / max(1, a[k]) for k in values]
        return max(per_token)

    diffs = {
        "first_batch_ours_vs_trl_reference": worst(ours["first_batch"], trl["reference"], "our first batch"),
        "first_batch_trl_vs_our_reference": worst(trl["first_batch"], ours["reference"], "TRL's first batch"),
        "reference_ours_vs_trl": worst(ours["reference"], trl["reference"], "our reference log-probs"),
    }
    for name, d in diffs.items():
        if not d <= tol:
            failures.append(f"{name}: log-probs differ by {d:.2e} per completion token (tolerance {tol:.0e})")
    max_abs = max(abs(ours["reference"][k] - trl["reference"].get(k, float("nan"))) for k in ours["reference"])
    return {"ok": not failures, "failures": failures, "max_logp_diff_per_token": diffs,
            "max_abs_reference_logp_diff": max_abs, "sequences": len(a), "completion_tokens": ours["completion_tokens"],
            "first_batch_sizes": {"ours": len(ours["first_batch"]), "trl": len(trl["first_batch"])}}


# -------------------------------------------------------------------------------------------- report

SUMMED = ("pairs_per_s", "loop_pairs_per_s", "completion_tokens_per_s", "tokens_per_s", "peak_rss_mb",
          "rss_growth_mb", "total_s", "cpu_s")


def summarise(runs: list[dict]) -> dict:
    keep = ("pairs", "steps", "completion_tokens", "non_padding_tokens", "padded_tokens", "threads")
    return {**{k: runs[0][k] for k in keep}, **{k: statistics.median(r[k] for r in runs) for k in SUMMED},
            "runs": [{k: r[k] for k in SUMMED} for r in runs]}


def markdown_table(summary: dict[str, dict], ratios: dict[str, float]) -> str:
    lines = ["| trainer | pairs/s (end to end) | pairs/s (training loop) | completion tokens/s | tokens/s "
             "| tokens computed (incl. padding) | peak RSS (MB) | RSS growth (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, label in (("ours", "ours (train_preference, dpo-bt)"), ("trl", "TRL 1.16 DPOTrainer")):
        s = summary[name]
        lines.append(f"| {label} | {s['pairs_per_s']:.2f} | {s['loop_pairs_per_s']:.2f} | "
                     f"{s['completion_tokens_per_s']:.0f} | {s['tokens_per_s']:.0f} | {s['padded_tokens']} | "
                     f"{s['peak_rss_mb']:.0f} | {s['rss_growth_mb']:.0f} |")
    lines.append(f"| ours / TRL | {ratios['pairs_per_s']:.2f}x | {ratios['loop_pairs_per_s']:.2f}x | "
                 f"{ratios['completion_tokens_per_s']:.2f}x | {ratios['tokens_per_s']:.2f}x | "
                 f"{ratios['padded_tokens']:.2f}x | {ratios['peak_rss_mb']:.2f}x | {ratios['rss_growth_mb']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    defaults = RaceSettings()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help=f"directory holding {DATA_FILE}")
    ap.add_argument("--pairs", type=int, default=defaults.pairs, help="HH-RLHF pairs trained (one epoch)")
    ap.add_argument("--batch-size", type=int, default=defaults.batch_size, help="pairs per optimizer step")
    ap.add_argument("--max-length", type=int, default=defaults.max_length, help="prompt + completion tokens")
    ap.add_argument("--lr", type=float, default=defaults.lr)
    ap.add_argument("--beta", type=float, default=defaults.beta)
    ap.add_argument("--seed", type=int, default=defaults.seed)
    ap.add_argument("--threads", type=int, default=defaults.threads, help="torch intra-op threads per trainer")
    ap.add_argument("--model", choices=sorted(MODELS) + list(REAL_MODELS), default=defaults.model,
                    help="Llama size (small: 4 x 256) or a real model (smollm2: SmolLM2-135M-Instruct)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each trainer, alternating (median)")
    ap.add_argument("--tol", type=float, default=1e-4, help="log-prob tolerance per completion token")
    ap.add_argument("--json", dest="json_path", help="write the results as JSON to this path")
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--one", choices=TRAINERS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    settings = RaceSettings(args.pairs, args.batch_size, args.max_length, args.lr, args.beta, args.seed, args.threads,
                            args.model)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    if args.one:  # a child: one trainer, one run
        import torch

        torch.set_num_threads(settings.threads)
        workdir = Path(args.workdir)
        with tempfile.TemporaryDirectory(dir=workdir) as out:
            result = RUNNERS[args.one](workdir, settings, Path(out) / "model")
        (workdir / f"result-{args.one}.json").write_text(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory(prefix="trl-race-") as tmp:
        workdir = Path(tmp)
        prepared = prepare(workdir, Path(args.data), settings)
        print(f"{prepared['pairs']} pairs (of the first {prepared['records_read']} records; "
              f"{prepared['dropped_long_prompts']} dropped: prompt >= max_length)", file=sys.stderr)
        runs: dict[str, list[dict]] = {t: [] for t in TRAINERS}
        for rep in range(args.repeats):
            for trainer in (TRAINERS if rep % 2 == 0 else TRAINERS[::-1]):
                runs[trainer].append(run_in_subprocess(trainer, workdir, settings))
                r = runs[trainer][-1]
                print(f"repeat {rep + 1}/{args.repeats} {trainer:4s}: {r['pairs_per_s']:.2f} pairs/s end to end, "
                      f"{r['loop_pairs_per_s']:.2f} in the loop, {r['total_s']:.1f} s, "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB",
                      file=sys.stderr)
        check = check_same_work(runs["ours"][0], runs["trl"][0], args.tol)

    summary = {t: summarise(rs) for t, rs in runs.items()}
    ratios = {k: summary["ours"][k] / summary["trl"][k] for k in
              ("pairs_per_s", "loop_pairs_per_s", "completion_tokens_per_s", "tokens_per_s", "padded_tokens",
               "peak_rss_mb", "rss_growth_mb")}
    import torch
    import transformers
    import trl

    report = {
        "command": "python benchmarks/bench_trl_race.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {**asdict(settings), "repeats": args.repeats, "tol": args.tol},
        "data": {k: v for k, v in prepared.items() if k not in ("model_dir", "settings")},
        "model": {"preset": settings.model, **MODELS.get(settings.model, {"source": "SmolLM2-135M-Instruct GGUF"})},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
                    "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "same_work": check, "results": summary, "ratios_ours_over_trl": ratios,
    }
    print(markdown_table(summary, ratios))
    print(f"\nsame work: {'yes' if check['ok'] else 'NO'}; {check['sequences']} sequences, "
          f"{check['completion_tokens']} completion tokens each; worst log-prob difference per completion token "
          f"{max(check['max_logp_diff_per_token'].values()):.1e}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2))
    if not check["ok"]:
        print("the trainers did not do the same work:\n  " + "\n  ".join(check["failures"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
