"""The bad-input catalogue (issue 8.2): every case through a public entry point, with a clear error (what,
where, how to fix) or a documented handling, and nothing registered.

Entry points: the flow's ``validate`` step function (``hps_core.recipes.hps.validate``, with a real MLflow
tracker on a local store) for data, ``PipelineConfig.from_dict`` for configs, ``hps_core.models`` loaders
for models. Cases already tested elsewhere are not repeated here: :data:`CATALOGUE` names the test of each
case (this file's or another's), a test checks that every named test exists, and docs/reliability.md's
bad-input table lists every case.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from data_contracts import ContractViolation
from hps_core.config.building import ConfigError
from hps_core.config.schema import PipelineConfig
from hps_core.data import DataFormatError
from hps_core.data.canonical import assign_split, prompt_id
from hps_core.models.loading import OPT_IN_KEYS, ModelLoadError, load_causal_lm, load_reward_model
from hps_core.tracking.step_context import StepContext
from hps_core.recipes.hps import validate

ROOT = Path(__file__).resolve().parent.parent
N_PROMPTS = 10

# case -> the tests that show its handling (``file::test``, parametrised ids after "[").
CATALOGUE = {
    "malformed JSONL line": ["test_bad_inputs.py::test_bad_data_stops_validate[malformed_jsonl_line]",
                             "test_adapters.py::test_malformed_lines_name_file_line_and_field"],
    "wrong types (data)": ["test_bad_inputs.py::test_bad_data_stops_validate[wrong_type_prompt]",
                           "test_bad_inputs.py::test_bad_data_stops_validate[wrong_type_response]",
                           "test_adapters.py::test_malformed_lines_name_file_line_and_field"],
    "wrong types (config)": ["test_config.py::test_invalid_values_are_rejected_with_the_fix"],
    "NaN / inf / None scores": ["test_bad_inputs.py::test_bad_data_stops_validate[nan_score]",
                                "test_bad_inputs.py::test_bad_data_stops_validate[inf_score]",
                                "test_bad_inputs.py::test_bad_data_stops_validate[null_score]",
                                "test_adapters.py::test_ultrafeedback_nan_score_names_line_and_field",
                                "test_contracts.py::test_bad_fixture_breaks_only_its_expectation"],
    "empty text": ["test_bad_inputs.py::test_bad_data_stops_validate[empty_response]",
                   "test_bad_inputs.py::test_bad_data_stops_validate[blank_prompt]",
                   "test_bad_inputs.py::test_quarantine_removes_and_counts[empty_response]"],
    "non-UTF-8 bytes": ["test_bad_inputs.py::test_bad_data_stops_validate[non_utf8]",
                        "test_adapters.py::test_non_utf8_names_the_line"],
    "single-response groups": ["test_bad_inputs.py::test_bad_data_stops_validate[single_response_group]",
                               "test_bad_inputs.py::test_quarantine_removes_and_counts[single_response_group]",
                               "test_groups.py::test_build_groups_rejects_a_single_response_prompt"],
    "all-tied groups": ["test_bad_inputs.py::test_bad_data_stops_validate[all_tied_group]",
                        "test_bad_inputs.py::test_quarantine_removes_and_counts[all_tied_group]"],
    "duplicate ids": ["test_bad_inputs.py::test_duplicate_records_are_merged_and_counted",
                      "test_contracts.py::test_bad_fixture_breaks_only_its_expectation",
                      "test_adapters.py::test_repeated_pair_merges_with_mean_score"],
    "prompt leakage between splits": ["test_bad_inputs.py::test_same_prompt_text_always_gets_one_id_and_split",
                                      "test_bad_inputs.py::test_bad_data_stops_validate[near_duplicate_prompt_in_both_splits]",
                                      "test_bad_inputs.py::test_quarantine_removes_and_counts[near_duplicate_prompt_in_both_splits]"],
    "responses beyond the length limit": ["test_bad_inputs.py::test_bad_data_stops_validate[response_over_max_chars]",
                                          "test_bad_inputs.py::test_quarantine_removes_and_counts[response_over_max_chars]",
                                          "test_trainer.py::test_truncation_is_counted_and_reported",
                                          "test_reward.py::test_truncation_is_counted"],
    "unknown config keys": ["test_config.py::test_unknown_key_names_key_file_and_suggestion",
                            "test_config.py::test_unknown_section_is_an_error"],
    "unknown method names": ["test_config.py::test_invalid_values_are_rejected_with_the_fix",
                             "test_bad_inputs.py::test_bad_config_is_refused[unknown_data_format]"],
    "conflicting options": ["test_bad_inputs.py::test_bad_config_is_refused[columns_without_generic_format]",
                            "test_bad_inputs.py::test_bad_config_is_refused[reward_opt_in_without_reward_model]",
                            "test_bad_inputs.py::test_bad_config_is_refused[judge_opt_in_without_classifier]",
                            "test_bad_inputs.py::test_bad_data_stops_validate[generic_mapping_both_shapes]",
                            "test_config.py::test_invalid_values_are_rejected_with_the_fix",
                            "test_lineage_gate.py::test_config_rejects_a_bad_gate_and_a_shared_alias"],
    "missing model path": ["test_bad_inputs.py::test_missing_model_names_the_config_key_and_the_fix",
                           "test_models.py::test_missing_path_and_non_model_dir_are_clear_errors"],
    "model source that cannot be had": ["test_model_sources.py::test_hub_id_fails_the_flow_at_start",
                                        "test_model_sources.py::test_hub_id_not_reachable_names_key_id_and_remedies",
                                        "test_model_sources.py::test_missing_sources_fail_at_start_naming_key_value_and_remedy",
                                        "test_model_sources.py::test_converted_dir_refuses_a_missing_file_and_a_non_gguf_file"],
    "checkpoint with only pickle weights": ["test_security.py::test_pickle_only_checkpoint_is_refused_naming_the_opt_in",
                                            "test_security.py::test_base_model_opt_in_is_read_from_the_config_by_sft",
                                            "test_tracking.py::test_pickle_only_dir_refused"],
    "numeric setting out of range": ["test_config_ranges.py::test_a_value_outside_the_range_is_refused_at_parse_time",
                                     "test_config_ranges.py::test_the_message_names_file_key_value_and_range"],
    "truncated or corrupt compressed file": ["test_bad_inputs.py::test_truncated_gzip_names_file_lines_and_byte"],
    "control characters in text": ["test_bad_inputs.py::test_bad_data_stops_validate[control_characters]",
                                   "test_bad_inputs.py::test_quarantine_removes_and_counts[control_characters]"],
    "groups that cannot make a run": ["test_bad_inputs.py::test_groups_that_cannot_make_a_run_stop_build_groups[no_held_out]",
                                      "test_bad_inputs.py::test_groups_that_cannot_make_a_run_stop_build_groups[no_training]",
                                      "test_bad_inputs.py::test_groups_that_cannot_make_a_run_stop_build_groups[under_one_batch]"],
    "nothing registered after a refusal": ["test_validate_flow.py::test_planted_violations_stop_the_flow_at_validate",
                                           "test_bad_inputs.py::test_bad_data_stops_validate"],
}


# --------------------------------------------------------------------------- data through the validate step
def good_records() -> list[dict]:
    """10 prompts x 3 responses with distinct scores: passes every contract."""
    return [{"prompt": f"Question {i}: what is {i} plus {i}?",
             "responses": [f"It is {2 * i}.", f"Maybe {2 * i + 1}, not sure.", f"I do not know about {i}."],
             "rewards": [2.0, 1.0, -1.0]} for i in range(N_PROMPTS)]


def leak_variant(prompt: str) -> str:
    """The same prompt text up to case and whitespace whose prompt id lands in the other split (seed 0)."""
    split = assign_split_of(prompt)
    for k in range(1, 200):
        variant = prompt.upper() if k == 1 else prompt.replace(" ", " " * (k % 7 + 1), k // 7 + 1)
        if assign_split_of(variant) != split:
            return variant
    raise AssertionError("no variant in the other split")  # pragma: no cover


def assign_split_of(prompt: str) -> str:
    import pandas as pd

    return assign_split(pd.Series([prompt_id(prompt)]), PipelineConfig().data.eval_fraction, 0).iloc[0]


def _set(i: int, **fields):
    def change(records):
        records[i].update(fields)
        return records
    return change


def _lines(records) -> list[str]:
    return [json.dumps(r) for r in records]


def _replace_line(i: int, text: str):
    return lambda records: [*(_lines(records)[:i]), text, *(_lines(records)[i + 1:])]


def _leak(records):
    records[3]["prompt"] = leak_variant(records[2]["prompt"])
    return records


LONG = "word " * 40
# case -> (change to the good records (a list of dicts or of raw lines), [data] overrides,
#          error type, fragments its message must hold: what, where (file:line), how to fix)
DATA_CASES = {
    "malformed_jsonl_line": (_replace_line(2, '{"prompt": "x", "responses": ["a", "b"], "rewards": [1, 2]'), {},
                             DataFormatError, ["bad.jsonl:3", "malformed JSON", "fix or remove the line"]),
    "wrong_type_prompt": (_set(2, prompt=42), {}, DataFormatError, ["bad.jsonl:3", "'prompt' must be a string"]),
    "wrong_type_response": (_set(2, responses=["a", ["b"], "c"]), {}, DataFormatError,
                            ["bad.jsonl:3", "responses[1] must be a string"]),
    "nan_score": (_replace_line(2, '{"prompt": "x?", "responses": ["a", "b"], "rewards": [1, NaN]}'), {},
                  DataFormatError, ["bad.jsonl:3", "rewards[1] = nan is not a finite number", "score the record or drop it"]),
    "inf_score": (_replace_line(2, '{"prompt": "x?", "responses": ["a", "b"], "rewards": [-Infinity, 1]}'), {},
                  DataFormatError, ["bad.jsonl:3", "rewards[0] = -inf is not a finite number", "score the record or drop it"]),
    "null_score": (_set(2, rewards=[1.0, None, 0.0]), {}, DataFormatError,
                   ["bad.jsonl:3", "rewards[1] = None is not a finite number", "score the record or drop it"]),
    "non_utf8": (_replace_line(2, None), {}, DataFormatError, ["bad.jsonl:3", "not valid UTF-8", "re-encode the file as UTF-8"]),
    "generic_mapping_both_shapes": (lambda r: r, {"format": "generic", "columns": {
        "prompt": "prompt", "response": "responses", "score": "rewards", "chosen": "responses", "rejected": "responses"}},
        ValueError, ["format 'generic'", "not both", "[data.columns]"]),
    "empty_response": (_set(1, responses=["It is 2.", "", "I do not know about 1."]), {}, ContractViolation,
                       ["expect_column_values_to_match_regex", "| response | 1 | 30 |", "bad.jsonl:2",
                        'on_invalid = "quarantine"']),
    "blank_prompt": (_set(4, prompt="   "), {}, ContractViolation,
                     ["expect_column_values_to_match_regex", "| prompt | 3 | 30 |", "bad.jsonl:5", 'on_invalid = "quarantine"']),
    "single_response_group": (_set(5, responses=["It is 10."], rewards=[2.0]), {}, ContractViolation,
                              ["n_responses", "bad.jsonl:6", 'on_invalid = "quarantine"']),
    "all_tied_group": (_set(6, rewards=[0.5, 0.5, 0.5]), {}, ContractViolation,
                       ["has_preference", "bad.jsonl:7", 'on_invalid = "quarantine"']),
    "near_duplicate_prompt_in_both_splits": (_leak, {}, ContractViolation,
                                             ["prompt_text_splits", "bad.jsonl:3", "bad.jsonl:4", 'on_invalid = "quarantine"']),
    "response_over_max_chars": (_set(8, responses=["It is 16.", LONG, "I do not know about 8."]),
                                {"max_response_chars": 100}, ContractViolation,
                                ["expect_column_value_lengths_to_be_between", "| response | 1 | 30 |", "bad.jsonl:9",
                                 'on_invalid = "quarantine"']),
    "control_characters": (_set(7, responses=["It is 14.", "Maybe\x00 15, not\x1b sure.", "I do not know about 7."]),
                           {}, ContractViolation,
                           ["expect_column_values_to_not_match_regex", "bad.jsonl:8", 'on_invalid = "quarantine"']),
}
# Under data.on_invalid = "quarantine": rows removed (a failing row alone while its group keeps 2 responses;
# a failing group whole).
# case -> (rows read, rows quarantined)
QUARANTINED = {"empty_response": (30, 1), "single_response_group": (28, 1), "all_tied_group": (30, 3),
               "near_duplicate_prompt_in_both_splits": (30, 6), "response_over_max_chars": (30, 1),
               "control_characters": (30, 1)}


def write_case(path: Path, change) -> Path:
    out = change(good_records())
    if out and isinstance(out[0], dict):
        out = _lines(out)
    with path.open("wb") as handle:
        for line in out:
            handle.write(b'{"prompt": "caf\xe9?", "responses": ["a", "b"], "rewards": [1, 0]}' if line is None
                         else line.encode("utf-8"))  # None: a latin-1 line
            handle.write(b"\n")
    return path


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One real MLflow store for the module: nothing in it may ever register a model."""
    return f"sqlite:///{tmp_path_factory.mktemp('bad_inputs_mlflow') / 'mlflow.db'}"


def run_validate(tmp_path: Path, tracking_uri: str, data_file: Path, **data):
    from hps_core.tracking.mlflow_tracker import MlflowTracker

    cfg = PipelineConfig.from_dict({"data": {"source": str(data_file), "format": "scored-jsonl", **data}})
    tracker = MlflowTracker(tracking_uri, experiment_name="bad-inputs")
    parent = tracker.create_parent_run(tmp_path.name)
    return validate(StepContext(cfg, tmp_path / "run", tracker, parent)), tracker, parent


def registered_models(tracking_uri: str) -> list:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri, registry_uri=tracking_uri).search_registered_models()


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_stops_validate(case, tmp_path, tracking_uri):
    """The step raises the named error, whose message says what, where and how to fix; a contract failure
    leaves its report on the FAILED validate run; no model is registered."""
    from mlflow import MlflowClient

    change, data, error, fragments = DATA_CASES[case]
    data_file = write_case(tmp_path / "bad.jsonl", change)
    with pytest.raises(error) as err:
        run_validate(tmp_path, tracking_uri, data_file, **data)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    if error is ContractViolation:
        client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
        parent = client.search_runs([client.get_experiment_by_name("bad-inputs").experiment_id],
                                    f"attributes.run_name = '{tmp_path.name}'")[0]
        [run] = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert run.info.run_name == "validate" and run.info.status == "FAILED"
        assert "contracts/validation_report.md" in {a.path for a in client.list_artifacts(run.info.run_id, "contracts")}
    assert registered_models(tracking_uri) == []


@pytest.mark.parametrize("case", list(QUARANTINED))
def test_quarantine_removes_and_counts(case, tmp_path, tracking_uri):
    """The documented alternative: data.on_invalid = "quarantine" drops the failing rows with their groups,
    counts them, and goes on with the rest."""
    change, data, _, _ = DATA_CASES[case]
    data_file = write_case(tmp_path / "bad.jsonl", change)
    result, _, _ = run_validate(tmp_path, tracking_uri, data_file, on_invalid="quarantine", min_keep_fraction=0.5, **data)
    assert (result["counts"]["rows_read"], result["counts"]["rows_quarantined"]) == QUARANTINED[case]
    assert result["contract"]["quarantined"] and registered_models(tracking_uri) == []


def test_duplicate_records_are_merged_and_counted(tmp_path, tracking_uri):
    """Ids are content hashes, so a repeated (prompt, response) is one row: its score the mean of its
    repeats, every origin kept, the merge counted in the load report. The data then passes."""
    import pandas as pd

    records = good_records()
    repeat = dict(records[0], rewards=[4.0, 1.0, -1.0])  # the same record again, one score different
    data_file = write_case(tmp_path / "dup.jsonl", lambda _: [*records, repeat])
    result, _, _ = run_validate(tmp_path, tracking_uri, data_file)
    table = pd.read_parquet(result["canonical_path"])
    assert len(table) == 30 and table["response_id"].is_unique
    merged = table[table["response"] == "It is 0."].iloc[0]
    assert merged["score"] == 3.0 and merged["origin"] == "dup.jsonl:1;dup.jsonl:11"
    assert "3 repeated (prompt, response) rows merged" in result["report_markdown"]


def test_same_prompt_text_always_gets_one_id_and_split():
    """Leakage by construction is impossible: the prompt id is a hash of the text and the split a hash of
    the id, so the same text under two records is one group in one split (near-identical texts are the
    contract's job, above)."""
    import pandas as pd

    prompts = [r["prompt"] for r in good_records()] * 2
    ids = pd.Series([prompt_id(p) for p in prompts])
    splits = assign_split(ids, 0.5, seed=0)
    assert ids.nunique() == N_PROMPTS and (splits.groupby(ids).nunique() == 1).all()
    assert set(splits) == {"train", "eval"}  # both splits in use, so the check above could fail


# --------------------------------------------------------------------------- configs
CONFIG_CASES = {
    "unknown_data_format": ({"data": {"format": "hh"}}, ["data.format = 'hh'", "valid: auto, hh-rlhf"]),
    "columns_without_generic_format": ({"data": {"columns": {"prompt": "question"}}},
                                       ["[data.columns] is set but data.format = 'auto'", 'data.format = "generic"']),
    "reward_opt_in_without_reward_model": ({"reward_model": {"allow_pickle_weights": True}},
                                           ["reward_model.allow_pickle_weights = true", "reward_model.path names no model",
                                            "model.allow_pickle_weights", "remove it"]),
    "judge_opt_in_without_classifier": ({"evaluate": {"harm_judge_trust_remote_code": True}},
                                        ["evaluate.harm_judge_trust_remote_code = true", "evaluate.harm_judge names no model",
                                         "model.trust_remote_code", "remove it"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_is_refused(case):
    raw, fragments = CONFIG_CASES[case]
    with pytest.raises(ConfigError) as err:
        PipelineConfig.from_dict(raw, source="my.toml")
    message = str(err.value)
    assert message.startswith("my.toml: ")  # where
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"


# --------------------------------------------------------------------------- models
@pytest.mark.parametrize("config_key", list(OPT_IN_KEYS))
def test_missing_model_names_the_config_key_and_the_fix(config_key, tmp_path):
    loader = load_causal_lm if config_key == "model.base" else load_reward_model
    with pytest.raises(ModelLoadError) as err:
        loader("./no/such/model", config_key=config_key)
    assert re.search(rf"model path \./no/such/model \({re.escape(config_key)}\) does not exist; set {re.escape(config_key)} "
                     "to an existing Hugging Face model directory or a hub id", str(err.value)), str(err.value)
    with pytest.raises(ModelLoadError, match=rf"has no config.json.*point {re.escape(config_key)} at the directory"):
        loader(str(tmp_path), config_key=config_key)


# --------------------------------------------------------------------------- the catalogue itself
def test_every_catalogued_test_exists():
    for case, tests in CATALOGUE.items():
        for node in tests:
            file, _, name = node.partition("::")
            module = importlib.import_module(f"tests.{file.removesuffix('.py')}")
            func, _, param = name.partition("[")
            assert callable(getattr(module, func, None)), f"{case}: {node} does not exist"
            if param and file == Path(__file__).name:
                assert param.rstrip("]") in {**DATA_CASES, **CONFIG_CASES, **SPLIT_CASES}, f"{case}: {node} has no such case"


def test_docs_list_every_case():
    table = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    for case in CATALOGUE:
        assert f"| {case} |" in table, f"docs/reliability.md's bad-input table has no row for {case!r}"


def test_truncated_gzip_names_file_lines_and_byte(tmp_path, tracking_uri):
    """A cut-off download: the error names the file, how many lines could be read, the byte where the
    compressed data breaks, and the remedy (not gzip's bare "Compressed file ended before ...")."""
    import gzip

    whole = gzip.compress(("\n".join(_lines(good_records())) + "\n").encode("utf-8"))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(DataFormatError) as err:
        run_validate(tmp_path, tracking_uri, path)
    message = str(err.value)
    assert str(path) in message and "truncated or corrupt" in message and "download or copy the file again" in message
    assert re.search(r"breaks after \d+ complete line\(s\), at compressed byte \d+ of \d+", message), message


SPLIT_CASES = {  # [data] / [hps] overrides -> fragments of the refusal
    "no_held_out": ({"data": {"eval_fraction": 0.0001}}, ["no held-out groups", "raise data.eval_fraction"]),
    "no_training": ({"data": {"eval_fraction": 0.9999}}, ["no training groups", "lower the fractions"]),
    "under_one_batch": ({"data": {"eval_fraction": 0.3}, "hps": {"batch_size": 16}},
                        ["fewer training groups than one preference batch", "hps.batch_size = 16", "lower hps.batch_size"]),
}


@pytest.mark.parametrize("case", list(SPLIT_CASES))
def test_groups_that_cannot_make_a_run_stop_build_groups(case, tmp_path, tracking_uri):
    """10 prompts whose split leaves nothing to train on, nothing to evaluate, or less than one batch: the
    flow stops in build_groups (before train_sft and train_reward_model start), naming the fix."""
    from hps_core.recipes.hps import build_groups
    from hps_core.sampling.groups import SplitError

    overrides, fragments = SPLIT_CASES[case]
    path = write_case(tmp_path / "ok.jsonl", lambda r: r)
    cfg = PipelineConfig.from_dict({"data": {"source": str(path), "format": "scored-jsonl", **overrides.get("data", {})},
                                    **{k: v for k, v in overrides.items() if k != "data"}})
    ctx = StepContext(cfg, tmp_path / "run")
    validation = validate(ctx)
    with pytest.raises(SplitError) as err:
        build_groups(ctx, validation["canonical"])
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)
    assert not (tmp_path / "run" / "groups").exists()  # nothing handed on
