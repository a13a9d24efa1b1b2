"""Raw data in, canonical table out (DESIGN.md section 4)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hps_core.config import DataConfig
from hps_core.data.canonical import COLUMNS, assign_split, table_digest
from hps_core.data.scored_jsonl import DataFormatError, read_scored_jsonl
from hps_core.lineage import file_sha256

__all__ = ["COLUMNS", "DataFormatError", "RawData", "load_canonical", "table_digest"]

GENERATED_FILE = "generated_world.jsonl"


@dataclass(frozen=True)
class RawData:
    """The canonical table and the digests of the raw files it came from."""

    table: pd.DataFrame
    raw_files: dict[str, str]  # path -> sha256 of its bytes


def materialise_source(cfg: DataConfig, seed: int, workdir: Path) -> Path:
    """The raw file the run reads: the generated world is written to disk first, so lineage covers its
    bytes exactly as it covers a user's file."""
    if cfg.source != "generated":
        path = Path(cfg.source).expanduser()
        if not path.is_file():
            raise DataFormatError(
                f"data.source {cfg.source!r} is not a file; give a local .jsonl/.jsonl.gz path or 'generated'"
            )
        return path.resolve()
    from hps_core.data.synthetic import write_world_jsonl

    workdir.mkdir(parents=True, exist_ok=True)
    return write_world_jsonl(
        workdir / GENERATED_FILE, seed=seed, n_prompts=cfg.n_prompts, responses_per_prompt=cfg.responses_per_prompt
    )


def load_canonical(cfg: DataConfig, seed: int, workdir: Path) -> RawData:
    """Read the configured source into the canonical table, with the split assigned by prompt hash."""
    path = materialise_source(cfg, seed, workdir)
    digest = file_sha256(path)
    name = "generated-world" if cfg.source == "generated" else path.name
    table = read_scored_jsonl(path, source_name=f"{name}@sha256:{digest[:12]}")
    table["split"] = assign_split(table["prompt_id"], cfg.eval_fraction, seed).astype("string")
    return RawData(table=table, raw_files={str(path): digest})
