"""Optional LoRA adapters through peft, for models too large to fine-tune in full on one GPU.

peft is an optional dependency (``pip install 'hps-align[lora]'``): this module imports it only when an
adapter is actually requested, and :func:`lora_problem` (torch-free, called by the config check at
start-up) turns a missing install into a config error instead of a traceback hours into a run.

Training with adapters changes only what is trainable: the policy is the base model plus adapters whose
``B`` matrices start at zero, so at step 0 it equals the reference exactly; the saved model has the
adapters merged, so evaluation and the registry see an ordinary Hugging Face directory. The adapter
itself is kept too, in PEFT's own format (:func:`save_adapter`): in ``adapter/`` of the final model
directory and in every in-training checkpoint, for tools that apply adapters to a base themselves
(``peft.PeftModel.from_pretrained(base, dir)``, vLLM's LoRA serving, the hub).
"""

from __future__ import annotations

import json
from pathlib import Path
from hps_core.config.lora_check import _targets, lora_problem


ADAPTER_SUBDIR = "adapter"  # the PEFT adapter inside a final model directory (LoRA runs only)
ADAPTER_CONFIG = "adapter_config.json"


def apply_lora(model, cfg, task_type: str = "CAUSAL_LM"):
    """Wrap ``model`` with trainable LoRA adapters (peft); every base weight is frozen. ``task_type``
    ``"SEQ_CLS"`` (a reward model) also trains the new score head in full (peft's modules_to_save)."""
    problem = lora_problem(cfg)
    if problem:
        raise ValueError(problem)
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=_targets(cfg.target_modules),
        task_type=task_type,
    )
    try:
        return get_peft_model(model, peft_cfg)
    except ValueError as err:  # e.g. a target module name that does not exist in this architecture
        raise ValueError(f"could not add LoRA adapters to {type(model).__name__}: {err}. "
                         "Check lora.target_modules against the model's module names.") from err


def unwrap(model):
    """The transformers model under a peft wrapper (its layers carry the adapters in place), else ``model``."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def merge_adapters(model):
    """A plain transformers model: adapters merged into the weights (no-op without adapters)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def is_peft_model(model) -> bool:
    """Whether ``model`` is a peft wrapper (adapters not merged yet)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def save_adapter(peft_model, out_dir: Path, base_path: str | None = None) -> Path:
    """Write the adapters of ``peft_model`` (not merged yet) in PEFT's format: ``adapter_config.json`` and
    ``adapter_model.safetensors``, loadable with ``peft.PeftModel.from_pretrained(base, out_dir)``.

    ``base_path``: the base the adapters were trained on (the model directory or hub id that was loaded);
    it replaces peft's own guess in ``base_model_name_or_path`` and is named in ``README.md``, so the
    adapter says what it applies to (without it, peft's guess is kept: the path the base was loaded from).
    Only adapter weights are written (``save_embedding_layers=False``: no vocabulary is resized here, and
    peft's "auto" would look the base up on the hub to find out).
    """
    if not is_peft_model(peft_model):
        raise TypeError(f"save_adapter needs a peft model with its adapters unmerged, got {type(peft_model).__name__}")
    out_dir = Path(out_dir)
    peft_model.save_pretrained(str(out_dir), safe_serialization=True, save_embedding_layers=False)
    config_file = out_dir / ADAPTER_CONFIG
    config = json.loads(config_file.read_text())
    if base_path is not None:
        config["base_model_name_or_path"] = str(base_path)
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    base = config.get("base_model_name_or_path") or "(unknown)"
    # Replaces peft's model card (a template of "[More Information Needed]"): what the adapter applies to.
    (out_dir / "README.md").write_text(
        f"---\nbase_model: {json.dumps(base)}\nlibrary_name: peft\ntags:\n- lora\n- hps-align\n---\n\n"
        f"# LoRA adapter\n\nTrained on, and applies to, the base model `{base}` (r = {config.get('r')}, "
        f"alpha = {config.get('lora_alpha')}). Load it with\n`PeftModel.from_pretrained(AutoModelForCausalLM."
        f"from_pretrained(\"{base}\"), \"<this directory>\")`, or merge it: `.merge_and_unload()`.\n"
    )
    return out_dir
