"""Tiny, offline assets for running veRL on CPU in seconds: tokenizer, model, data, reward.

``build_tiny_assets(out_dir)`` writes

* ``model/`` — a byte-level BPE tokenizer trained with ``tokenizers`` on the task's own text (a few hundred
  tokens, ChatML chat template) and a randomly initialised ``Qwen2ForCausalLM`` saved with ``save_pretrained``:
  ``model_size="tiny"`` (default; hidden 64, 2 layers, ~0.1 M parameters) or ``"1m"`` (hidden 128, 4 layers,
  MLP 512, ~1 M parameters — the configuration of the CPU throughput benchmark);
* ``train.parquet`` / ``val.parquet`` — "a+b" prompts in veRL's schema (``prompt`` chat list,
  ``data_source``, ``ability``, ``reward_model.ground_truth``, ``extra_info.index``);

and returns their paths together with the reward function (:mod:`verl_resrl.cpu.tiny_reward`).
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

DATA_SOURCE = "tiny_arith"
EOS = "<|im_end|>"
PAD = "<|endoftext|>"
SPECIAL_TOKENS = [PAD, "<|im_start|>", EOS]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyAssets:
    model_path: str
    train_files: str
    val_files: str
    reward_path: str
    reward_name: str = "compute_score"


# Qwen2Config keyword arguments per ``model_size`` (vocabulary, special tokens and context are shared).
MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    ),
    "1m": dict(
        hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2
    ),
}


def _problems(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        out.append((f"{a}+{b}=", str(a + b)))
    return out


def _write_split(path: Path, problems: list[tuple[str, str]], split: str) -> None:
    import pandas as pd

    rows = [
        {
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": question}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {"split": split, "index": i, "question": question},
        }
        for i, (question, answer) in enumerate(problems)
    ]
    pd.DataFrame(rows).to_parquet(path)


def build_bpe_tokenizer(texts: list[str], vocab_size: int = 320, split_digits: bool = False):
    """Byte-level BPE trained on ``texts`` with the ChatML chat template (``split_digits``: one token per digit)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]) if split_digits
        else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_assets(
    out_dir: str | Path, n_train: int = 64, n_val: int = 16, seed: int = 0, model_size: str = "tiny"
) -> TinyAssets:
    """Write the tiny tokenizer, model and data under ``out_dir`` (idempotent) and return their paths.

    ``model_size`` picks the model's shape from :data:`MODEL_SIZES` (``"tiny"`` or ``"1m"``).
    """
    if model_size not in MODEL_SIZES:
        raise ValueError(f"model_size must be one of {sorted(MODEL_SIZES)}, got {model_size!r}")
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from verl_resrl.cpu import tiny_reward

    out = Path(out_dir)
    model_dir = out / "model"
    manifest = out / "assets.json"
    assets = TinyAssets(
        model_path=str(model_dir),
        train_files=str(out / "train.parquet"),
        val_files=str(out / "val.parquet"),
        reward_path=tiny_reward.__file__,
    )
    recorded = asdict(assets) if model_size == "tiny" else {**asdict(assets), "model_size": model_size}
    if manifest.exists() and json.loads(manifest.read_text()) == recorded:
        return assets
    out.mkdir(parents=True, exist_ok=True)
    train, val = _problems(n_train, seed), _problems(n_val, seed + 1)
    texts = [f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n" for q, a in train + val]
    tokenizer = build_bpe_tokenizer(texts * 4)
    tokenizer.save_pretrained(model_dir)

    eos_id, pad_id = tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(PAD)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        **MODEL_SIZES[model_size],
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=eos_id)
    model.save_pretrained(model_dir)

    _write_split(Path(assets.train_files), train, "train")
    _write_split(Path(assets.val_files), val, "test")
    manifest.write_text(json.dumps(recorded))
    return assets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="tiny")
    args = parser.parse_args()
    print(json.dumps(asdict(build_tiny_assets(args.out_dir, model_size=args.model_size)), indent=2))


if __name__ == "__main__":
    main()
