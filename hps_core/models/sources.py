"""Where each configured model comes from, checked at ``start`` and recorded in lineage.

A model key (``model.base``, ``reward_model.path``, a classifier ``evaluate.harm_judge``) names one of:
- ``tiny``: the local default builder (``model.base`` only);
- a GGUF file (``gguf:<path>`` or ``*.gguf``): converted once into a cached Hugging Face directory
  (:mod:`hps_core.models.gguf`); its sha256 is a raw input of the run, like the data's;
- a local Hugging Face directory (holding ``config.json``);
- a hub id (``owner/name``): the user wants that model, so it is fetched (with transformers' progress
  bars, into ``$HF_HOME``) unless ``HF_HUB_OFFLINE=1``, where only the local hub cache is used.

:func:`check_model_sources` runs in ``start``: a missing file, a directory that is no model, or a hub id
that can be neither reached nor found in the cache fails the run before any data step or training, with
the key, the value and the remedies. It returns the lineage tags of the sources (kind and, for files,
the sha256).
"""

from __future__ import annotations

import os
from pathlib import Path

from hps_core.models.gguf import is_gguf_source, require_gguf_file


class ModelSourceError(ValueError):
    """A configured model that cannot be had; the message names the key, the value and the remedies."""


REMEDIES = ("remedies: check the network (and HF_TOKEN for a gated model), or point the key at a local Hugging "
            "Face directory (holding config.json) or a GGUF file (gguf:<path>); unset HF_HUB_OFFLINE to allow "
            "downloads")


def source_kind(spec: str) -> str:
    """``tiny``, ``gguf``, ``dir`` or ``hub`` (see the module docstring); "" for an empty value."""
    if not spec:
        return ""
    if spec == "tiny":
        return "tiny"
    if is_gguf_source(spec):
        return "gguf"
    if Path(spec).expanduser().exists() or spec.startswith((".", "/", "~")):
        return "dir"
    return "hub"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def check_hub_model(key: str, repo_id: str) -> None:
    """The hub model ``repo_id`` can be had: its config is fetched (or found in the cache when offline)."""
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(repo_id, "config.json", local_files_only=hub_offline())
    except Exception as err:  # no network, unknown repo, gated, not cached while offline, ...
        where = "found in the local hub cache (HF_HUB_OFFLINE=1)" if hub_offline() else "reached on the hub"
        raise ModelSourceError(f"{key} = {repo_id!r} is a hub id that cannot be {where}: "
                               f"{type(err).__name__}: {str(err).splitlines()[0][:300]}; {REMEDIES}") from err


def check_model_source(key: str, spec: str, *, tag: str) -> dict[str, str]:
    """Check one model source; return its lineage tags (``<tag>_source_kind``, for GGUF ``<tag>_sha256``)."""
    from hps_core.common.digests import file_sha256

    kind = source_kind(spec)
    if kind in ("", "tiny"):
        return {}
    tags = {f"{tag}_source_kind": kind}
    if kind == "gguf":
        try:
            tags[f"{tag}_sha256"] = file_sha256(require_gguf_file(spec, key))
        except Exception as err:
            raise ModelSourceError(str(err)) from err
    elif kind == "dir":
        path = Path(spec).expanduser()
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"{key} = {spec!r}: " + (
                "no such directory" if not path.exists() else "the directory holds no config.json, so it is not a "
                "Hugging Face model directory") + f"; point {key} at a model directory, a GGUF file or a hub id")
    else:
        check_hub_model(key, spec)
    return tags


def check_model_sources(cfg) -> dict[str, str]:
    """Every model the config names (``hps_core.config.PipelineConfig``), checked; their lineage tags."""
    tags = check_model_source("model.base", cfg.model.base, tag="base_model")
    tags |= check_model_source("reward_model.path", cfg.reward_model.path, tag="reward_model")
    judge = cfg.evaluate.harm_judge
    if judge != "rule" and not judge.startswith("reward_threshold:"):
        tags |= check_model_source("evaluate.harm_judge", judge, tag="harm_judge")
    return tags


def materialize(spec: str, cache_dir: Path, key: str = "model.base") -> str:
    """What ``from_pretrained`` loads for a source: GGUF files converted (cached under ``cache_dir``),
    everything else as it is."""
    if is_gguf_source(spec):
        from hps_core.models.gguf import converted_dir

        return str(converted_dir(spec, Path(cache_dir), config_key=key))
    return spec
