"""Decode time of the ``hf`` rollout's batched generation alone (no Ray, no veRL), per torch thread count.

The same work as one rollout round of ``bench_cpu_step.py``: the ~1 M-parameter Qwen2 of the tiny assets,
``--requests`` requests (default 128) of 20-25 prompt tokens, ``--tokens`` sampled tokens each (EOS ignored, as
a random-weight model rarely emits it), decoded together by ``verl_resrl.cpu.hf_rollout.generate_batch``.
Prints the median of ``--repeats`` decodes for each thread count.

    python benchmarks/bench_hf_decode.py [--threads 1 2] [--requests 128] [--tokens 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM

from verl_resrl.cpu.hf_rollout import SamplingSettings, _Request, generate_batch
from verl_resrl.cpu.tiny_assets import build_tiny_assets


def make_requests(n: int, tokens: int, loop: asyncio.AbstractEventLoop) -> list[_Request]:
    settings = SamplingSettings(temperature=1.0, top_p=1.0, top_k=-1, ignore_eos=True)
    return [
        _Request(prompt_ids=list(range(5, 25 + i % 6)), max_tokens=tokens, settings=settings, want_logprobs=True,
                 future=loop.create_future(), generator=torch.Generator().manual_seed(i))
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model-size", default="1m")
    args = parser.parse_args()

    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        assets = build_tiny_assets(tmp, model_size=args.model_size)
        model = AutoModelForCausalLM.from_pretrained(assets.model_path, attn_implementation="sdpa").eval()
    print(f"{args.requests} requests x {args.tokens} tokens, model {args.model_size}, median of {args.repeats}")
    with torch.inference_mode():
        for threads in args.threads:
            torch.set_num_threads(threads)
            generate_batch(model, make_requests(args.requests, args.tokens, loop), set(), 0, torch.Generator())
            times = []
            for _ in range(args.repeats):
                requests = make_requests(args.requests, args.tokens, loop)
                start = time.perf_counter()
                generate_batch(model, requests, set(), 0, torch.Generator())
                times.append(time.perf_counter() - start)
            print(f"threads {threads}: decode {statistics.median(times):.3f} s  (all: "
                  f"{', '.join(f'{t:.3f}' for t in times)})")


if __name__ == "__main__":
    main()
