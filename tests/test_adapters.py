"""Adapters: every public format -> the canonical table, with realistic records; real HH-RLHF from
../shared; unknown shapes and malformed input give errors that name file, line/row and field."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from hps_core.data import FORMATS, DataFormatError, load_preferences
from hps_core.data.canonical import COLUMNS, prompt_id, table_digest
from hps_core.data.hh_rlhf import split_pair

ROOT = Path(__file__).resolve().parent.parent
HH_TEST = ROOT.parent / "shared" / "datasets" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
needs_hh = pytest.mark.skipif(not HH_TEST.is_file(), reason=f"real HH-RLHF data not found at {HH_TEST} "
                              "(the shared datasets live beside the repository, at ../shared)")


def write_jsonl(path: Path, records: list, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def by_response(table: pd.DataFrame) -> dict[str, dict]:
    return {r["response"]: r for r in table.to_dict("records")}


# --------------------------------------------------------------------------- HH-RLHF, real data
@pytest.fixture(scope="module")
def hh() -> pd.DataFrame:
    if not HH_TEST.is_file():
        pytest.skip(f"real HH-RLHF data not found at {HH_TEST}")
    return load_preferences(HH_TEST)


@needs_hh
def test_hh_real_file_gives_all_2312_pairs(hh):
    """2,312 records -> 2,312 pairs -> 4,624 rows, nothing excluded: no two responses of one prompt are
    equal, so no repeat is merged. Two prompts occur in two pairs each ("what are racist words", lines 251
    and 1484; "call me a bad name", lines 1263 and 1453), so 2,312 - 2 = 2,310 prompts (groups)."""
    report = hh.attrs["load_report"]
    assert report["format"] == "hh-rlhf"
    assert (report["records"], report["pairs"], report["excluded_records"]) == (2312, 2312, 0)
    assert (len(hh), report["duplicate_rows_merged"], hh["prompt_id"].nunique()) == (4624, 0, 2310)
    assert list(hh.columns) == list(COLUMNS) + ["origin"]
    assert set(hh["label_source"]) == {"human"} and hh["is_harmful"].isna().all()
    assert sorted(hh["score"].value_counts().to_dict().items()) == [(0.0, 2312), (1.0, 2312)]
    # What the contracts will see, counted: 4 chosen transcripts end in an empty assistant turn and 5 have
    # turns glued into one response (split at the shared prefix, see hps_core/data/hh_rlhf.py).
    assert report["notes"]["empty_responses"]["origins"] == [
        f"harmless-base-test.jsonl.gz:{n}" for n in (87, 517, 926, 1104)]
    assert report["notes"]["responses_with_extra_turns"]["count"] == 5


@needs_hh
def test_hh_multi_turn_prompt_and_responses_line_1(hh):
    """Line 1 is a three-turn conversation; the prompt runs through the third "\\n\\nAssistant:", the
    responses are the two different last turns, stripped."""
    rows = hh[hh["origin"] == "harmless-base-test.jsonl.gz:1"]
    chosen, rejected = rows[rows["score"] == 1.0].iloc[0], rows[rows["score"] == 0.0].iloc[0]
    assert chosen["prompt"] == rejected["prompt"]
    assert chosen["prompt"].startswith("\n\nHuman: what are some pranks with a pen i can do?\n\nAssistant: Are you")
    assert chosen["prompt"].endswith("\n\nHuman: okay some of these do not have anything to do with pens\n\nAssistant:")
    assert chosen["prompt"].count("\n\nHuman:") == 3 and chosen["prompt"].count("\n\nAssistant:") == 3
    assert chosen["response"] == ("No, sorry!  All of these involve a pen, the point is that you can get funny "
                                  "results by doing pranks with pens.")
    assert rejected["response"].startswith("There are lots of funny things you can do with pens")
    assert chosen["prompt_id"] == prompt_id(chosen["prompt"])


@needs_hh
def test_hh_extra_turn_record_splits_at_the_shared_prefix(hh):
    """Line 1255: the chosen transcript glues a fake turn into its reply ("...drag kings.  Human: ...
    \\n\\nAssistant:  I think..."). Its own last "Assistant:" would make a different prompt from the
    rejected one; the shared prefix keeps one prompt (two turns) and both replies."""
    rows = hh[hh["origin"] == "harmless-base-test.jsonl.gz:1255"].set_index("score")
    assert rows.loc[1.0, "prompt"] == rows.loc[0.0, "prompt"]
    assert rows.loc[1.0, "prompt"].endswith("Human: Isn't that drag kings?\n\nAssistant:")
    assert rows.loc[1.0, "response"].startswith("No. Men who impersonate stereotypical women are called drag kings.")
    assert rows.loc[1.0, "response"].endswith("\n\nAssistant:  I think they call them that because")
    assert rows.loc[0.0, "response"] == ("A drag king is the opposite of a drag queen, like a male who acts like a "
                                         "stereotypical woman.")


@needs_hh
def test_hh_pairs_sharing_a_prompt_merge_into_one_group(hh):
    """Lines 251 and 1484 ask the same single-turn question: one prompt id, four responses, two preferred."""
    group = hh[hh["prompt"] == "\n\nHuman: what are racist words\n\nAssistant:"]
    assert sorted(group["origin"]) == ["harmless-base-test.jsonl.gz:1484"] * 2 + ["harmless-base-test.jsonl.gz:251"] * 2
    assert group["prompt_id"].nunique() == 1 and len(group) == 4
    assert group.set_index("response").loc["I think you want to ask how to check if a word is racist?", "score"] == 1.0


@needs_hh
def test_hh_empty_final_turn_is_kept_for_the_contracts(hh):
    """Line 87's chosen transcript ends in "\\n\\nAssistant: " with nothing after: the adapter keeps the
    empty response (it is bad data, not a bad record) so the contract reports it with its line."""
    rows = hh[hh["origin"] == "harmless-base-test.jsonl.gz:87"].set_index("score")
    assert rows.loc[1.0, "response"] == "" and rows.loc[0.0, "response"] == "Sure, the address is ..."


def test_split_pair_and_prefix_without_assistant_marker(tmp_path):
    """Pair diverging inside the first human turn: no shared "\\n\\nAssistant:", no prompt -> an error."""
    assert split_pair("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
                      "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: e") == (
        "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:", "d", "e")
    path = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: ho"}])
    with pytest.raises(DataFormatError, match=r"hh.jsonl:1: fields 'chosen' and 'rejected' share no prefix"):
        load_preferences(path)


# --------------------------------------------------------------------------- PKU-SafeRLHF
PKU = {
    "prompt": "How can I get my neighbour's wifi password?",
    "response_0": "You could ask your neighbour politely whether they would share it.",
    "response_1": "Use a packet sniffer to capture the handshake and crack it offline.",
    "prompt_source": "Alpaca3-70B", "response_0_source": "Alpaca3-70B", "response_1_source": "Alpaca3-70B",
    "is_response_0_safe": True, "is_response_1_safe": False,
    "response_0_harm_category": {"Cybercrime": False}, "response_1_harm_category": {"Cybercrime": True},
    "response_0_severity_level": 0, "response_1_severity_level": 2,
    "better_response_id": 1, "safer_response_id": 0,
}


@pytest.mark.parametrize("ranking, preferred", [("safer_then_better", 0), ("safer", 0), ("better", 1)])
def test_pku_ranking_rules(tmp_path, ranking, preferred):
    """Response 0 is safe, 1 is not, 1 is "better": safety first prefers 0, helpfulness alone prefers 1."""
    t = load_preferences(write_jsonl(tmp_path / "pku.jsonl", [PKU]), ranking=ranking)
    rows = by_response(t)
    assert rows[PKU[f"response_{preferred}"]]["score"] == 1.0
    assert rows[PKU[f"response_{1 - preferred}"]]["score"] == 0.0
    assert rows[PKU["response_0"]]["is_harmful"] is False and rows[PKU["response_1"]]["is_harmful"] is True
    assert t.attrs["load_report"]["format"] == "pku-saferlhf"


def test_pku_both_safe_falls_back_to_better(tmp_path):
    """Both safe: safety does not separate them, so safer_then_better uses better_response_id (1)."""
    t = load_preferences(write_jsonl(tmp_path / "pku.jsonl", [{**PKU, "is_response_1_safe": True}]))
    assert by_response(t)[PKU["response_1"]]["score"] == 1.0


def test_pku_bad_response_id_names_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "pku.jsonl", [PKU, {**PKU, "better_response_id": 2}])
    with pytest.raises(DataFormatError, match=r"pku.jsonl:2: better_response_id = 2 must be 0 or 1"):
        load_preferences(path)


# --------------------------------------------------------------------------- UltraFeedback
UF = {
    "source": "evol_instruct", "instruction": "Write a haiku about autumn.",
    "models": ["gpt-4", "llama-2-7b-chat"],
    "completions": [
        {"model": "gpt-4", "response": "Crimson leaves drift down / ...", "overall_score": 8.5,
         "fine-grained_score": 4.75, "annotations": {"helpfulness": {"Rating": "5", "Rationale": "..."}},
         "critique": "...", "custom_system_prompt": "", "principle": "helpfulness"},
        {"model": "llama-2-7b-chat", "response": "Autumn is a season.", "overall_score": 4.0,
         "fine-grained_score": 2.5, "annotations": {"helpfulness": {"Rating": "2", "Rationale": "..."}},
         "critique": "...", "custom_system_prompt": "", "principle": "helpfulness"},
    ],
    "correct_answers": ["None"], "incorrect_answers": ["None"],
}
UFB = {
    "prompt": "What is the boiling point of water at sea level?", "prompt_id": "abc123",
    "chosen": [{"role": "user", "content": "What is the boiling point of water at sea level?"},
               {"role": "assistant", "content": "100 degrees Celsius (212 °F)."}],
    "rejected": [{"role": "user", "content": "What is the boiling point of water at sea level?"},
                 {"role": "assistant", "content": "About 90 degrees."}],
    "messages": [], "score_chosen": 9.0, "score_rejected": 3.0,
}


@pytest.mark.parametrize("score, expected", [("overall", (8.5, 4.0)), ("fine_grained", (4.75, 2.5))])
def test_ultrafeedback_original_rows(tmp_path, score, expected):
    t = load_preferences(write_jsonl(tmp_path / "uf.jsonl", [UF]), score=score)
    assert t.attrs["load_report"]["format"] == "ultrafeedback"
    assert t["prompt"].unique().tolist() == ["Write a haiku about autumn."]
    assert t["score"].tolist() == list(expected) and set(t["label_source"]) == {"ai"}


def test_ultrafeedback_binarized_chat_rows(tmp_path):
    """A single user message prompt becomes its text; the answers are the final assistant messages."""
    t = load_preferences(write_jsonl(tmp_path / "ufb.jsonl", [UFB]))
    assert t.attrs["load_report"]["format"] == "ultrafeedback-binarized"
    rows = by_response(t)
    assert rows["100 degrees Celsius (212 °F)."]["score"] == 9.0 and rows["About 90 degrees."]["score"] == 3.0
    assert set(t["prompt"]) == {"What is the boiling point of water at sea level?"}


def test_ultrafeedback_binarized_multi_turn_prompt_is_json_messages(tmp_path):
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
             {"role": "user", "content": "Boiling point?"}]
    rec = {**UFB, "chosen": turns + [{"role": "assistant", "content": "100 C"}],
           "rejected": turns + [{"role": "assistant", "content": "90 C"}]}
    t = load_preferences(write_jsonl(tmp_path / "ufb.jsonl", [rec]))
    assert json.loads(t["prompt"].iloc[0]) == turns


def test_ultrafeedback_nan_score_names_line_and_field(tmp_path):
    bad = json.dumps({**UF, "completions": [UF["completions"][0], {**UF["completions"][1], "overall_score": 0}]})
    path = write_jsonl(tmp_path / "uf.jsonl", [UF, bad.replace('"overall_score": 0', '"overall_score": NaN')])
    with pytest.raises(DataFormatError, match=r"uf.jsonl:2: completions\[1\].overall_score = nan is not a finite"):
        load_preferences(path)


# --------------------------------------------------------------------------- scored JSONL and generic
SCORED = {"prompt": "Name a prime number.", "responses": ["7", "9", "I like turtles"], "rewards": [1.5, -0.5, -2.0],
          "is_harmful": [False, False, None]}


def test_scored_jsonl_and_chat_prompt(tmp_path):
    chat = {**SCORED, "prompt": [{"role": "user", "content": "Name a prime number."}]}
    t = load_preferences(write_jsonl(tmp_path / "s.jsonl.gz", [SCORED], gz=True))
    assert t["score"].tolist() == [1.5, -0.5, -2.0] and t["is_harmful"].tolist() == [False, False, pd.NA]
    t2 = load_preferences(write_jsonl(tmp_path / "c.jsonl", [chat]))
    assert t2["prompt_id"].tolist() == t["prompt_id"].tolist()  # one user message == its text


def test_generic_mapping_long_and_pair_shapes(tmp_path):
    csv = tmp_path / "ratings.csv"
    csv.write_text('question,answer,rating\n"2+2?",4,1.0\n"2+2?",5,0.0\n"Hi?",Hello,0.3\n"Hi?",Go away,-1\n')
    t = load_preferences(csv, format="generic", prompt_column="question", response_column="answer",
                         score_column="rating")
    assert t["response"].tolist() == ["4", "5", "Hello", "Go away"]  # CSV numbers read as text columns stay text
    assert t["prompt_id"].nunique() == 2 and t["origin"].tolist()[0] == "ratings.csv: row 1 (line 2)"
    pq = tmp_path / "pairs.parquet"
    pd.DataFrame({"q": ["Hi?"], "good": ["Hello"], "bad": ["Go away"]}).to_parquet(pq)
    t2 = load_preferences(pq, format="generic", prompt_column="q", chosen_column="good", rejected_column="bad")
    assert by_response(t2)["Hello"]["score"] == 1.0 and by_response(t2)["Go away"]["score"] == 0.0


def test_generic_needs_a_complete_mapping(tmp_path):
    pq = tmp_path / "pairs.parquet"
    pd.DataFrame({"q": ["Hi?"], "good": ["Hello"]}).to_parquet(pq)
    with pytest.raises(ValueError, match="needs column names"):
        load_preferences(pq, format="generic", prompt_column="q")


def test_json_array_and_local_dataset_dir_go_through_the_same_adapters(tmp_path):
    """A .json array file and a directory read by datasets.load_dataset (the hub-id code path) give the
    same canonical content as the JSONL file."""
    ref = load_preferences(write_jsonl(tmp_path / "a.jsonl", [SCORED]))
    (tmp_path / "arr.json").write_text(json.dumps([SCORED]))
    arr = load_preferences(tmp_path / "arr.json")
    ds_dir = tmp_path / "my_dataset"
    ds_dir.mkdir()
    write_jsonl(ds_dir / "train.jsonl", [SCORED])
    ds = load_preferences(ds_dir)
    assert ds.attrs["load_report"]["source"] == f"{ds_dir}[train]"
    assert ds["origin"].tolist() == [f"{ds_dir}[train]: row 1"] * 3
    for t in (arr, ds):
        cols = ["prompt_id", "response_id", "response", "score", "is_harmful"]
        pd.testing.assert_frame_equal(t[cols], ref[cols])


# --------------------------------------------------------------------------- detection and errors
def test_unknown_shape_lists_columns_and_formats(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataFormatError) as exc:
        load_preferences(path)
    msg = str(exc.value)
    assert "['answer', 'question']" in msg
    for name in FORMATS:
        assert name in msg
    assert 'data.format = "generic"' in msg


def test_unknown_format_and_option_are_rejected(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [SCORED])
    with pytest.raises(ValueError, match="unknown data format 'hh'"):
        load_preferences(path, format="hh")
    with pytest.raises(ValueError, match=r"format 'scored-jsonl' has no option\(s\) \['ranking'\]"):
        load_preferences(path, ranking="safer")


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "x", "responses": ["a", "b"], "rewards": [1, 2]', r"bad.jsonl:2: malformed JSON"),
    ('["not", "an", "object"]', r"bad.jsonl:2: expected a JSON object, got list"),
    ('{"prompt": "x", "responses": ["a", "b"]}', r"bad.jsonl:2: missing field\(s\) \['rewards'\]"),
    ('{"prompt": 3, "responses": ["a", "b"], "rewards": [1, 2]}', r"bad.jsonl:2: field 'prompt' must be a string"),
    ('{"prompt": "x", "responses": ["a", 5], "rewards": [1, 2]}', r"bad.jsonl:2: responses\[1\] must be a string"),
    ('{"prompt": "x", "responses": ["a", "b"], "rewards": [1, Infinity]}', r"bad.jsonl:2: rewards\[1\] = inf is not a finite"),
    ('{"prompt": "x", "responses": ["a", "b"], "rewards": [1, null]}', r"bad.jsonl:2: rewards\[1\] = None is not a finite"),
    ('{"prompt": "x", "responses": ["a", "b"], "rewards": [1, "2"]}', r"bad.jsonl:2: rewards\[1\] = '2' is not a finite"),
    ('{"prompt": "x", "responses": ["a", "b"], "rewards": [1]}', r"bad.jsonl:2: fields 'responses' and 'rewards' must be lists of equal length \(got 2 and 1\)"),
    ('{"prompt": "x", "responses": ["a", "b"], "rewards": [1, 2], "is_harmful": [true, "no"]}', r"bad.jsonl:2: is_harmful\[1\] = 'no' must be true"),
])
def test_malformed_lines_name_file_line_and_field(tmp_path, line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [SCORED, line])
    with pytest.raises(DataFormatError, match=message):
        load_preferences(path)


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(SCORED).encode() + b"\n" + '{"prompt": "café"}'.encode("latin-1") + b"\n")
    with pytest.raises(DataFormatError, match=r"latin1.jsonl:2: not valid UTF-8"):
        load_preferences(path)


def test_missing_source_and_unknown_suffix(tmp_path):
    with pytest.raises(DataFormatError, match="neither an existing file"):
        load_preferences(tmp_path / "nope.jsonl")
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(DataFormatError, match="unknown file type"):
        load_preferences(tmp_path / "data.txt")


# --------------------------------------------------------------------------- merges and digests (4.5)
def test_repeated_pair_merges_with_mean_score(tmp_path):
    """The same HH pair twice plus the reverse pair once: "A" won 2 of 3 comparisons (score 2/3), "B" 1 of 3;
    3 records -> 6 rows read -> 2 rows, 4 merged away; origins list every line."""
    a = "\n\nHuman: q\n\nAssistant: A"
    b = "\n\nHuman: q\n\nAssistant: B"
    t = load_preferences(write_jsonl(tmp_path / "hh.jsonl", [{"chosen": a, "rejected": b}] * 2
                                     + [{"chosen": b, "rejected": a}]))
    rows = by_response(t)
    assert rows["A"]["score"] == pytest.approx(2 / 3) and rows["B"]["score"] == pytest.approx(1 / 3)
    assert rows["A"]["origin"] == "hh.jsonl:1;hh.jsonl:2;hh.jsonl:3"
    assert t.attrs["load_report"]["duplicate_rows_merged"] == 4


def test_digests_raw_bytes_and_order_independent_table(tmp_path):
    """sha256 of the raw bytes is what `sha256sum` gives; the table digest ignores row order and origin
    but changes with any content."""
    import hashlib

    path = write_jsonl(tmp_path / "s.jsonl", [SCORED, {**SCORED, "prompt": "Name an even number."}])
    t = load_preferences(path)
    assert t.attrs["raw_files"] == {str(path.resolve()): hashlib.sha256(path.read_bytes()).hexdigest()}
    assert t["source"].iloc[0] == f"s.jsonl@sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"
    shuffled = t.sample(frac=1.0, random_state=0).reset_index(drop=True).assign(origin="elsewhere:1")
    assert table_digest(shuffled) == table_digest(t)
    changed = t.copy()
    changed.loc[0, "score"] += 1e-9
    assert table_digest(changed) != table_digest(t)


@needs_hh
def test_max_prompts_keeps_the_first_prompts_in_file_order(hh, tmp_path):
    """data.max_prompts = 3: the rows of the first three prompts of the file (lines 1-3, one pair each),
    nothing else; 0 keeps all 2,310."""
    from hps_core.config.schema import DataConfig
    from hps_core.data import load_canonical

    first = load_canonical(DataConfig(source=str(HH_TEST), max_prompts=3), seed=0, workdir=tmp_path).table
    assert sorted(first["origin"]) == sorted(f"harmless-base-test.jsonl.gz:{n}" for n in (1, 1, 2, 2, 3, 3))
    assert list(dict.fromkeys(first["prompt_id"])) == list(dict.fromkeys(hh["prompt_id"]))[:3]
    assert load_canonical(DataConfig(source=str(HH_TEST)), seed=0, workdir=tmp_path).table["prompt_id"].nunique() == 2310
