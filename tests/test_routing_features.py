"""HyPER features: text statistics binned into thirds (hand-computed quantiles), descriptive tags, tagger."""

import numpy as np
import pandas as pd
import pytest

from hps_core.routing import features as F


def pairs(rows):
    return pd.DataFrame(rows, columns=["prompt", "response_a", "response_b", "tag_domain", "tag_safety_concern"])


def test_tertile_edges_and_bins_match_hand_computed_quantiles():
    """values 1..9: numpy's linear quantile at 1/3 sits at position 8/3 = 2.667 of the sorted values,
    i.e. 3 + 0.667 * (4 - 3) = 3.667; at 2/3 at position 5.333, i.e. 6.333. So 1,2,3 are low, 4,5,6 mid,
    7,8,9 high."""
    values = np.array([9, 1, 5, 3, 7, 2, 8, 4, 6], float)
    q1, q2 = F.tertile_edges(values)
    assert q1 == pytest.approx(11 / 3) and q2 == pytest.approx(19 / 3)
    binned = dict(zip(values.astype(int), F.bin_thirds(values, (q1, q2))))
    assert [binned[v] for v in range(1, 10)] == ["low"] * 3 + ["mid"] * 3 + ["high"] * 3
    # A value equal to an edge falls in the lower bin.
    assert list(F.bin_thirds(np.array([2.0, 5.0]), (2.0, 4.0))) == ["low", "high"]


def test_text_statistics_by_hand():
    """a = 'Sure, do x then y' (5 words), b = 'Do y' (2 words): longer 5, shorter 2, diff 3; word sets
    {sure, do, x, then, y} and {do, y} share 2 of 5 -> overlap 0.4. The prompt has 4 words."""
    t = pairs([("How do I x?", "Sure, do x then y", "Do y", None, None)])
    stats = F.text_stats(t, list(F.STATS)).iloc[0]
    assert stats.to_dict() == {"prompt_len": 4, "response_len_longer": 5, "response_len_shorter": 2,
                               "response_len_diff": 3, "overlap": pytest.approx(0.4)}


def test_tag_space_and_matrix_one_bin_per_stat_and_descriptive_values():
    rows = [(f"p {'w ' * i}", "a " * (i + 1), "b " * (2 * i + 1), ["home", "writing"][i % 2],
             ["none", "moderate", None][i % 3]) for i in range(9)]
    table = pairs(rows)
    space = F.fit_tag_space(table, ["prompt_len", "response_len_diff"])
    assert space.names[:6] == ["prompt_len=low", "prompt_len=mid", "prompt_len=high",
                               "response_len_diff=low", "response_len_diff=mid", "response_len_diff=high"]
    assert space.names[6:] == ["domain=home", "domain=writing", "safety_concern=moderate", "safety_concern=none"]
    tags = F.tag_matrix(table, space)
    assert list(tags.columns) == space.names and tags.dtypes.eq(bool).all()
    for stat in ("prompt_len", "response_len_diff"):  # each instance is in exactly one third
        assert (tags[[f"{stat}={b}" for b in F.BINS]].sum(axis=1) == 1).all()
    assert tags["prompt_len=low"].sum() == tags["prompt_len=mid"].sum() == tags["prompt_len=high"].sum() == 3
    assert tags["domain=home"].tolist() == [i % 2 == 0 for i in range(9)]
    # A missing value carries no tag of its field.
    missing = table["tag_safety_concern"].isna()
    assert not tags.loc[missing, ["safety_concern=moderate", "safety_concern=none"]].any().any()
    # The target is tagged on the source's scale; a value the source never had gives no tag.
    target = pairs([("p", "a " * 50, "b", "garden", "none")])
    row = F.tag_matrix(target, space).iloc[0]
    assert row["prompt_len=low"] and row["response_len_diff=high"] and not row[["domain=home", "domain=writing"]].any()
    assert F.TagSpace.from_dict(space.to_dict()) == space


def length_tagger(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"has_question": table["prompt"].str.contains("?", regex=False).map({True: "yes", False: "no"})})


def test_tagger_adds_tags_and_a_bad_spec_names_itself():
    table = pairs([("What?", "a", "b", None, None), ("Do it.", "a", "b c", None, None)])
    tagger = F.load_tagger("tests.test_routing_features:length_tagger")
    space = F.fit_tag_space(table, ["prompt_len"], descriptive=True, tagger=tagger)
    assert space.names[-2:] == ["has_question=no", "has_question=yes"]  # the data's empty fields add nothing
    tags = F.tag_matrix(table, space, tagger=tagger)
    assert tags["has_question=yes"].tolist() == [True, False]
    with pytest.raises(ValueError, match="features.tagger = 'nope:missing'"):
        F.load_tagger("nope:missing")
