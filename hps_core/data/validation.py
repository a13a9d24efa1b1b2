"""The validate step's reporting: what goes to MLflow and to the Metaflow card (issue 4.3).

Kept here so that ``hps_core.recipes.hps.validate`` stays a few lines: read, enforce, log, hand on.
The tracker is passed in (``hps_core.tracking`` is the only MLflow importer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from hps_core.config.schema import DataConfig


def contract_bounds(cfg: DataConfig) -> dict[str, Any]:
    """The contract parameters the config sets (data_contracts.validate_canonical's keywords)."""
    return {"min_prompt_chars": cfg.min_prompt_chars, "max_prompt_chars": cfg.max_prompt_chars,
            "min_response_chars": cfg.min_response_chars, "max_response_chars": cfg.max_response_chars,
            "duplicate_rate_max": cfg.duplicate_rate_max}


def write_and_log(tracker: Any, run_id: str, out_dir: Path, report: Any, counts: dict[str, float],
                  load_report: dict[str, Any] | None, quarantined: pd.DataFrame | None = None) -> dict[str, str]:
    """Write the validation result (JSON), the GX Data Docs page (HTML), the readable report (Markdown),
    the quarantined rows (parquet, when any) under ``out_dir``, log them and the counts to ``run_id``.
    Returns the written paths by name."""
    from data_contracts import render_data_docs

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"validation_result": out_dir / "validation_result.json", "data_docs": out_dir / "data_docs.html",
             "report": out_dir / "validation_report.md", "load_report": out_dir / "load_report.json"}
    paths["validation_result"].write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    paths["data_docs"].write_text(render_data_docs(report), encoding="utf-8")
    paths["report"].write_text(card_markdown(report, counts, load_report), encoding="utf-8")
    paths["load_report"].write_text(json.dumps(load_report or {}, indent=2, default=str))
    if quarantined is not None and len(quarantined):
        paths["quarantine"] = out_dir / "quarantine.parquet"
        quarantined.to_parquet(paths["quarantine"], index=False)
    for path in paths.values():
        tracker.log_artifact(run_id, str(path), "contracts")
    tracker.log_metrics(run_id, {f"data/{k}": float(v) for k, v in counts.items()})
    return {k: str(v) for k, v in paths.items()}


def card_markdown(report: Any, counts: dict[str, float], load_report: dict[str, Any] | None) -> str:
    """Counts first (what was read, kept, quarantined), then the contract table."""
    quarantined = int(counts.get("rows_quarantined", 0))
    state = ("passed" if report.success else
             f"failed; {quarantined} rows quarantined, the rest passed" if quarantined else "FAILED")
    lines = [f"# Data contracts {state}", "", "| count | value |", "|---|---|"]
    lines += [f"| {k} | {int(v)} |" for k, v in counts.items()]
    if load_report:
        lines += ["", f"Read {load_report.get('records')} records ({load_report.get('format')}) from "
                  f"`{load_report.get('source')}`; {load_report.get('duplicate_rows_merged', 0)} repeated "
                  "(prompt, response) rows merged."]
        for name, note in (load_report.get("notes") or {}).items():
            lines.append(f"- {name}: {note.get('count')} (e.g. {', '.join(note.get('origins', [])[:3])})")
    return "\n".join(lines + ["", report.to_markdown()])
