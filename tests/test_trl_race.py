"""The speed race against TRL (benchmarks/bench_trl_race.py) compares like with like: on a handful of real
HH-RLHF pairs, TRL's DPOTrainer and our trainer train on the same sequences with the same completion
tokens, and each one's first-batch policy log-probs equal the other's reference log-probs of the same
sequences (at step 0 the policy is the reference). No timing is asserted.

Both trainers run in this process on a 1-layer, 32-wide Llama, 6 pairs, batch 3: two optimizer steps each.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_trl_race as race  # noqa: E402

HH_DIR = ROOT.parent / "shared" / "datasets" / "hh-rlhf"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (HH_DIR / race.DATA_FILE).is_file(), reason=(
    f"real HH-RLHF data not found in {HH_DIR} (the shared datasets live beside the repository, at ../shared)"))]  # slow tier: TRL's trainer beside ours on real data
pytest.importorskip("trl")

# max_length 96 makes some of the first records' prompts too long (dropped) and cuts some completions.
SETTINGS = race.RaceSettings(pairs=6, batch_size=3, max_length=96, lr=1e-3, beta=0.1, seed=0, threads=1, model="tiny")


@pytest.fixture(scope="module")
def raced(tmp_path_factory):
    """Prepared pairs and one run of each trainer."""
    workdir = tmp_path_factory.mktemp("trl_race")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prepared = race.prepare(workdir, HH_DIR, SETTINGS)
        ours = race.run_ours(workdir, SETTINGS, workdir / "ours")
        trl = race.run_trl(workdir, SETTINGS, workdir / "trl")
    finally:
        torch.set_num_threads(before)
    return workdir, prepared, ours, trl


def test_both_trainers_do_the_same_work(raced):
    workdir, prepared, ours, trl = raced
    assert prepared["pairs"] == 6 and prepared["dropped_long_prompts"] > 0  # prompts >= 96 tokens left out
    assert ours["steps"] == trl["steps"] == 2
    check = race.check_same_work(ours, trl, tol=1e-4)
    assert check["ok"], check["failures"]
    assert check["sequences"] == 12  # 6 pairs x (chosen, rejected), each trained once by each trainer
    assert check["first_batch_sizes"] == {"ours": 6, "trl": 6}  # 3 pairs per batch
    assert ours["completion_tokens"] == trl["completion_tokens"] == sum(ours["completion_per_sequence"].values())
    # max_length cut some completions: a completion token count below the untruncated one proves it
    examples = json.loads((workdir / "pairs.json").read_text())["examples"]
    untruncated = sum(len(ex["chosen_ids"]) + len(ex["rejected_ids"]) for ex in examples)
    assert ours["completion_tokens"] < untruncated
    # ours packs each pair's prompt once: fewer tokens through the model than TRL's two rows per pair
    assert ours["padded_tokens"] < trl["padded_tokens"]


def test_the_check_catches_other_tokens_and_other_log_probs(raced):
    """The comparison can fail: one completion token less, or a log-prob off by 1e-2 per token, is caught."""
    _, _, ours, trl = raced
    name = next(iter(trl["first_batch"]))

    fewer = copy.deepcopy(trl)
    fewer["completion_per_sequence"][name] -= 1
    fewer["completion_tokens"] -= 1
    failures = race.check_same_work(ours, fewer, tol=1e-4)["failures"]
    assert any("completion tokens per sequence differ" in f for f in failures), failures

    shifted = copy.deepcopy(trl)
    shifted["first_batch"][name] += 1e-2 * ours["completion_per_sequence"][name]
    failures = race.check_same_work(ours, shifted, tol=1e-4)["failures"]
    assert any(f.startswith("first_batch_trl_vs_our_reference") for f in failures), failures
