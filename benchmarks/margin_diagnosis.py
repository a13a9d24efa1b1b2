"""Which dispreferred response sets each method's ``margin_hardest``? Read from a comparison run's tables.

    python benchmarks/margin_diagnosis.py .hps/runs/<compare run id>

``margin_hardest`` = r(y+) - max_j r(y_j) takes the max over the policy's *implicit* rewards, so the
"hardest" response is the one the trained policy likes most, not the one the scores rank highest. This
script reads every branch's ``eval/implicit_rewards.parquet`` (held-out groups, responses in score order,
rank 0 = preferred) and reports per method and group size, averaged over groups and seeds:

- ``argmax_rank``: score rank of the dispreferred response with the highest implicit reward (1 = the
  top-scored dispreferred one, the "hard" negative HPS draws most), and ``argmax_is_rank1`` its share;
- ``r_preferred``, ``r_rank1``, ``r_rank4plus``: mean implicit reward of the preferred response, of the
  top-scored dispreferred one, and of the dispreferred ones ranked 4th or lower;
- ``margin_hardest`` and ``margin_top_scored`` = r(y+) - r(y_rank1), the margin over the response the scores
  call hardest (both as the evaluate step defines them, ``hps_core.evaluate.per_group_margins``; runs made
  before ``margin_top_scored`` was logged get it here from their tables).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd


def branch_rows(path: Path) -> list[dict]:
    """Per held-out group of one branch: where the implicit-reward max falls and the margins."""
    match = re.fullmatch(r"(?P<slug>.+)_n(?P<n>\d+)_s(?P<seed>\d+)", path.parent.parent.name)
    if match is None:
        return []
    from hps_core.evaluate.metrics import per_group_margins

    table = pd.read_parquet(path)
    table = table[table["policy"] == "policy"]
    rows = []
    for _, g in table.groupby(["eval_set", "prompt_id"], sort=False):
        g = g.sort_values("rank")
        negatives = g[g["rank"] > 0]
        top = int(negatives.loc[negatives["implicit_reward"].idxmax(), "rank"])
        margins = per_group_margins(g).iloc[0]  # the evaluate step's own definitions
        rows.append({"method": match["slug"], "n": int(match["n"]), "seed": int(match["seed"]), "argmax_rank": top,
                     "argmax_is_rank1": float(top == 1), "r_preferred": float(g["implicit_reward"].iloc[0]),
                     "r_rank1": float(negatives["implicit_reward"].iloc[0]),
                     "r_rank4plus": negatives.loc[negatives["rank"] >= 4, "implicit_reward"].mean(),
                     "margin_hardest": margins["margin_hardest"], "margin_top_scored": margins["margin_top_scored"]})
    return rows


def diagnose(run_dir: Path) -> pd.DataFrame:
    """The table of the module docstring, one row per (method, n)."""
    rows = [row for path in sorted(run_dir.glob("compare/*/eval/implicit_rewards.parquet")) for row in branch_rows(path)]
    if not rows:
        raise SystemExit(f"no compare/<branch>/eval/implicit_rewards.parquet under {run_dir}: is it a compare_flow run?")
    columns = ["argmax_rank", "argmax_is_rank1", "r_preferred", "r_rank1", "r_rank4plus", "margin_hardest", "margin_top_scored"]
    return pd.DataFrame(rows).groupby(["n", "method"], sort=True)[columns].mean().round(3).reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help=".hps/runs/<compare run id>")
    args = parser.parse_args()
    print(diagnose(args.run_dir).to_markdown(index=False))


if __name__ == "__main__":
    main()
