"""hps_core.sampling.groups: ranking into groups, the per-epoch negative draws (seeded, recorded with gamma and q),
the split of an epoch into schedule parts, and the digest that names what a run trained on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hps_core.common.digests import json_digest
from hps_core.sampling.groups import (
    NEGATIVE_COLUMNS,
    SplitError,
    build_groups,
    check_splits,
    draw_epoch_negatives,
    group_stats,
    groups_digest,
    plan_steps,
)
from hps_core.sampling.hardness import hardness_probs, make_gamma_schedule, select_negative


def _table(spec: dict[str, list[float]], harmful: dict[str, list] | None = None) -> pd.DataFrame:
    """Canonical rows: prompt ``p`` gets responses ``p-0, p-1, ...`` with the given scores, in that order."""
    rows = []
    for pid, scores in spec.items():
        for j, s in enumerate(scores):
            rows.append({"prompt_id": pid, "prompt": f"prompt {pid}", "response_id": f"{pid}-{j}",
                         "response": f"answer {j} to {pid}", "score": s,
                         "is_harmful": (harmful or {}).get(pid, [None] * len(scores))[j], "split": "train"})
    return pd.DataFrame(rows)


def _many(n_prompts: int = 40, n: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return build_groups(_table({f"p{i:03d}": rng.normal(size=n).round(3).tolist() for i in range(n_prompts)}))


def test_build_groups_ranks_best_first_and_keeps_ties():
    """Prompt a: scores [1, 3, 2] -> ranked ids a-1 (3), a-2 (2), a-0 (1); gap 3 - 2 = 1, no top tie.
    Prompt b: [5, 0, 5] -> tie at the top: the earlier row (b-0) is preferred, b-2 is kept as the first
    dispreferred response (the hardest possible negative), b-1 last; gap 0, one top tie."""
    g = build_groups(_table({"a": [1.0, 3.0, 2.0], "b": [5.0, 0.0, 5.0]}, harmful={"a": [True, False, None]}))
    a, b = g.set_index("prompt_id").loc["a"], g.set_index("prompt_id").loc["b"]
    assert a["response_ids"] == ["a-1", "a-2", "a-0"] and a["scores"] == [3.0, 2.0, 1.0]
    assert a["preferred_id"] == "a-1" and a["dispreferred_ids"] == ["a-2", "a-0"]
    assert a["score_gap"] == 1.0 and a["n_top_ties"] == 0 and a["n"] == 3
    assert a["is_harmful"] == [False, None, True]
    assert b["response_ids"] == ["b-0", "b-2", "b-1"] and b["score_gap"] == 0.0 and b["n_top_ties"] == 1
    assert group_stats(g, pd.DataFrame())["groups_with_top_ties"] == 1.0


def test_build_groups_rejects_a_single_response_prompt():
    with pytest.raises(ValueError, match="prompt solo has 1 response"):
        build_groups(_table({"ok": [1.0, 2.0], "solo": [1.0]}))


def test_draws_are_seeded_recorded_and_replayable():
    """Same seed -> the identical table; another seed -> other negatives. Each row records the step and
    gamma it was drawn at and q = q_gamma(negative) recomputed from the group's dispreferred scores;
    replaying the draw by hand (groups in the plan's order: the permutation seeded by (seed, epoch, 1);
    draws from the generator seeded by (seed, epoch)) gives the same negatives. One step per epoch
    (40 groups per step), linear 0 -> 2 over the 2 steps: gamma 0 on the first, 2 = gamma_end on the last."""
    groups = _many()
    sched = make_gamma_schedule("linear", gamma_start=0.0, gamma_end=2.0)
    a = draw_epoch_negatives(groups, rule="hps", schedule=sched, n_epochs=2, seed=7, examples_per_step=40)
    b = draw_epoch_negatives(groups, rule="hps", schedule=sched, n_epochs=2, seed=7, examples_per_step=40)
    c = draw_epoch_negatives(groups, rule="hps", schedule=sched, n_epochs=2, seed=8, examples_per_step=40)
    pd.testing.assert_frame_equal(a, b)
    assert not a["negative_rank"].equals(c["negative_rank"])
    assert tuple(a.columns) == NEGATIVE_COLUMNS and len(a) == 2 * len(groups)
    assert a.groupby("step")["gamma"].unique().map(list).tolist() == [[0.0], [2.0]]
    scores = groups.set_index("prompt_id")["scores"]
    for row in a.itertuples():
        q = hardness_probs(scores[row.prompt_id][1:], row.gamma)
        assert row.q == pytest.approx(q[row.negative_rank - 1], rel=1e-12)
    for epoch, gamma in ((0, 0.0), (1, 2.0)):
        order = np.random.default_rng([7, epoch, 1]).permutation(len(groups))
        rng = np.random.default_rng([7, epoch])
        by_hand = [select_negative("hps", np.asarray(groups["scores"].iloc[i][1:]), rng, gamma=gamma) + 1 for i in order]
        assert a[a["epoch"] == epoch]["prompt_id"].tolist() == groups["prompt_id"].iloc[order].tolist()
        assert a[a["epoch"] == epoch]["negative_rank"].tolist() == by_hand


def test_baseline_rules_and_large_gamma():
    """max_max picks the best dispreferred response (rank 1), max_min the worst (rank n - 1 = 5); hps at
    gamma 1e3 puts all mass on the top-scored negative, so it also draws rank 1 (scores are distinct)."""
    groups = _many()
    draw = lambda rule, gamma=1.0: draw_epoch_negatives(  # noqa: E731
        groups, rule=rule, schedule=make_gamma_schedule("constant", gamma=gamma), n_epochs=1, seed=0,
        examples_per_step=8)
    assert set(draw("max_max")["negative_rank"]) == {1}
    assert set(draw("max_min")["negative_rank"]) == {5}
    assert set(draw("hps", gamma=1e3)["negative_rank"]) == {1}
    assert set(draw("random")["negative_rank"]) == {1, 2, 3, 4, 5}  # 40 uniform draws over 5 ranks


def test_steps_are_random_batches_and_the_schedule_moves_every_step():
    """40 groups, 2 epochs, 8 per step -> 10 steps of 8; the reference step schedule over 10 steps gives
    stage floor(5 * i / 10): -5,-5,-3,-3,-1,-1,1,1,3,3. Every group trains once per epoch, the two epochs
    order the groups differently, and a step is not a slice of the groups' own order."""
    groups = _many()
    neg = draw_epoch_negatives(groups, rule="hps", schedule=make_gamma_schedule("step"), n_epochs=2, seed=0,
                               examples_per_step=8)
    assert neg.groupby("step").size().tolist() == [8] * 10
    assert neg.groupby("step")["gamma"].unique().map(list).tolist() == [[-5.0], [-5.0], [-3.0], [-3.0], [-1.0], [-1.0],
                                                                        [1.0], [1.0], [3.0], [3.0]]
    assert neg.groupby("step")["epoch"].first().tolist() == [0] * 5 + [1] * 5
    assert (neg.groupby("epoch")["prompt_id"].nunique() == len(groups)).all()
    first, second = (neg[neg["epoch"] == e]["prompt_id"].tolist() for e in (0, 1))
    assert first != second and first != groups["prompt_id"].tolist()
    uneven = plan_steps(10, 1, 4, seed=0)  # an epoch's last step holds the remainder
    assert [len(idx) for _, _, idx in uneven] == [4, 4, 2] and sorted(np.concatenate([i for *_, i in uneven])) == list(range(10))
    with pytest.raises(ValueError, match="examples_per_step >= 1"):
        plan_steps(10, 1, 0, seed=0)


def test_online_rule_leaves_the_negatives_to_the_trainer():
    """rule = "online" gives the plan (steps, gammas) with no negative: rank -1, no id, q NaN."""
    neg = draw_epoch_negatives(_many(), rule="online", schedule=make_gamma_schedule(), n_epochs=1, seed=0,
                               examples_per_step=16)
    assert (neg["negative_rank"] == -1).all() and (neg["negative_id"] == "").all() and neg["q"].isna().all()
    assert neg["step"].tolist() == [0] * 16 + [1] * 16 + [2] * 8


def test_groups_digest_is_stable_and_sensitive():
    """The digest is a pure function of the groups and negatives: recomputing it (or rebuilding both from
    the same inputs) gives the same value; changing one drawn negative changes it."""
    groups = _many()
    neg = draw_epoch_negatives(groups, rule="hps", schedule=make_gamma_schedule(), n_epochs=1, seed=0, examples_per_step=8)
    d = groups_digest(groups, neg)
    assert d == groups_digest(_many(), draw_epoch_negatives(_many(), rule="hps", schedule=make_gamma_schedule(),
                                                            n_epochs=1, seed=0, examples_per_step=8))
    other = neg.copy()
    other.loc[0, "negative_rank"] = 1 if other.loc[0, "negative_rank"] != 1 else 2
    assert groups_digest(groups, other) != d
    assert groups_digest(groups, neg.iloc[:0]) == groups_digest(groups, pd.DataFrame())  # no negatives (PL)


def test_group_frame_by_hand():
    """Every column of two groups: prompts in sorted id order, prompt text and split from the first row."""
    t = _table({"b": [0.5, 2.0], "a": [1.0, 1.0, 0.0]}, harmful={"b": [True, False], "a": [None, None, None]})
    t.loc[t["prompt_id"] == "a", "split"] = "eval"
    g = build_groups(t)
    assert list(g.columns) == ["prompt_id", "prompt", "split", "n", "response_ids", "responses", "scores", "is_harmful",
                               "preferred_id", "dispreferred_ids", "score_gap", "n_top_ties"]
    assert g.to_dict("records") == [
        {"prompt_id": "a", "prompt": "prompt a", "split": "eval", "n": 3, "response_ids": ["a-0", "a-1", "a-2"],
         "responses": ["answer 0 to a", "answer 1 to a", "answer 2 to a"], "scores": [1.0, 1.0, 0.0],
         "is_harmful": [None, None, None], "preferred_id": "a-0", "dispreferred_ids": ["a-1", "a-2"],
         "score_gap": 0.0, "n_top_ties": 1},
        {"prompt_id": "b", "prompt": "prompt b", "split": "train", "n": 2, "response_ids": ["b-1", "b-0"],
         "responses": ["answer 1 to b", "answer 0 to b"], "scores": [2.0, 0.5], "is_harmful": [False, True],
         "preferred_id": "b-1", "dispreferred_ids": ["b-0"], "score_gap": 1.5, "n_top_ties": 0}]
    with pytest.raises(ValueError) as exc:
        build_groups(_table({"solo": [1.0]}))
    assert str(exc.value) == "prompt solo has 1 response(s); a preference group needs at least 2"


def test_group_stats_by_hand():
    """5 groups: splits train, train, train, eval, reward; sizes 2, 3, 4, 3, 3 (mean 3); gaps 1, 0, 2, 3, 1.5
    (mean 1.5); one group with a top tie. Negatives drawn at ranks 1, 2, 1 -> mean 4/3, hardest share 2/3."""
    groups = pd.DataFrame({"split": ["train", "train", "train", "eval", "reward"], "n": [2, 3, 4, 3, 3],
                           "score_gap": [1.0, 0.0, 2.0, 3.0, 1.5], "n_top_ties": [0, 2, 0, 0, 0]})
    stats = group_stats(groups, pd.DataFrame({"negative_rank": [1, 2, 1]}))
    assert stats == {"groups": 5.0, "groups_train": 3.0, "groups_eval": 1.0, "groups_reward": 1.0,
                     "responses_per_group_mean": 3.0, "score_gap_mean": 1.5, "groups_with_top_ties": 1.0,
                     "negative_rank_mean": pytest.approx(4 / 3), "negative_is_hardest_share": pytest.approx(2 / 3)}
    assert all(type(v) is float for v in stats.values())
    online = group_stats(groups, pd.DataFrame({"negative_rank": [-1, -1]}))  # drawn by the trainer: no rank stats
    assert "negative_rank_mean" not in online and "negative_is_hardest_share" not in online
    assert "negative_rank_mean" not in group_stats(groups, pd.DataFrame({"negative_rank": [1, -1]}))


def test_groups_digest_covers_ids_scores_splits_and_negatives_only():
    groups = build_groups(_table({"a": [1.0, 0.0], "b": [2.0, 1.0]}))
    neg = pd.DataFrame({"epoch": [0], "negative_rank": [1]})
    assert groups_digest(groups, neg) == json_digest({
        "groups": {"prompt_id": ["a", "b"], "split": ["train", "train"], "response_ids": [["a-0", "a-1"], ["b-0", "b-1"]],
                   "scores": [[1.0, 0.0], [2.0, 1.0]]},
        "negatives": {"epoch": [0], "negative_rank": [1]}})
    d = groups_digest(groups, neg)
    for column, value in [("split", "eval"), ("scores", [1.0, -1.0]), ("response_ids", ["a-0", "a-9"])]:
        changed = groups.copy()
        changed.at[0, column] = value
        assert groups_digest(changed, neg) != d, column
    assert groups_digest(groups.assign(prompt="reworded"), neg) == d  # the text is not what the pairs are named by


def _split_cfg(batch_size=2):
    from types import SimpleNamespace

    return SimpleNamespace(data=SimpleNamespace(eval_fraction=0.25, reward_fraction=0.1),
                           hps=SimpleNamespace(batch_size=batch_size))


@pytest.mark.parametrize("splits, batch_size, message", [
    (["eval", "reward", "eval"], 2,
     "3 prompt group(s) (0 training, 2 held out, 1 for the reward model): no training groups. With "
     "data.eval_fraction = 0.25, data.reward_fraction = 0.1, add prompts to the data or lower the fractions so "
     "some prompts stay for training"),
    (["train", "train", "reward"], 2,
     "3 prompt group(s) (2 training, 0 held out, 1 for the reward model): no held-out groups, so the evaluation "
     "would have nothing to measure. With data.eval_fraction = 0.25, data.reward_fraction = 0.1, add prompts or "
     "raise data.eval_fraction"),
    (["train", "train", "eval"], 3,
     "3 prompt group(s) (2 training, 1 held out, 0 for the reward model): fewer training groups than one "
     "preference batch (hps.batch_size = 3); lower hps.batch_size to at most 2 or add prompts"),
])
def test_check_splits_refuses_with_the_fix(splits, batch_size, message):
    with pytest.raises(SplitError) as exc:
        check_splits(pd.DataFrame({"split": splits}), _split_cfg(batch_size))
    assert str(exc.value) == message
    assert isinstance(exc.value, ValueError)


def test_check_splits_passes_at_exactly_one_batch():
    assert check_splits(pd.DataFrame({"split": ["train", "train", "eval"]}), _split_cfg(2)) is None


def test_group_text_and_split_come_from_the_first_row_and_no_rows_give_no_groups():
    t = _table({"a": [1.0, 0.0]})
    t.loc[1, ["prompt", "split"]] = ["second text", "eval"]
    g = build_groups(t)
    assert (g.loc[0, "prompt"], g.loc[0, "split"]) == ("prompt a", "train")
    empty = build_groups(t.iloc[:0])
    assert len(empty) == 0 and list(empty.columns) == ["prompt_id", "prompt", "split", "n", "response_ids", "responses",
                                                       "scores", "is_harmful", "preferred_id", "dispreferred_ids",
                                                       "score_gap", "n_top_ties"]


def test_each_drawn_negative_names_its_response_and_group_size():
    """negative_id is the response at negative_rank of the ranked group; n_dispreferred its n - 1."""
    groups = build_groups(_table({"a": [3.0, 2.0, 1.0, 0.0], "b": [1.0, 0.0], "c": [5.0, 4.0, 3.0]}))
    for rule in ("hps", "random", "max_min", "max_max", "online"):
        neg = draw_epoch_negatives(groups, rule=rule, schedule=make_gamma_schedule(), n_epochs=3, seed=1,
                                   examples_per_step=1)
        by_id = groups.set_index("prompt_id")
        assert neg["n_dispreferred"].tolist() == [by_id.loc[p, "n"] - 1 for p in neg["prompt_id"]], rule
        if rule != "online":
            assert neg["negative_id"].tolist() == [by_id.loc[p, "response_ids"][r]
                                                   for p, r in zip(neg["prompt_id"], neg["negative_rank"])], rule
    assert [len(idx) for *_, idx in plan_steps(3, 1, 1, seed=0)] == [1, 1, 1]  # one example per step is allowed
