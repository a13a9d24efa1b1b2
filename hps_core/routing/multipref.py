"""Pairwise data with a human and an AI label per instance (MultiPref-style), and the generated default.

**Adapter.** One raw record per instance (field names from ``[data.fields]``)::

    {"id": "mp-00001", "prompt": "...", "response_a": "...", "response_b": "...",
     "human_preferences": ["a", "a", "tie"], "ai_preference": "b",
     "domain": "home", "safety_concern": "none", "complexity": "high", "is_harmful": [false, false]}

Labels are ``a`` / ``b`` / ``tie``, or MultiPref's ``A-is-clearly-better`` ... ``Tie`` ... ``B-is-slightly-better``,
or a list of ``{"overall_pref": ...}`` annotations. The human label is the majority of the human votes (a
tie when a and b have as many). Gold files hold ``gold_preference`` (``a`` / ``b``) instead. A record that
cannot be read (a missing field, a list where a string belongs) is an error naming file, line and field;
one that can be read but is bad data (an empty response, an unknown label, identical responses) goes into
the table for the data contract (``data_contracts/suites/pairwise_labels.json``) to report.

**Generated default** (:func:`generate_multipref`). Prompts and responses are the HPS flow's generated world
(:mod:`hps_core.data.synthetic`: same templates, safety notion and harmful responses), one pair per prompt,
so the routed output is a natural input of ``flows/hps_flow.py``. The gold preference is the world's oracle
score. Two label sources with structured errors, so routing has something real to find:

- the **AI judge** is right 93 % of the time, except on unsafe prompts whose pair sets a harmful response
  against a safe one: there it prefers polite harmful compliance (moderate safety concern: wrong 85 %;
  high concern, where harm is blatant: 25 %) -- the reward-model failure HPS is about;
- **humans** (3 annotators, majority vote) are right ~98 % of the time on short, simple pairs and noisy on
  complex prompts and long responses (per-annotator error up to 45 %, more ties).

The gold labels of the annotated pool are held back in their own file, read only by the report.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hps_core.data.records import DataFormatError, bool_field, read_source, require, text_field
from hps_core.routing.config import PairFieldsConfig, split_list

LABELS = ("a", "b", "tie")
_ALIASES = {
    "a": "a", "b": "b", "tie": "tie", "response_a": "a", "response_b": "b",
    "a-is-clearly-better": "a", "a-is-slightly-better": "a", "b-is-clearly-better": "b",
    "b-is-slightly-better": "b",
}
PAIR_COLUMNS = ("instance_id", "prompt", "response_a", "response_b", "human_label", "n_human_labels",
                "human_agreement", "ai_label", "is_harmful_a", "is_harmful_b", "origin")
GOLD_COLUMNS = ("instance_id", "prompt", "response_a", "response_b", "gold_label", "origin")
TAG_PREFIX = "tag_"  # descriptive tag fields become columns tag_<field>

GENERATED_POOL, GENERATED_GOLD, GENERATED_POOL_TRUTH = "multipref_pool.jsonl", "gold_pairs.jsonl", "pool_gold_labels.jsonl"


# --------------------------------------------------------------------------- adapter
@dataclass(frozen=True)
class PairData:
    table: pd.DataFrame
    raw_files: dict[str, str]  # path -> sha256


def normalise_label(value: Any) -> str:
    """``a`` / ``b`` / ``tie`` for a known label; otherwise the lower-cased text (the contract rejects it)."""
    text = str(value).strip().lower()
    return _ALIASES.get(text, text)


def _votes(value: Any, field_name: str, where: str) -> list[str]:
    if isinstance(value, str):
        return [normalise_label(value)]
    if isinstance(value, list):
        votes = []
        for i, v in enumerate(value):
            if isinstance(v, dict):
                if "overall_pref" not in v:
                    raise DataFormatError(f"{where}: {field_name}[{i}] is an annotation without 'overall_pref'")
                v = v["overall_pref"]
            if not isinstance(v, str):
                raise DataFormatError(f"{where}: {field_name}[{i}] must be a label string, got {type(v).__name__}")
            votes.append(normalise_label(v))
        return votes
    raise DataFormatError(f"{where}: field {field_name!r} must be a label or a list of labels, got {type(value).__name__}")


def majority(votes: list[str]) -> tuple[str, float]:
    """(label, share of votes that agree with it). Tie votes count for neither side: the side with more
    votes wins, a and b with as many votes is a tie. An unknown vote is the label itself (so the contract
    names it); no votes is ``""``."""
    if not votes:
        return "", 0.0
    unknown = [v for v in votes if v not in LABELS]
    if unknown:
        return unknown[0], 0.0
    count = Counter(votes)
    label = "a" if count["a"] > count["b"] else "b" if count["b"] > count["a"] else "tie"
    return label, count[label] / len(votes)


def _instance_id(record: dict[str, Any], fields: PairFieldsConfig, prompt: str, a: str, b: str) -> str:
    if fields.id in record and record[fields.id] is not None:
        return str(record[fields.id])
    return hashlib.sha256(f"{prompt}\0{a}\0{b}".encode()).hexdigest()[:16]


def _harm_flags(record: dict[str, Any], fields: PairFieldsConfig, where: str) -> tuple[bool | None, bool | None]:
    flags = record.get(fields.is_harmful)
    if flags is None:
        return None, None
    if not isinstance(flags, list) or len(flags) != 2:
        raise DataFormatError(f"{where}: field {fields.is_harmful!r} must be [bool, bool] (response a, response b)")
    return bool_field(flags[0], f"{fields.is_harmful}[0]", where), bool_field(flags[1], f"{fields.is_harmful}[1]", where)


def _tags(record: dict[str, Any], fields: PairFieldsConfig, where: str) -> dict[str, Any]:
    out = {}
    for name in split_list(fields.tags):
        value = record.get(name)
        if value is not None and not isinstance(value, (str, int, bool)):
            raise DataFormatError(f"{where}: tag field {name!r} must be a string, got {type(value).__name__}")
        out[TAG_PREFIX + name] = None if value is None else str(value)
    return out


def read_pairs(source: str | Path, fields: PairFieldsConfig = PairFieldsConfig(), *, gold: bool = False) -> PairData:
    """Read a pairwise file (any local format :mod:`hps_core.data.records` reads) into one flat row per
    instance: :data:`PAIR_COLUMNS` + ``tag_<field>`` columns, or :data:`GOLD_COLUMNS` with ``gold=True``."""
    src = read_source(source)
    rows = []
    for where, record in src.records:
        require(record, where, fields.prompt, fields.response_a, fields.response_b)
        prompt = text_field(record, fields.prompt, where)
        a, b = text_field(record, fields.response_a, where), text_field(record, fields.response_b, where)
        row = {"instance_id": _instance_id(record, fields, prompt, a, b), "prompt": prompt,
               "response_a": a, "response_b": b, "origin": where}
        if gold:
            require(record, where, fields.gold)
            label, _ = majority(_votes(record[fields.gold], fields.gold, where))
            row["gold_label"] = label
        else:
            require(record, where, fields.human, fields.ai)
            votes = _votes(record[fields.human], fields.human, where)
            row["human_label"], row["human_agreement"] = majority(votes)
            row["n_human_labels"] = len(votes)
            ai = _votes(record[fields.ai], fields.ai, where)
            if len(ai) != 1:
                raise DataFormatError(f"{where}: field {fields.ai!r} must hold one AI label, got {len(ai)}")
            row["ai_label"] = ai[0]
            row["is_harmful_a"], row["is_harmful_b"] = _harm_flags(record, fields, where)
            row.update(_tags(record, fields, where))
        rows.append(row)
    columns = list(GOLD_COLUMNS if gold else PAIR_COLUMNS)
    table = pd.DataFrame(rows)
    table = table[columns + [c for c in table.columns if c not in columns]]
    dtypes = {c: "string" for c in table.columns if c not in ("n_human_labels", "human_agreement", "is_harmful_a", "is_harmful_b")}
    if not gold:
        dtypes.update({"n_human_labels": "int64", "human_agreement": "float64", "is_harmful_a": "boolean",
                       "is_harmful_b": "boolean"})
    return PairData(table=table.astype(dtypes).reset_index(drop=True), raw_files=dict(src.raw_files))


def tag_fields_present(table: pd.DataFrame) -> list[str]:
    """Descriptive tag columns the data actually fills (a field no record has is left out)."""
    return [c for c in table.columns if c.startswith(TAG_PREFIX) and table[c].notna().any()]


# --------------------------------------------------------------------------- generated default
# Label-noise model of the generated world (see the module docstring). Rates are per vote.
HUMAN_ANNOTATORS = 3
HUMAN_ERROR = 0.08  # a short, simple pair
HUMAN_ERROR_COMPLEX = 0.22  # added on a complex prompt
HUMAN_ERROR_LONG = 0.15  # added when both responses are long
HUMAN_ERROR_MAX = 0.45
HUMAN_TIE, HUMAN_TIE_HARD = 0.04, 0.12
LONG_WORDS = 12  # the shorter response has at least this many words
AI_ERROR, AI_TIE = 0.07, 0.02
AI_ERROR_SAFETY = {"moderate": 0.85, "high": 0.25}  # polite harmful compliance against a safe response
AI_ERROR_SAFETY_BLUNT = 0.3  # a blunt harmful response against a safe one, any concern
FORCED_SAFETY_PAIR = 0.5  # share of unsafe prompts whose pair is (hard harmful, safe)
MIN_GAP = 0.25  # oracle-score gap of a pair: closer responses are the same tier (no gold preference)

DOMAINS = {  # coarse domains across safe and unsafe topics, so that domain is not the safety tag
    "coding": "technical", "study": "technical", "password": "technical",
    "writing": "writing", "fake_id": "writing",
    "cooking": "home", "gardening": "home", "pet_poison": "home", "break_in": "home",
    "travel": "outdoors", "fitness": "outdoors", "money": "outdoors", "shoplifting": "outdoors", "violence": "outdoors",
}
SAFETY_CONCERN = {"password": "moderate", "fake_id": "moderate", "shoplifting": "moderate",
                  "violence": "high", "pet_poison": "high", "break_in": "high"}


def complexity(prompt: str) -> str:
    """Complexity tag of a generated prompt, from its frame and qualifier."""
    if "step by step" in prompt or prompt.startswith("Please explain"):
        return "high"
    if " quickly" in prompt or " today" in prompt:
        return "low"
    return "medium"


def human_error_rate(prompt_complexity: str, shorter_words: int) -> float:
    p = HUMAN_ERROR + (HUMAN_ERROR_COMPLEX if prompt_complexity == "high" else 0.0)
    p += HUMAN_ERROR_LONG if shorter_words >= LONG_WORDS else 0.0
    return min(p, HUMAN_ERROR_MAX)


def _vote(rng: random.Random, gold: str, p_wrong: float, p_tie: float) -> str:
    u = rng.random()
    if u < p_tie:
        return "tie"
    return ("b" if gold == "a" else "a") if u < p_tie + p_wrong else gold


def _pick_pair(rng: random.Random, record: dict) -> tuple[int, int]:
    rewards, harmful = record["rewards"], record["is_harmful"]
    idx = range(len(rewards))
    if record["category"] == "unsafe" and rng.random() < FORCED_SAFETY_PAIR:
        hard = [i for i in idx if harmful[i] and rewards[i] > 4.0]
        safe = [i for i in idx if not harmful[i] and rewards[i] > 3.2]
        if hard and safe:
            return rng.choice(hard), rng.choice(safe)
    while True:
        i, j = rng.sample(list(idx), 2)
        if abs(rewards[i] - rewards[j]) >= MIN_GAP:
            return i, j


def _instance(rng: random.Random, record: dict, number: int, prefix: str) -> tuple[dict, str, bool]:
    """One pairwise record (no labels yet), its gold label, and whether its harmful response (if any)
    is polite compliance (a "hard" harmful response: the world scores it close to the best)."""
    i, j = _pick_pair(rng, record)
    if rng.random() < 0.5:
        i, j = j, i
    resp, rewards, harmful = record["responses"], record["rewards"], record["is_harmful"]
    topic = record["topic"]
    out = {"id": f"{prefix}-{number:05d}", "prompt": record["prompt"], "response_a": resp[i], "response_b": resp[j],
           "domain": DOMAINS[topic], "safety_concern": SAFETY_CONCERN.get(topic, "none"),
           "complexity": complexity(record["prompt"]), "is_harmful": [harmful[i], harmful[j]]}
    polite = any(harmful[k] and rewards[k] > 4.0 for k in (i, j))
    return out, ("a" if rewards[i] > rewards[j] else "b"), polite


def _labels(rng: random.Random, inst: dict, gold: str, polite_harm: bool) -> None:
    shorter = min(len(inst["response_a"].split()), len(inst["response_b"].split()))
    p_human = human_error_rate(inst["complexity"], shorter)
    p_tie = HUMAN_TIE_HARD if p_human > HUMAN_ERROR else HUMAN_TIE
    inst["human_preferences"] = [_vote(rng, gold, p_human, p_tie) for _ in range(HUMAN_ANNOTATORS)]
    p_ai = AI_ERROR
    harm_a, harm_b = inst["is_harmful"]
    if harm_a != harm_b:  # a harmful response against a safe one
        p_ai = AI_ERROR_SAFETY.get(inst["safety_concern"], AI_ERROR) if polite_harm else AI_ERROR_SAFETY_BLUNT
    inst["ai_preference"] = _vote(rng, gold, p_ai, AI_TIE)


def generate_multipref(seed: int = 0, n_instances: int = 1200, n_gold: int = 600) -> tuple[list[dict], list[dict], list[dict]]:
    """(annotated pool, gold pairs, the pool's held-back gold labels), deterministic in ``seed``; pool and
    gold pairs come from distinct prompts of the HPS flow's generated world."""
    from hps_core.data.synthetic import generate_world, max_prompts

    if n_instances + n_gold > max_prompts():
        raise ValueError(f"n_instances + n_gold = {n_instances + n_gold} exceeds the {max_prompts()} distinct "
                         "prompts the generated world has; lower data.n_instances or data.n_gold")
    world = generate_world(seed, n_instances + n_gold, 8)
    rng = random.Random(f"multipref:{seed}")
    pool, truth, gold = [], [], []
    for k, record in enumerate(world):
        if k < n_instances:
            inst, label, polite = _instance(rng, record, k, "mp")
            _labels(rng, inst, label, polite)
            pool.append(inst)
            truth.append({"id": inst["id"], "gold_preference": label})
        else:
            inst, label, _ = _instance(rng, record, k - n_instances, "gold")
            gold.append({**inst, "gold_preference": label})
    return pool, gold, truth


def write_generated(workdir: str | Path, seed: int = 0, n_instances: int = 1200, n_gold: int = 600) -> dict[str, Path]:
    """Write the generated pool, gold pairs and held-back pool labels as JSONL (atomic, byte-stable)."""
    from hps_core.data.synthetic import world_to_jsonl

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    pool, gold, truth = generate_multipref(seed, n_instances, n_gold)
    paths = {"pool": workdir / GENERATED_POOL, "gold": workdir / GENERATED_GOLD, "pool_truth": workdir / GENERATED_POOL_TRUTH}
    for key, records in (("pool", pool), ("gold", gold), ("pool_truth", truth)):
        atomic_write(paths[key], world_to_jsonl(records))
    return paths


def atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
