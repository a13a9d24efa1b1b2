"""Routing: choose which instances of a target dataset get the human label, and write the routed data.

Two rules over a fitted PPM (:mod:`hps_core.routing.ppm`):

- ``gain`` (HyPER's per-instance rule, ``scripts/sample_best_subset.py``): the predicted gain of moving each
  instance alone from the AI label to the human label, ``f(x_i) - f(0)``; the instances with the largest
  positive gains get humans, at most the budget's number (fewer when fewer gains are positive);
- ``best_predicted`` (HyPER's simulation): draw ``n_candidates`` distinct mixes with exactly the budget's
  number of human labels (:func:`hps_core.routing.candidates.candidates_at_budget`), add the gain rule's
  mix as one more candidate, and keep the one the PPM scores highest (:func:`choose`). Maximising over
  hundreds of tag-driven fills favours the PPM's over-estimates at extreme count vectors; the gain rule's
  mix, built from the PPM's local slope at all-AI, is the candidate such extremes are weighed against.

A target of another size than the PPM's training pool is scored with its counts rescaled to the pool's
size (``count_scale``), since the PPM saw counts of mixes drawn from the pool.

The routed dataset is scored JSONL (:mod:`hps_core.data.scored_jsonl`, which ``flows/hps_flow.py`` reads):
one record per instance, ``responses = [chosen, rejected]`` with rewards ``[1.0, 0.0]`` and the per-record
``label_source`` (``human`` | ``ai``). A tie has no chosen response, so tied instances are left out
(counted in the lineage sidecar). Next to it: ``<file>.lineage.json`` (the routing run, the PPM version,
the inputs' digests) and an hps config that reads the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hps_core.common.digests import file_sha256
from hps_core.routing.candidates import candidates_at_budget, tag_counts
from hps_core.routing.multipref import atomic_write
from hps_core.routing.ppm import QuadraticPPM

SIDECAR_SUFFIX = ".lineage.json"  # hps_core.registry.lineage.upstream_lineage reads it back
SIDECAR_SCHEMA = "hps-routing-lineage/1"


@dataclass(frozen=True)
class Routing:
    mask: np.ndarray  # True: human label
    predicted: float  # PPM score of the chosen mix
    rule: str
    candidates_predicted: np.ndarray  # every simulated candidate's predicted score (best_predicted only)


def count_scale(ppm: QuadraticPPM, n_target: int) -> float:
    return ppm.n_instances / n_target if ppm.n_instances and n_target else 1.0


def best_predicted(ppm: QuadraticPPM, tags: np.ndarray, budget: int, n_candidates: int, *,
                   random_share: float = 0.25, seed: int = 0) -> Routing:
    masks, _ = candidates_at_budget(tags, budget, n_candidates, random_share, seed)
    predicted = ppm.predict(tag_counts(masks, tags) * count_scale(ppm, len(tags)))
    best = int(np.argmax(predicted))
    return Routing(masks[best], float(predicted[best]), "best_predicted", predicted)


def choose(rule: str, simulated: Routing, gain: Routing) -> Routing:
    """The routed mix: ``gain`` -> the gain rule's; ``best_predicted`` -> the higher predicted of the best
    simulated candidate and the gain rule's mix."""
    if rule == "gain" or gain.predicted > simulated.predicted:
        return Routing(gain.mask, gain.predicted, rule, simulated.candidates_predicted)
    return Routing(simulated.mask, simulated.predicted, rule, simulated.candidates_predicted)


def route_by_gain(ppm: QuadraticPPM, tags: np.ndarray, budget: int) -> Routing:
    s = count_scale(ppm, len(tags))
    gains = ppm.gains(np.asarray(tags, float) * s)
    order = np.argsort(-gains, kind="stable")
    chosen = order[:budget][gains[order[:budget]] > 0]
    mask = np.zeros(len(tags), bool)
    mask[chosen] = True
    predicted = float(ppm.predict(tag_counts(mask, tags) * s)[0])
    return Routing(mask, predicted, "gain", np.array([predicted]))


# --------------------------------------------------------------------------- output
def routed_records(pairs: pd.DataFrame, mask: np.ndarray) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Scored-JSONL records of the routed labels, and counts (human, ai, ties dropped)."""
    records, counts = [], {"human": 0, "ai": 0, "ties_dropped": 0}
    for row, human in zip(pairs.itertuples(index=False), mask):
        source = "human" if human else "ai"
        label = row.human_label if human else row.ai_label
        if label == "tie":
            counts["ties_dropped"] += 1
            continue
        chosen, rejected = (row.response_a, row.response_b) if label == "a" else (row.response_b, row.response_a)
        record = {"instance_id": row.instance_id, "prompt": row.prompt, "responses": [chosen, rejected],
                  "rewards": [1.0, 0.0], "label_source": source}
        harm = (row.is_harmful_a, row.is_harmful_b)
        if not any(pd.isna(h) for h in harm):
            record["is_harmful"] = [bool(harm[0]), bool(harm[1])] if label == "a" else [bool(harm[1]), bool(harm[0])]
        records.append(record)
        counts[source] += 1
    return records, counts


def toml_text(tables: dict[str, Any], prefix: str = "") -> str:
    """A TOML document from nested dicts of scalars, lists of scalars and lists of tables (what the
    project's configs use); strings as JSON strings, which TOML reads as basic strings."""
    scalars = {k: v for k, v in tables.items() if not isinstance(v, dict) and not _table_list(v)}
    lines = [f"{k} = {json.dumps(v)}" for k, v in scalars.items()]
    for key, value in tables.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            body = toml_text(value, f"{name}.")
            lines += ["", f"[{name}]", body] if body.strip() or not value else []
        elif _table_list(value):
            for item in value:
                lines += ["", f"[[{name}]]", toml_text(item, f"{name}.")]
    return "\n".join(line for line in lines if line is not None).strip("\n")


def _table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def hps_config(routed_path: Path, base_config: str, pathspec: str) -> str:
    """An hps config reading the routed file: the base config's sections with ``[data]`` replaced."""
    import tomllib

    from hps_core.routing.config import resolve_base_config

    base_path = resolve_base_config(base_config)
    base = tomllib.loads(base_path.read_text(encoding="utf-8")) if base_path else {}
    data = {k: v for k, v in base.get("data", {}).items() if k in ("eval_fraction", "on_invalid", "min_keep_fraction")}
    body = {"data": {"source": str(routed_path.resolve()), "format": "scored-jsonl", **data},
            **{k: v for k, v in base.items() if k != "data"}}
    head = (f"# Written by the routing flow ({pathspec}): HPS on the routed labels"
            f"{' (sections from ' + base_config + ')' if base_config else ''}.\n"
            f"# Run as:\n#   python flows/hps_flow.py --config config {routed_path.parent / 'hps_config.toml'} run\n\n")
    return head + toml_text(body) + "\n"


def write_routed(out_dir: Path, pairs: pd.DataFrame, mask: np.ndarray, lineage: dict[str, Any],
                 base_config: str = "") -> dict[str, Any]:
    """``routed.jsonl`` (scored JSONL), its ``routed.jsonl.lineage.json`` sidecar and ``hps_config.toml``
    under ``out_dir``. Returns the paths, counts and the routed file's sha256."""
    from hps_core.data.synthetic import world_to_jsonl

    out_dir.mkdir(parents=True, exist_ok=True)
    routed = out_dir / "routed.jsonl"
    records, counts = routed_records(pairs, mask)
    atomic_write(routed, world_to_jsonl(records))
    digest = file_sha256(routed)
    sidecar = Path(f"{routed}{SIDECAR_SUFFIX}")
    record = {"schema": SIDECAR_SCHEMA, "routed_file": str(routed.resolve()), "sha256": digest,
              "label_sources": {"human": counts["human"], "ai": counts["ai"]}, "ties_dropped": counts["ties_dropped"],
              **lineage}
    atomic_write(sidecar, json.dumps(record, indent=2, sort_keys=True) + "\n")
    config = out_dir / "hps_config.toml"
    atomic_write(config, hps_config(routed, base_config, str(lineage.get("routing_run", "?"))))
    return {"routed_path": str(routed), "sidecar_path": str(sidecar), "hps_config_path": str(config),
            "sha256": digest, "counts": counts}
