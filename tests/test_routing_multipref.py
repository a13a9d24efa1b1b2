"""The MultiPref-style adapter, its data contract, the generated default world and the routing config."""

import json

import pandas as pd
import pytest

from data_contracts import ContractViolation, require_valid, validate_pairwise
from hps_core.config.building import ConfigError
from hps_core.data.records import DataFormatError
from hps_core.routing.config import RoutingConfig, budget_count, load_routing_config
from hps_core.routing.multipref import (
    AI_ERROR_SAFETY,
    generate_multipref,
    majority,
    normalise_label,
    read_pairs,
    write_generated,
)


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def record(**kw):
    r = {"id": "x1", "prompt": "How?", "response_a": "Like this.", "response_b": "No.",
         "human_preferences": ["a", "a", "b"], "ai_preference": "b", "domain": "home"}
    r.update(kw)
    return r


def test_labels_multipref_strings_majority_and_ties():
    assert normalise_label("A-is-slightly-better") == "a" and normalise_label(" Tie ") == "tie"
    assert normalise_label("B-is-clearly-better") == "b" and normalise_label("maybe") == "maybe"
    assert majority(["a", "a", "b"]) == ("a", pytest.approx(2 / 3))
    assert majority(["a", "b", "tie"]) == ("tie", pytest.approx(1 / 3))
    assert majority(["a", "huh"])[0] == "huh"  # an unknown vote surfaces for the contract


def test_adapter_reads_every_label_shape(tmp_path):
    path = write(tmp_path / "p.jsonl", [
        record(),
        record(id="x2", human_preferences=[{"overall_pref": "B-is-clearly-better"}, {"overall_pref": "Tie"}],
               ai_preference="A-is-slightly-better", domain=None, is_harmful=[False, True]),
        {k: v for k, v in record(human_preferences="b").items() if k != "id"},
    ])
    table = read_pairs(path).table
    assert table["human_label"].tolist() == ["a", "b", "b"]  # b vs a tie vote: tie votes count for neither side
    assert table["human_agreement"].tolist() == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert table["n_human_labels"].tolist() == [3, 2, 1]
    assert table["ai_label"].tolist() == ["b", "a", "b"]
    assert table["is_harmful_b"].tolist()[1] is True and pd.isna(table["is_harmful_a"][0])
    assert table["tag_domain"][0] == "home" and pd.isna(table["tag_domain"][1])
    assert len(table["instance_id"][2]) == 16  # no id field: a content hash
    assert table["origin"].tolist() == ["p.jsonl:1", "p.jsonl:2", "p.jsonl:3"]
    assert validate_pairwise(table).success


def test_unreadable_records_name_file_line_and_field(tmp_path):
    with pytest.raises(DataFormatError, match=r"p.jsonl:2: missing field\(s\) \['ai_preference'\]"):
        read_pairs(write(tmp_path / "p.jsonl", [record(), {k: v for k, v in record().items() if k != "ai_preference"}]))
    with pytest.raises(DataFormatError, match=r"p.jsonl:1: field 'response_b' must be a string"):
        read_pairs(write(tmp_path / "p.jsonl", [record(response_b=["x"])]))
    with pytest.raises(DataFormatError, match=r"p.jsonl:1: field 'ai_preference' must hold one AI label"):
        read_pairs(write(tmp_path / "p.jsonl", [record(ai_preference=["a", "b"])]))
    with pytest.raises(DataFormatError, match=r"human_preferences\[0\] is an annotation without 'overall_pref'"):
        read_pairs(write(tmp_path / "p.jsonl", [record(human_preferences=[{"pref": "a"}])]))


def test_contract_refuses_bad_pairs_with_a_report_naming_the_rows(tmp_path):
    path = write(tmp_path / "p.jsonl", [
        record(), record(id="x2", ai_preference="maybe"), record(id="x3", response_b="like  THIS."),
        record(id="x4", response_a="   "), record(id="x1"), record(id="x6", human_preferences=[]),
    ])
    report = validate_pairwise(read_pairs(path).table)
    failed = {(o.expectation, o.column): o.unexpected_count for o in report.failures}
    assert failed == {
        ("expect_column_values_to_be_in_set", "ai_label"): 1,
        ("expect_column_values_to_be_in_set", "responses_identical"): 1,  # same text up to case and spaces
        ("expect_column_values_to_match_regex", "response_a"): 1,
        ("expect_column_values_to_be_unique", "instance_id"): 2,
        ("expect_column_values_to_be_in_set", "human_label"): 1,  # no votes: empty label
        ("expect_column_values_to_be_between", "n_human_labels"): 1,
    }
    with pytest.raises(ContractViolation) as err:
        require_valid(report)
    assert "p.jsonl:2" in str(err.value) and "maybe" in str(err.value) and "pairwise_labels" in str(err.value)


def test_gold_contract_wants_a_or_b(tmp_path):
    path = write(tmp_path / "g.jsonl", [{"id": "g1", "prompt": "p", "response_a": "x", "response_b": "y",
                                         "gold_preference": "tie"}])
    report = validate_pairwise(read_pairs(path, gold=True).table, gold=True)
    assert [(o.column, o.unexpected_count) for o in report.failures] == [("gold_label", 1)]


def test_generated_world_is_deterministic_disjoint_and_has_the_planted_structure(tmp_path):
    a = write_generated(tmp_path / "a", seed=3, n_instances=400, n_gold=100)
    b = write_generated(tmp_path / "b", seed=3, n_instances=400, n_gold=100)
    assert all(a[k].read_bytes() == b[k].read_bytes() for k in a)
    pool, gold, truth = generate_multipref(3, 400, 100)
    assert len(pool) == len(truth) == 400 and len(gold) == 100
    assert not {r["prompt"] for r in pool} & {r["prompt"] for r in gold}
    t = read_pairs(a["pool"]).table
    assert validate_pairwise(t).success and validate_pairwise(read_pairs(a["gold"], gold=True).table, gold=True).success
    t["gold"] = [r["gold_preference"] for r in truth]
    ai_ok = (t["ai_label"] == t["gold"]).groupby(t["tag_safety_concern"]).mean()
    human_ok = (t["human_label"] == t["gold"]).groupby(t["tag_complexity"]).mean()
    # The AI judge fails on moderate safety concerns (polite harmful compliance), humans on complex prompts.
    assert ai_ok["moderate"] < ai_ok["none"] - 0.3 and AI_ERROR_SAFETY["moderate"] > 0.5
    assert human_ok["high"] < human_ok["low"] - 0.15


def test_routing_config_defaults_and_errors(tmp_path):
    cfg = load_routing_config()
    assert cfg.route.rule == "best_predicted" and cfg.output.ppm_name == "hyper-ppm"
    assert budget_count(0.3, 1000) == 300 and budget_count(50, 40) == 40
    with pytest.raises(ConfigError, match="unknown config key 'ppm.n_mix'.*did you mean 'ppm.n_mixes'"):
        RoutingConfig.from_dict({"ppm": {"n_mix": 3}})
    for raw, fragment in [({"route": {"rule": "best"}}, "route.rule"), ({"route": {"budget": 1.5}}, "route.budget"),
                          ({"data": {"source": "x.jsonl"}}, "data.gold_source is required"),
                          ({"features": {"stats": "length"}}, "features.stats"), ({"ppm": {"alphas": "a"}}, "ppm.alphas"),
                          ({"probe": {"ties": "skip"}}, "probe.ties"), ({"route": {"sweep": "0.5,2"}}, "route.sweep")]:
        with pytest.raises(ConfigError, match=fragment):
            RoutingConfig.from_dict(raw)
