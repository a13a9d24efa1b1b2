"""Candidate mixes: budgets respected, no duplicates, tag-driven fills pick the carriers of a tag."""

import numpy as np

from hps_core.routing.candidates import (
    candidates_at_budget,
    random_mix,
    tag_counts,
    tag_fill_mix,
    training_mixes,
)


def two_tags(n=10):
    """Tag A on instances 0-2, tag B on 3-5, no tag on 6-9."""
    tags = np.zeros((n, 2), bool)
    tags[0:3, 0] = True
    tags[3:6, 1] = True
    return tags


def test_random_and_tag_fill_mixes_spend_exactly_the_budget():
    rng = np.random.default_rng(0)
    tags = two_tags()
    for budget in (0, 1, 4, 7, 10):
        assert random_mix(10, budget, rng).sum() == budget
        assert tag_fill_mix(tags, budget, rng).sum() == budget


def test_tag_fill_takes_a_tags_carriers_first():
    """Budget 4: whichever tag comes first gives all 3 of its carriers, the 4th is a carrier of the other
    tag; no untagged instance is used while carriers remain. Budget 2: both come from one tag."""
    tags = two_tags()
    a, b = set(range(3)), set(range(3, 6))
    for seed in range(20):
        rng = np.random.default_rng(seed)
        chosen = set(np.flatnonzero(tag_fill_mix(tags, 4, rng)))
        assert chosen <= a | b and (a <= chosen or b <= chosen)
        two = set(np.flatnonzero(tag_fill_mix(tags, 2, rng)))
        assert two <= a or two <= b
    # Carriers run out (6 < 8): every carrier, and the rest at random.
    chosen = tag_fill_mix(tags, 8, np.random.default_rng(1))
    assert chosen[:6].all() and chosen.sum() == 8


def test_tag_counts_by_hand():
    tags = two_tags()
    mask = np.zeros(10, bool)
    mask[[0, 1, 4, 9]] = True  # two A carriers, one B carrier, one untagged
    assert tag_counts(mask, tags).tolist() == [[2, 1]]
    assert tag_counts(np.array([mask, ~mask]), tags).tolist() == [[2, 1], [1, 2]]


def test_training_mixes_distinct_with_anchors_and_distinct_budgets():
    rng = np.random.default_rng(3)
    tags = rng.random((60, 5)) < 0.3
    masks, kinds = training_mixes(tags, n_mixes=30, random_share=0.25, seed=0)
    keys = {m.tobytes() for m in masks}
    assert len(keys) == len(masks) == 32  # 30 mixes + all-AI + all-human, none repeated
    assert kinds[:2] == ["anchor", "anchor"] and masks[0].sum() == 0 and masks[1].all()
    budgets = masks[2:].sum(axis=1)
    assert len(set(budgets)) == 30 and budgets.min() >= 1 and budgets.max() <= 59  # drawn without replacement
    assert kinds.count("random") == 8 and kinds.count("tag_fill") == 22
    again, _ = training_mixes(tags, n_mixes=30, random_share=0.25, seed=0)
    assert np.array_equal(masks, again)  # seeded


def test_candidates_at_budget_are_distinct_and_exact():
    rng = np.random.default_rng(5)
    tags = rng.random((40, 6)) < 0.25
    masks, kinds = candidates_at_budget(tags, budget=12, n_candidates=50, random_share=0.2, seed=0)
    assert len(masks) == 50 and (masks.sum(axis=1) == 12).all()
    assert len({m.tobytes() for m in masks}) == 50
    assert set(kinds) == {"random", "tag_fill"}
    # Only one mix of budget 0 exists: fewer candidates, no endless loop.
    none, _ = candidates_at_budget(tags, budget=0, n_candidates=5, random_share=0.2, seed=0)
    assert len(none) == 1 and not none[0].any()
