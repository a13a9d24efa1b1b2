"""Every hps_flow config shipped in flows/configs/ parses, and the production one carries the reference recipe."""

import dataclasses
import tomllib
from pathlib import Path

import pytest

from hps_core.config.loading import load_config
from hps_core.config.schema import PipelineConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "flows" / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.toml") if not p.name.startswith("routing"))  # hps_flow's own
CONFIGS.append(Path(__file__).resolve().parent.parent / "hps_core" / "config" / "default.toml")  # the embedded one


def _explicit_keys(table: dict, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """Every key the TOML file sets, as a path of section names and the key (nested tables flattened)."""
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_explicit_keys(value, path + (key,)))
        else:
            out[path + (key,)] = value
    return out


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_parses(path):
    """The file parses to a PipelineConfig that holds exactly what the file says: every explicit key reads
    back as its TOML value (an ignored, renamed or silently defaulted key would not), with the TOML's kind
    (a bool stays a bool, text stays text; an integer may widen to a float field). The parsed config
    survives the round trip the flows' Metaflow Config parser makes (to_dict, then from_dict)."""
    cfg = load_config(path)
    assert type(cfg) is PipelineConfig
    keys = _explicit_keys(tomllib.loads(path.read_text(encoding="utf-8")))
    assert keys, f"{path.name} sets nothing"
    for key, expected in keys.items():
        value = cfg
        for name in key:
            value = getattr(value, name)
        assert _plain(value) == _plain(expected), f"{path.name}: {'.'.join(key)} = {expected!r} in the file, {value!r} parsed"
        assert isinstance(value, bool) == isinstance(expected, bool) and isinstance(value, str) == isinstance(expected, str), key
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg


def test_production_config_is_the_reference_recipe():
    cfg = load_config(CONFIG_DIR / "production.toml")
    hps = cfg.hps
    assert (hps.method, hps.beta, hps.label_smoothing, hps.epochs) == ("dpo-hps", 0.25, 0.1, 2)
    assert hps.batch_size * hps.grad_accum_steps == 128  # effective batch, split across DDP ranks
    assert cfg.sft.epochs == 0 and "/" in cfg.model.base  # an SFT model by hub id is the start and reference
    assert (cfg.model.max_prompt_tokens, cfg.model.max_length) == (1024, 2048)
    assert "/" in cfg.reward_model.path
    assert cfg.resources.gpu == cfg.resources.processes_per_node == 8 and cfg.resources.image
    assert cfg.schedule.cron


def test_single_gpu_trial_uses_the_recipe_rate_on_a_small_model():
    cfg = load_config(CONFIG_DIR / "trial_0p5b.toml")
    assert cfg.hps.lr == 5e-7 and cfg.hps.batch_size * cfg.hps.grad_accum_steps == 128
    assert cfg.resources.gpu == 1 and cfg.hps.lora.r == 0


def test_smollm2_recipe_expands_policy_prompts_the_reward_model_never_sees():
    for name in ("smollm2_hh.toml", "smollm2_hh_gpu.toml"):
        cfg = load_config(CONFIG_DIR / name)
        assert cfg.expand.k == 8 and cfg.model.base.startswith("gguf:") and cfg.model.base.endswith(".gguf")
        assert cfg.data.reward_fraction > 0 and not cfg.reward_model.path  # trained in the flow on its own prompts
        assert cfg.model.max_length - cfg.model.max_prompt_tokens >= cfg.expand.max_new_tokens  # samples fit
        assert cfg.hps.method == "dpo-hps" and cfg.register.champion_alias == ""
    assert load_config(CONFIG_DIR / "smollm2_hh_gpu.toml").resources.gpu == 1


def test_a_plain_install_carries_and_loads_the_embedded_default(tmp_path):
    """`pip install .` (not editable, no checkout beside it) must still load the default config: the wheel
    holds hps_core/config/default.toml, and load_config() run from the unpacked wheel, in another directory,
    reads it."""
    import os
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(root)], check=True, timeout=600, capture_output=True)
    wheel = next((tmp_path / "dist").glob("hps_align-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        assert "hps_core/config/default.toml" in zf.namelist()
        zf.extractall(tmp_path / "site")
    code = ("from hps_core.config import load_config, DEFAULT_CONFIG_PATH; cfg = load_config(); "
            "print(DEFAULT_CONFIG_PATH); print(cfg.data.source, cfg.model.base, cfg.run.experiment)")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout.splitlines()
    assert out[0].startswith(str(tmp_path / "site")) and out[1] == "generated tiny hps"
