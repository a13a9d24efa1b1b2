"""The lineage record each registered version carries (DESIGN.md section 6).

The record (``lineage.json``, logged with the run behind each model version) holds what tags cannot:
every raw file's full path and sha256 (tags are length-limited), the contract statistics and the paths of
the intermediate tables. The walk over it lives in :mod:`hps_core.registry.lineage_walk`. Run as::

    hps lineage models:/hps-policy@champion [--json] [--verify] [--tracking-uri URI]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


RECORD_SCHEMA = "hps-lineage/1"
RECORD_FILE = "lineage.json"


def lineage_record(tags: dict[str, str], *, validation: dict[str, Any] | None = None,
                   groups: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The lineage record of one model version: the flow's lineage tags, the raw files (path, sha256,
    size), the canonical table, the contract result and the groups, plus ``extra`` (method, parent
    version, MLflow parent run). Missing parts are recorded as None, never guessed."""
    validation, groups = validation or {}, groups or {}
    raw_files = []
    for path, digest in sorted((validation.get("raw_files") or {}).items()):
        size = Path(path).stat().st_size if Path(path).is_file() else None
        raw_files.append({"path": str(path), "sha256": digest, "bytes": size})
    contract = validation.get("contract") or {}
    return {
        "schema": RECORD_SCHEMA,
        "metaflow_pathspec": tags.get("metaflow.pathspec"),
        "git_commit": tags.get("git_commit"),
        "config_digest": tags.get("config_digest"),
        "raw_files": raw_files,
        "canonical": {"sha256": validation.get("canonical_digest", tags.get("canonical_digest")),
                      "path": validation.get("canonical_path"),
                      "rows": _int_or_none((validation.get("counts") or {}).get("rows"))},
        "contract": {"suites": contract.get("suites"), "result": tags.get("contract_result"),
                     "success": contract.get("success"), "statistics": contract.get("statistics")},
        "groups": {"digest": groups.get("groups_digest", tags.get("groups_digest")),
                   "path": groups.get("groups_path"), "negatives_path": groups.get("negatives_path")},
        "base_model": tags.get("base_model"),
        "reward_model": tags.get("reward_model"),
        "model_files": model_files(tags),
        **extra,
    }


MODEL_TAGS = ("base_model", "reward_model", "harm_judge", "generator")  # keys whose file sources are raw inputs


def model_files(tags: dict[str, str]) -> list[dict[str, Any]]:
    """The model files a run read as raw inputs (GGUF sources: hps_core.models.sources), with their sha256:
    like the data's raw files, ``--verify`` re-hashes them."""
    from hps_core.models.gguf import gguf_path

    files = []
    for key in MODEL_TAGS:
        digest, source = tags.get(f"{key}_sha256"), tags.get(key)
        if digest and source:
            path = gguf_path(source)
            # "role", not "key": a field named like a secret (key, token, ...) is masked when logged
            files.append({"role": key, "path": str(path), "sha256": digest,
                          "bytes": path.stat().st_size if path.is_file() else None})
    return files


SIDECAR_SUFFIX = ".lineage.json"  # <raw file>.lineage.json: what produced a raw file (the routing flow writes one)


def upstream_lineage(raw_files: dict[str, str]) -> dict[str, str]:
    """Lineage tags of the raw files' producers, prefixed ``upstream.``: for a raw file with a
    ``<file>.lineage.json`` sidecar, the sidecar's ``tags`` (e.g. ``routing_run``, ``ppm_version``) when
    its recorded ``sha256`` is the file's; ``upstream.stale`` names a file whose sidecar describes other
    bytes (the file changed after its producer wrote it). Files without a sidecar add nothing."""
    found: dict[str, list[str]] = {}
    for path, digest in sorted(raw_files.items()):
        sidecar = Path(f"{path}{SIDECAR_SUFFIX}")
        if not sidecar.is_file():
            continue
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found.setdefault("stale", []).append(Path(path).name)
            continue
        if record.get("sha256") != digest:
            found.setdefault("stale", []).append(Path(path).name)
            continue
        for key, value in (record.get("tags") or {}).items():
            found.setdefault(str(key), []).append(str(value))
    return {f"upstream.{k}": ";".join(v) for k, v in found.items()}


def _int_or_none(x: Any) -> int | None:
    return None if x is None else int(x)
