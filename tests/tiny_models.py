"""Tiny transformers models for the tests (random weights, built in milliseconds, no download)."""

from __future__ import annotations

import torch


def tiny_qwen2(hidden=32, layers=3, vocab=64, seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         attn_implementation="sdpa")
    return Qwen2ForCausalLM(config).eval()
