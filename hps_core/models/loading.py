"""Load policy, reference and reward models by hub id or local path; build the tiny default model.

One loader for every model: the tiny default is saved as an ordinary Hugging Face directory
(safetensors) and loaded back through exactly the ``from_pretrained`` call an 8B hub model goes through,
so the laptop run exercises the production code path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

import torch

from hps_core.config.schema import TinyModelConfig

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
# bump when the builder changes, so cached tiny models are rebuilt (2: the tokenizer carries a chat template)
TINY_BUILDER_VERSION = "2"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names the model and what to do."""


# The config key that names each model -> its opt-ins (hps_core.config), so a refusal names the key to set.
OPT_IN_KEYS = {
    "model.base": ("model.trust_remote_code", "model.allow_pickle_weights"),
    "reward_model.path": ("reward_model.trust_remote_code", "reward_model.allow_pickle_weights"),
    "evaluate.harm_judge": ("evaluate.harm_judge_trust_remote_code", "evaluate.harm_judge_allow_pickle_weights"),
}


def default_cache_dir() -> Path:
    """Where built tiny models are cached: ``$HPS_CACHE_DIR`` or ``~/.cache/hps_align``."""
    return Path(os.environ.get("HPS_CACHE_DIR", Path.home() / ".cache" / "hps_align"))


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are slow there and hurt tiny models), bf16 on GPUs that support it."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _check_safetensors(path: Path, allow_pickle: bool, config_key: str = "model.base") -> None:
    """Refuse pickle-only checkpoints: unpickling runs arbitrary code from whoever made the file."""
    if not path.is_dir():
        return  # a hub id: transformers itself prefers safetensors; use_safetensors below enforces it
    has_safe = any(path.glob("*.safetensors"))
    has_pickle = any(path.glob("*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.pth"))
    if has_pickle and not has_safe and not allow_pickle:
        raise ModelLoadError(
            f"{path} ({config_key}) holds only pickle weights (*.bin/*.pt); they can run arbitrary code when "
            "loaded. Convert them to safetensors (model.save_pretrained(dir, safe_serialization=True)), or, if "
            f"you trust whoever made the file, set {_opt_in(config_key, pickle=True)} = true in the config."
        )


def _opt_in(config_key: str, *, pickle: bool) -> str:
    trust, allow = OPT_IN_KEYS.get(config_key, OPT_IN_KEYS["model.base"])
    return allow if pickle else trust


def _resolve(name_or_path: str, config_key: str = "model.base") -> str:
    from hps_core.models.gguf import converted_dir, is_gguf_source

    if is_gguf_source(name_or_path):  # converted once, cached by the file's sha256 (the flow converts into its own cache)
        return str(converted_dir(name_or_path, default_cache_dir() / "models", config_key=config_key))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} ({config_key}) exists but has no config.json: it is not a Hugging Face "
                                 f"model directory; point {config_key} at the directory holding config.json")
        return str(path.resolve())
    if name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path.strip("/").replace("/", "", 1):
        raise ModelLoadError(f"model path {name_or_path} ({config_key}) does not exist; set {config_key} to an "
                             "existing Hugging Face model directory or a hub id such as 'Qwen/Qwen2.5-0.5B-Instruct'")
    return name_or_path  # a hub id such as "Qwen/Qwen2.5-0.5B-Instruct"


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    source = _resolve(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise ModelLoadError(
            f"could not load the tokenizer of {name_or_path!r}: {err}. With no network, pass a local directory."
        ) from err
    if tok.pad_token is None:  # many causal LMs ship without one; eos is the usual stand-in
        tok.pad_token = tok.eos_token
    return tok


def _load(auto_class, what: str, name_or_path: str, *, device, dtype, trust_remote_code, allow_pickle,
          config_key: str = "model.base", **kwargs):
    """The one from_pretrained call behind every model: safetensors only and no code shipped with the
    model unless the config opts in (``config_key`` names the model's key, so an error names the opt-in)."""
    device = device or pick_device()
    source = _resolve(name_or_path, config_key)
    _check_safetensors(Path(source), allow_pickle, config_key)
    try:
        model = auto_class.from_pretrained(
            source,
            dtype=dtype or train_dtype(device),
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
            **kwargs,
        )
    except (OSError, ValueError) as err:
        hint = ""
        if "trust_remote_code" in str(err) and not trust_remote_code:
            hint = (f" The model ships its own Python code, which is not run unless the config says so: if you "
                    f"trust it, set {_opt_in(config_key, pickle=False)} = true.")
        elif not allow_pickle and ".safetensors" in str(err):
            hint = (f" Only safetensors weights are loaded; if the model has only pickle weights (*.bin) and you "
                    f"trust whoever made them, set {_opt_in(config_key, pickle=True)} = true.")
        raise ModelLoadError(f"could not load {what} {name_or_path!r} ({config_key}): {err}{hint}") from err
    return model.to(device), load_tokenizer(source, trust_remote_code=trust_remote_code)


def load_causal_lm(
    name_or_path: str,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    config_key: str = "model.base",
):
    """Load a causal LM and its tokenizer (hub id or directory), safetensors only by default."""
    from transformers import AutoModelForCausalLM

    return _load(AutoModelForCausalLM, "causal LM", name_or_path, device=device, dtype=dtype,
                 trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, config_key=config_key)


def load_reward_model(
    name_or_path: str,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    num_labels: int | None = None,
    config_key: str = "reward_model.path",
):
    """Load a sequence-classification reward model (or initialise its head from a causal LM directory)."""
    from transformers import AutoModelForSequenceClassification

    kwargs = {"num_labels": num_labels} if num_labels is not None else {}
    model, tok = _load(AutoModelForSequenceClassification, "reward model", name_or_path, device=device, dtype=dtype,
                       trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, config_key=config_key,
                       **kwargs)
    if model.config.pad_token_id is None:  # needed to find the last token of each padded sequence
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


def _train_tokenizer(texts: Iterable[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def tiny_corpus(prompts: Iterable[str], responses: Iterable[str]) -> list[str]:
    """The texts the tiny tokenizer is trained on: every prompt as the chat template renders it, every
    response as it follows the generation prompt (after the template's one space)."""
    from hps_core.data.chat import render_plain

    rendered = [render_plain(p, SPECIAL_TOKENS["eos_token"]) for p in sorted(set(prompts))]
    return rendered + sorted(set(" " + r for r in responses))


def _tiny_digest(texts: list[str], cfg: TinyModelConfig, seed: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"cfg": asdict(cfg), "seed": seed, "v": TINY_BUILDER_VERSION}, sort_keys=True).encode())
    for text in texts:
        h.update(text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def build_tiny_model(
    corpus: Iterable[str], cfg: TinyModelConfig, *, seed: int = 0, cache_dir: Path | None = None
) -> Path:
    """Build (or reuse from the cache) the tiny default causal LM: a byte-level BPE tokenizer trained on
    ``corpus`` and a randomly initialised small Llama, saved as a Hugging Face directory.

    Deterministic: the same corpus, config and seed give the same directory name and the same weights.
    The directory is written to a temp folder and renamed into place, so a crash never leaves a
    half-built model in the cache.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = list(corpus)
    out = (cache_dir or default_cache_dir()) / f"tiny-llama-{_tiny_digest(texts, cfg, seed)}"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    from hps_core.data.chat import PLAIN_CHAT_TEMPLATE

    tokenizer = _train_tokenizer(texts, cfg.vocab_size)
    tokenizer.chat_template = PLAIN_CHAT_TEMPLATE  # one prompt renderer for every model (hps_core.data.chat)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out.exists():  # another process finished first; keep its copy
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
