"""A LoRA config's problems, found at start-up without importing torch or peft."""

from __future__ import annotations

import importlib.util


def peft_available() -> bool:
    return importlib.util.find_spec("peft") is not None


def lora_problem(cfg, where: str = "lora") -> str | None:
    """What is wrong with a LoRA config (``hps_core.config.LoraConfig``), or None. Never imports torch."""
    if cfg.r < 0:
        return f"{where}.r must be >= 0 (0 = train every weight), got {cfg.r}"
    if cfg.r == 0:
        return None
    if cfg.alpha <= 0:
        return f"{where}.alpha must be > 0, got {cfg.alpha}"
    if not 0.0 <= cfg.dropout < 1.0:
        return f"{where}.dropout must be in [0, 1), got {cfg.dropout}"
    if not _targets(cfg.target_modules):
        return f"{where}.target_modules is empty; use \"all-linear\" or module names such as \"q_proj,v_proj\""
    if not peft_available():
        return (f"{where}.r = {cfg.r} asks for LoRA adapters, but peft is not installed; "
                "install it with `pip install 'hps-align[lora]'` (or `pip install peft`), or set r = 0")
    return None


def _targets(spec: str) -> str | list[str]:
    spec = spec.strip()
    return spec if spec == "all-linear" else [s.strip() for s in spec.split(",") if s.strip()]
