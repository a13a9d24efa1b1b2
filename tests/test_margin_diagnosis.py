"""benchmarks/margin_diagnosis.py on a hand-made comparison run: which negative sets margin_hardest."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from margin_diagnosis import diagnose  # noqa: E402


def _branch(root: Path, name: str, groups: list[list[float]]) -> None:
    rows = [{"eval_set": "", "policy": "policy", "prompt_id": f"p{i}", "rank": rank, "implicit_reward": r}
            for i, rewards in enumerate(groups) for rank, r in enumerate(rewards)]
    rows += [{"eval_set": "", "policy": "sft", "prompt_id": "p0", "rank": 0, "implicit_reward": 99.0}]  # not the policy
    path = root / "compare" / name / "eval" / "implicit_rewards.parquet"
    path.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(path)


def test_by_hand(tmp_path):
    # rewards in score order (rank 0 preferred). Group 0: the max negative is rank 1; group 1: rank 4.
    _branch(tmp_path, "dpo-hps_n5_s0", [[1.0, 0.5, -1.0, -1.0, -2.0], [1.0, -2.0, -1.0, 0.0, 0.2]])
    _branch(tmp_path, "dpo-hps_n5_s1", [[0.0, -1.0, -1.0, -1.0, -1.0], [0.0, -1.0, -1.0, -1.0, -1.0]])
    (tmp_path / "compare" / "groups").mkdir()  # not a branch: ignored
    row = diagnose(tmp_path).iloc[0]
    assert (row["n"], row["method"]) == (5, "dpo-hps")
    # seed 1's ties go to the first max (rank 1): ranks 1, 4, 1, 1
    assert row["argmax_rank"] == pytest.approx((1 + 4 + 1 + 1) / 4)
    assert row["argmax_is_rank1"] == pytest.approx(0.75)
    assert row["margin_hardest"] == pytest.approx(((1 - 0.5) + (1 - 0.2) + 1 + 1) / 4)
    assert row["margin_top_scored"] == pytest.approx(((1 - 0.5) + (1 + 2) + 1 + 1) / 4)
    assert row["r_rank4plus"] == pytest.approx((-2.0 + 0.2 - 1 - 1) / 4)


def test_not_a_compare_run(tmp_path):
    with pytest.raises(SystemExit, match="compare_flow run"):
        diagnose(tmp_path)
