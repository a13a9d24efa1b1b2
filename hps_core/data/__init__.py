"""Raw data in, canonical table out (DESIGN.md section 4)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hps_core.config import DataConfig
from hps_core.data.canonical import COLUMNS, assign_split, table_digest
from hps_core.data.loader import FORMATS, load, load_preferences
from hps_core.data.records import DataFormatError

__all__ = ["COLUMNS", "DataFormatError", "FORMATS", "RawData", "load_canonical", "load_preferences", "table_digest"]

GENERATED_FILE = "generated_world.jsonl"


@dataclass(frozen=True)
class RawData:
    """The canonical table and the digests of the raw files it came from."""

    table: pd.DataFrame
    raw_files: dict[str, str]  # path -> sha256 of its bytes
    load_report: dict | None = None  # what the adapter read, merged and noticed (hps_core.data.loader)


def materialise_source(cfg: DataConfig, seed: int, workdir: Path) -> str:
    """The source the run reads: the generated world is written to disk first, so lineage covers its
    bytes exactly as it covers a user's file."""
    if cfg.source != "generated":
        return cfg.source
    from hps_core.data.synthetic import write_world_jsonl

    workdir.mkdir(parents=True, exist_ok=True)
    return str(write_world_jsonl(
        workdir / GENERATED_FILE, seed=seed, n_prompts=cfg.n_prompts, responses_per_prompt=cfg.responses_per_prompt
    ))


def adapter_options(cfg: DataConfig) -> dict:
    """Every format's options from the config (load() uses those of the format it reads)."""
    c = cfg.columns
    return {"ranking": cfg.pku_ranking, "score": cfg.ultrafeedback_score, "hf_split": cfg.hf_split,
            "hf_config": cfg.hf_config, "prompt_column": c.prompt, "response_column": c.response,
            "score_column": c.score, "chosen_column": c.chosen, "rejected_column": c.rejected,
            "score_chosen_column": c.score_chosen, "score_rejected_column": c.score_rejected,
            "is_harmful_column": c.is_harmful, "label_source": c.label_source if cfg.format == "generic" else ""}


def first_prompts(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """The rows of the first ``n`` prompts in the order the source lists them (``data.max_prompts``)."""
    keep = list(dict.fromkeys(table["prompt_id"]))[:n]
    return table[table["prompt_id"].isin(keep)].reset_index(drop=True)


def load_canonical(cfg: DataConfig, seed: int, workdir: Path) -> RawData:
    """Read the configured source into the canonical table, with the split assigned by prompt hash."""
    source = materialise_source(cfg, seed, workdir)
    fmt = "scored-jsonl" if cfg.source == "generated" else cfg.format
    loaded = load(source, fmt, adapter_options(cfg), ignore_unused=True)
    table = first_prompts(loaded.table, cfg.max_prompts) if cfg.max_prompts else loaded.table
    table["split"] = assign_split(table["prompt_id"], cfg.eval_fraction, seed, cfg.reward_fraction).astype("string")
    return RawData(table=table, raw_files=loaded.raw_files, load_report=loaded.report)
