"""The ``hps`` command: the project's user commands in one place.

    hps import-gguf <file.gguf> <out dir>     convert a GGUF model into a safetensors Hugging Face directory
    hps lineage models:/<name>/<version> [--json] [--verify] [--tracking-uri URI]

``python -m hps_core.lineage ...`` keeps working and runs the same lineage walk.
"""

from __future__ import annotations

import argparse
import sys


def _import_gguf(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hps import-gguf", description=(
        "Convert a GGUF model (llama.cpp's format) into a safetensors Hugging Face directory: config, fp32 "
        "weights, tokenizer with its chat template, generation config. Configs can also name the GGUF file "
        "directly (model.base = \"gguf:<path>\"); the flow then converts it once into its cache."))
    parser.add_argument("gguf_file", help="path of the .gguf file")
    parser.add_argument("out_dir", help="directory to write (replaced when it holds an earlier conversion)")
    args = parser.parse_args(argv)
    from hps_core.models.gguf import GGUFImportError, import_gguf

    try:
        out = import_gguf(args.gguf_file, args.out_dir)
    except GGUFImportError as err:
        print(f"hps import-gguf: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} (load it with AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0


def _lineage(argv: list[str]) -> int:
    from hps_core.registry.lineage_walk import main as lineage_main

    return lineage_main(argv)


COMMANDS = {"import-gguf": _import_gguf, "lineage": _lineage}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip().split("\n\n")[1] if argv and argv[0] in ("-h", "--help") else
              f"usage: hps {{{','.join(COMMANDS)}}} ...\n\n" + __doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
