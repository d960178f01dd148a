"""Overhead of ResRL on the actor's old-log-prob pass: the same batch with and without capture + residuals.

    python benchmarks/bench_overhead.py                    # CPU: small Qwen2, 8 micro-batches of 4 x 96 tokens
    python benchmarks/bench_overhead.py --device cuda      # GPU: random-init Qwen3-4B shape, bf16, 4 x 4608 tokens

The pass is what veRL's actor does for old log-probs: a no-grad forward per micro-batch (``use_cache=False``, as
veRL passes it: no KV cache is built) and the log-prob of each response token. With ResRL, a forward hook keeps one layer's output, the response states are cut out
and each group's residuals are computed as soon as its samples have passed (the package's own capture and
streaming code). Groups of 4 responses, 2 of them positive, spread over consecutive micro-batches. Prints
both times, the ratio, peak memory per micro-batch with and without, and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from verl_resrl import ResRLConfig
from verl_resrl.core.capture import HiddenStateCapture
from verl_resrl.core.streaming import StreamingGroupResiduals


def qwen3_4b_config(num_hidden_layers: int = 36):
    """Qwen3-4B's architecture (random init: enough for time and memory), sdpa attention."""
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=151936, hidden_size=2560, intermediate_size=9728,
                       num_hidden_layers=num_hidden_layers, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                       max_position_embeddings=8192, attn_implementation="sdpa", torch_dtype="bfloat16")


def build_model(device, shape, num_hidden_layers=None, dtype=None):
    """Random-init ``qwen3-4b`` (bf16), ``tiny-qwen3`` or ``small-qwen2`` (fp32) in eval mode on ``device``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    if shape == "qwen3-4b":
        config = qwen3_4b_config(num_hidden_layers or 36)
        cls, default_dtype = Qwen3ForCausalLM, torch.bfloat16
    elif shape == "tiny-qwen3":
        config = Qwen3Config(vocab_size=512, hidden_size=128, intermediate_size=384,
                             num_hidden_layers=num_hidden_layers or 4, num_attention_heads=4, num_key_value_heads=2,
                             head_dim=32, max_position_embeddings=512, attn_implementation="sdpa")
        cls, default_dtype = Qwen3ForCausalLM, torch.float32
    else:
        config = Qwen2Config(vocab_size=512, hidden_size=128, intermediate_size=384,
                             num_hidden_layers=num_hidden_layers or 4, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=512, attn_implementation="sdpa")
        cls, default_dtype = Qwen2ForCausalLM, torch.float32
    with torch.device(device):
        model = cls(config).to(dtype or default_dtype)
    return model.eval()


def old_log_prob_pass(model, batches, response_len, resrl: ResRLConfig | None, groups, positive, autocast_dtype=None):
    """Forward every micro-batch; return (seconds, peak bytes per micro-batch, the residual stream or None).

    ``autocast_dtype`` runs each micro-batch (forward, log-probs, residuals) inside ``torch.autocast`` as veRL's
    FSDP actor does (bf16 unless ``mixed_precision.param_dtype`` is changed).
    """
    device = batches[0].device
    autocast = (lambda: torch.autocast(device.type, dtype=autocast_dtype)) if autocast_dtype else contextlib.nullcontext
    capture = HiddenStateCapture(model, resrl.hidden_layer) if resrl else None
    stream = None
    if resrl:
        lengths = torch.full((len(groups),), response_len)
        stream = StreamingGroupResiduals(groups, positive, lengths, resrl)
    peaks = []
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    row = 0
    for ids in batches:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        with torch.no_grad(), autocast():
            if capture is not None:
                with capture.armed():
                    logits = model(input_ids=ids, use_cache=False).logits
            else:
                logits = model(input_ids=ids, use_cache=False).logits
            resp_logits = logits[:, -response_len - 1 : -1].float()
            log_probs = torch.log_softmax(resp_logits, dim=-1).gather(-1, ids[:, -response_len:, None]).squeeze(-1)
            del logits, resp_logits, log_probs
            if capture is not None:
                (hidden,) = capture.pop()
                for i in range(ids.shape[0]):
                    stream.add(row + i, hidden[i, -response_len - 1 : -1].clone())
                del hidden
                stream.flush()
        row += ids.shape[0]
        if device.type == "cuda":
            peaks.append(torch.cuda.max_memory_allocated() - base)
    if stream is not None:
        with autocast():
            stream.finish()
    sync()
    return time.perf_counter() - start, max(peaks) if peaks else 0, stream


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--micro-batches", type=int, default=8)
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--prompt-len", type=int, default=None)
    p.add_argument("--response-len", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hidden-layer", type=int, default=-2)
    p.add_argument("--out", default="benchmarks/results/bench_overhead.json")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    shape = "qwen3-4b" if cuda else "small-qwen2"
    prompt_len = args.prompt_len or (512 if cuda else 32)
    response_len = args.response_len or (4096 if cuda else 64)
    model = build_model(device, shape)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, vocab, (args.micro_batch_size, prompt_len + response_len), generator=gen).to(device)
               for _ in range(args.micro_batches)]
    total = args.micro_batches * args.micro_batch_size
    groups = [f"uid-{i // 4}" for i in range(total)]
    positive = torch.tensor([i % 4 < 2 for i in range(total)])
    resrl = ResRLConfig(hidden_layer=args.hidden_layer)

    old_log_prob_pass(model, batches[:1], response_len, None, groups[: args.micro_batch_size], positive)  # warm-up
    base_t, with_t, base_peak, with_peak = [], [], 0, 0
    for _ in range(args.repeats):  # interleaved, so drift affects both alike
        t, peak, _ = old_log_prob_pass(model, batches, response_len, None, groups, positive)
        base_t.append(t)
        base_peak = max(base_peak, peak)
        t, peak, stream = old_log_prob_pass(model, batches, response_len, resrl, groups, positive)
        with_t.append(t)
        with_peak = max(with_peak, peak)
    base, with_resrl = statistics.median(base_t), statistics.median(with_t)
    result = {
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "model": shape, "micro_batches": args.micro_batches, "micro_batch_size": args.micro_batch_size,
        "prompt_len": prompt_len, "response_len": response_len, "hidden_layer": args.hidden_layer,
        "torch": torch.__version__, "python": platform.python_version(),
        "old_log_prob_s": base, "with_resrl_s": with_resrl, "extra_time_pct": 100 * (with_resrl / base - 1),
        "residual_math_s": stream.seconds, "computed_groups": stream.stats.computed_groups,
        "peak_per_micro_batch_gib": base_peak / 2**30, "peak_with_resrl_gib": with_peak / 2**30,
        "extra_peak_gib": (with_peak - base_peak) / 2**30,
    }
    for key, value in result.items():
        print(f"{key:>26}: {value:.4g}" if isinstance(value, float) else f"{key:>26}: {value}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
