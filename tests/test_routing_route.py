"""Routing rules on toy PPMs whose answer is known by hand, and the routed output hps_flow reads."""

import json
import tomllib

import numpy as np
import pandas as pd
import pytest

from hps_core.routing.ppm import QuadraticPPM
from hps_core.routing.route import (
    Routing,
    best_predicted,
    choose,
    routed_records,
    route_by_gain,
    toml_text,
    write_routed,
)


def toy_ppm(linear, quad=None, n_instances=0):
    t = len(linear)
    return QuadraticPPM(["A", "B"][:t], np.zeros(t), np.ones(t), 0.0, np.array(linear, float),
                        np.zeros((t, t)) if quad is None else np.array(quad, float), n_instances=n_instances)


def tags_ab():
    """Instances 0-2 carry A, 3-5 carry B, 6-7 carry nothing."""
    tags = np.zeros((8, 2), bool)
    tags[0:3, 0] = True
    tags[3:6, 1] = True
    return tags


def test_gain_rule_routes_only_positive_gains_up_to_the_budget():
    """f(c) = c_A - c_B: gains are +1 for A carriers, -1 for B carriers, 0 for the rest. Budget 5 gives
    humans the 3 A carriers only (no other gain is positive); budget 2 gives 2 of them."""
    ppm = toy_ppm([1.0, -1.0])
    np.testing.assert_allclose(ppm.gains(tags_ab()), [1, 1, 1, -1, -1, -1, 0, 0])
    r = route_by_gain(ppm, tags_ab(), budget=5)
    assert np.flatnonzero(r.mask).tolist() == [0, 1, 2] and r.predicted == pytest.approx(3.0)
    assert route_by_gain(ppm, tags_ab(), budget=2).mask[:3].sum() == 2


def test_best_predicted_finds_the_hand_derived_optimum():
    """Linear f = c_A - c_B at budget 3: the best mix is exactly the A carriers (f = 3).
    Quadratic f = c_A - 0.5 c_A^2 at budget 2: f(0) = 0, f(1) = 0.5, f(2) = 0, so the best mix holds
    exactly one A carrier (and one untagged instance or B carrier)."""
    linear = best_predicted(toy_ppm([1.0, -1.0]), tags_ab(), budget=3, n_candidates=200, seed=0)
    assert np.flatnonzero(linear.mask).tolist() == [0, 1, 2] and linear.predicted == pytest.approx(3.0)
    quad = best_predicted(toy_ppm([1.0, 0.0], [[-0.5, 0], [0, 0]]), tags_ab(), budget=2, n_candidates=200, seed=0)
    assert quad.mask.sum() == 2 and quad.mask[:3].sum() == 1 and quad.predicted == pytest.approx(0.5)
    assert quad.candidates_predicted.max() == pytest.approx(0.5)


def test_count_scale_puts_a_larger_target_on_the_pools_scale():
    """A PPM fitted on a pool of 4 instances, applied to a target of 8: counts are halved, so the gain
    rule's 3 A carriers predict 1.5, not 3."""
    r = route_by_gain(toy_ppm([1.0, -1.0], n_instances=4), tags_ab(), budget=3)
    assert r.predicted == pytest.approx(1.5)


def test_choose_keeps_the_higher_predicted_mix_unless_the_gain_rule_is_asked_for():
    a, b = np.array([True, False]), np.array([False, True])
    simulated, gain = Routing(a, 0.8, "best_predicted", np.array([0.8])), Routing(b, 0.9, "gain", np.array([0.9]))
    assert choose("best_predicted", simulated, gain).mask is b
    assert choose("best_predicted", Routing(a, 0.95, "best_predicted", np.array([0.95])), gain).mask is a
    assert choose("gain", Routing(a, 0.99, "best_predicted", np.array([0.99])), gain).mask is b


def pair_table():
    return pd.DataFrame({
        "instance_id": ["i0", "i1", "i2", "i3"], "prompt": ["p0", "p1", "p2", "p3"],
        "response_a": ["a0", "a1", "a2", "a3"], "response_b": ["b0", "b1", "b2", "b3"],
        "human_label": ["a", "b", "tie", "a"], "ai_label": ["b", "tie", "a", "b"],
        "is_harmful_a": pd.array([False, True, None, False], dtype="boolean"),
        "is_harmful_b": pd.array([True, False, None, False], dtype="boolean"),
    })


def test_routed_records_label_sources_orientation_and_ties():
    """Humans on i0 (a) and i2 (tie: dropped); AI on i1 (tie: dropped) and i3 (b)."""
    records, counts = routed_records(pair_table(), np.array([True, False, True, False]))
    assert counts == {"human": 1, "ai": 1, "ties_dropped": 2}
    assert records[0] == {"instance_id": "i0", "prompt": "p0", "responses": ["a0", "b0"], "rewards": [1.0, 0.0],
                          "label_source": "human", "is_harmful": [False, True]}
    assert records[1]["responses"] == ["b3", "a3"] and records[1]["label_source"] == "ai"


def test_written_routing_reads_into_hps_with_label_source_and_lineage(tmp_path):
    from hps_core.config.loading import load_config
    from hps_core.data import load_preferences
    from hps_core.common.digests import file_sha256
    from hps_core.registry.lineage import upstream_lineage

    base = tmp_path / "base.toml"
    base.write_text('[data]\nsource = "x"\neval_fraction = 0.25\n[sft]\nepochs = 1\n[model.tiny]\nhidden_size = 64\n')
    lineage = {"routing_run": "RoutingFlow/7", "tags": {"routing_run": "RoutingFlow/7", "ppm_version": "models:/hyper-ppm/3"}}
    out = write_routed(tmp_path / "routed", pair_table(), np.array([True, False, True, False]), lineage, str(base))
    table = load_preferences(out["routed_path"])
    assert len(table) == 4 and sorted(table["label_source"].unique()) == ["ai", "human"]
    assert table.groupby("label_source")["prompt_id"].nunique().to_dict() == {"ai": 1, "human": 1}
    assert set(table.loc[table["score"] == 1.0, "response"]) == {"a0", "b3"}
    sidecar = json.loads(open(out["sidecar_path"]).read())
    assert sidecar["sha256"] == file_sha256(out["routed_path"]) == out["sha256"]
    assert sidecar["label_sources"] == {"human": 1, "ai": 1} and sidecar["ties_dropped"] == 2
    assert upstream_lineage({out["routed_path"]: out["sha256"]}) == {
        "upstream.routing_run": "RoutingFlow/7", "upstream.ppm_version": "models:/hyper-ppm/3"}
    assert upstream_lineage({out["routed_path"]: "0" * 64}) == {"upstream.stale": "routed.jsonl"}
    cfg = load_config(out["hps_config_path"])  # the written hps config is a valid one
    assert cfg.data.source == out["routed_path"] and cfg.data.format == "scored-jsonl"
    assert cfg.data.eval_fraction == 0.25 and cfg.sft.epochs == 1 and cfg.model.tiny.hidden_size == 64


def test_toml_text_round_trips_nested_tables_and_arrays_of_tables():
    doc = {"data": {"source": 'a "quoted" path', "n": 3, "f": 0.5, "flag": True},
           "model": {"base": "tiny", "tiny": {"hidden_size": 64}},
           "evaluate": {"max_prompts": 4, "extra_sets": [{"name": "x", "path": "p.jsonl"}, {"name": "y", "path": "q"}]}}
    assert tomllib.loads(toml_text(doc)) == doc


def test_scored_jsonl_reads_a_per_record_label_source(tmp_path):
    from hps_core.data import DataFormatError, load_preferences

    path = tmp_path / "s.jsonl"
    path.write_text('{"prompt": "p", "responses": ["x", "y"], "rewards": [1, 0], "label_source": "human"}\n'
                    '{"prompt": "q", "responses": ["x", "y"], "rewards": [1, 0]}\n')
    assert load_preferences(path)["label_source"].tolist() == ["human", "human", "rm", "rm"]
    path.write_text('{"prompt": "p", "responses": ["x", "y"], "rewards": [1, 0], "label_source": 3}\n')
    with pytest.raises(DataFormatError, match=r"s.jsonl:1: field 'label_source' must be a string"):
        load_preferences(path)


def test_steps_route_a_separate_target_on_the_pools_scale(tmp_path):
    """The steps without Metaflow or MLflow (NullTracker): a PPM fitted on a 120-pair pool routes a
    200-pair target file; the report scores the target's mixes and has no held-back labels for it."""
    from hps_core.routing.config import RoutingConfig
    from hps_core.routing.multipref import write_generated
    from hps_core.recipes.routing import fit, load_ppm, report, route, simulate, validate
    from hps_core.tracking.step_context import StepContext

    pool = write_generated(tmp_path / "pool", seed=0, n_instances=120, n_gold=60)
    target = write_generated(tmp_path / "target", seed=1, n_instances=200, n_gold=20)
    cfg = RoutingConfig.from_dict({
        "data": {"source": str(pool["pool"]), "gold_source": str(pool["gold"]), "target_source": str(target["pool"])},
        "ppm": {"n_mixes": 12, "cv_folds": 3}, "route": {"n_candidates": 30, "n_random_baselines": 2, "sweep": ""}})
    ctx = StepContext(cfg, tmp_path / "run")
    validated = validate(ctx)
    assert validated["counts"]["pairs"] == 120 and validated["counts"]["target_pairs"] == 200
    fitted = fit(ctx, validated, simulate(ctx, validated))
    assert load_ppm(ctx, fitted)[0].n_instances == 120  # target counts are rescaled by 120 / 200
    routed = route(ctx, validated, fitted, "RoutingFlow/test")
    counts = routed["counts"]
    assert routed["budget"] == 100 and counts["human"] + counts["ai"] + counts["ties_dropped"] == 200
    result = report(ctx, validated, {}, fitted, routed)
    assert {"routing/acc_all_human", "routing/acc_all_ai", "routing/acc_random", "routing/acc_hyper"} <= set(result["metrics"])
    assert not any(k.startswith("routing/label_acc") for k in result["metrics"])  # no held-back gold for a target file
