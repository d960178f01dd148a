"""Time ResRL's advantage computation for one rank-local batch: the package vs a straightforward per-group port.

    python benchmarks/bench_residuals.py                      # CPU: 32 groups x 4 x 1024 tokens, H = 1024
    python benchmarks/bench_residuals.py --device cuda        # GPU: 32 groups x 4 x 4096 tokens, H = 2560
    OMP_NUM_THREADS=1 python benchmarks/bench_residuals.py --clock cpu   # CPU time, steady on a shared machine

To compare two versions of the package, run this script with ``PYTHONPATH`` set to each checkout in turn (the
public functions it calls are the same).

Both paths get the same inputs and compute residual energies, token weights and advantages. The straightforward
port loops over groups with a full SVD and ``torch.quantile``. Prints both times, the ratio, peak memory and the
largest differences; writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from queue import Empty

import torch
import torch.nn.functional as F

from verl_resrl import ResRLConfig, compute_residuals, positive_responses, resrl_advantages


def make_inputs(groups, per_group, length, width, device, dtype, seed=0):
    """Hidden states with a decaying spectrum (low-rank signal + noise), 2 positives per group."""
    gen = torch.Generator().manual_seed(seed)
    batch = groups * per_group
    signal_rank = min(256, width)
    directions = torch.randn(signal_rank, width, generator=gen) * (torch.arange(1, signal_rank + 1) ** -1.0)[:, None]
    directions, offset = directions.to(device), (torch.randn(width, generator=gen) * 0.1).to(device)
    hidden = torch.empty(batch, length, width, dtype=dtype, device=device)
    for b in range(batch):  # build per response to bound memory
        coef = torch.randn(length, signal_rank, generator=gen).to(device)
        noise = torch.randn(length, width, generator=gen).to(device) * 0.01
        hidden[b] = (coef @ directions * 10 + noise + offset).to(dtype)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=gen)
    mask = (torch.arange(length)[None] < lengths[:, None]).float().to(device)
    rewards = torch.zeros(batch, length, device=device)
    positive = torch.tensor([i % per_group < 2 for i in range(batch)])
    rewards[torch.arange(batch), lengths - 1] = positive.float().to(device)
    uids = [f"uid-{i // per_group}" for i in range(batch)]
    return hidden, mask, rewards, uids


def package_path(hidden, mask, rewards, uids, cfg):
    positive = positive_responses(rewards, mask, uids, cfg)
    res = compute_residuals(hidden, mask, uids, positive, cfg)
    advantages, _ = resrl_advantages(rewards, mask, uids, res.residual, res.has_residual, cfg)
    return res.residual, advantages


def per_group_port(hidden, mask, rewards, uids, cfg):
    """The formulas as written, one group at a time (full SVD, torch.quantile), fp32 on the same device."""
    width = hidden.shape[-1]
    scores = rewards.sum(-1)
    residual = torch.zeros(mask.shape, device=hidden.device)
    advantages = torch.zeros(mask.shape, device=hidden.device)
    for uid in dict.fromkeys(uids):
        rows = torch.tensor([u == uid for u in uids], device=hidden.device)
        s = scores[rows]
        adv = (s - s.mean()) / (s.std() + cfg.adv_epsilon)
        pos_rows, neg_rows = rows & (scores > 0), rows & (scores <= 0)
        pos_tok = pos_rows[:, None] & mask.bool()
        neg_tok = neg_rows[:, None] & mask.bool()
        weights = torch.ones(mask.shape, device=hidden.device)
        if pos_rows.any() and neg_rows.any() and pos_tok.sum() >= cfg.min_pos_tokens:
            x = F.layer_norm(hidden[pos_tok].float(), (width,))
            if x.shape[0] > cfg.max_pos_tokens:
                x = x[torch.randperm(x.shape[0], device=x.device)[: cfg.max_pos_tokens]]
            mu = x.mean(0)
            _, _, vh = torch.linalg.svd(x - mu, full_matrices=False)
            v = vh[: min(cfg.rank, x.shape[0] - 1)].T
            c = F.layer_norm(hidden[neg_tok].float(), (width,)) - mu
            r = ((c - c @ v @ v.T) ** 2).sum(-1) / width
            residual[neg_tok] = r
            lo, hi = torch.quantile(r, cfg.q_low), torch.quantile(r, cfg.q_high)
            z = ((r - lo) / (hi - lo)).clamp(0, 1)
            weights[neg_tok] = cfg.min_weight + (1 - cfg.min_weight) * z
        scale = torch.where(pos_rows[:, None], torch.full_like(weights, cfg.pos_weight), weights)
        advantages[rows] = (adv[:, None] * scale[rows]) * mask[rows]
    return residual, advantages


PATHS = {"package": package_path, "per_group_port": per_group_port}


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(fn, device, repeats, clock="wall"):
    """Median seconds of ``repeats`` calls after a warm-up. ``clock="cpu"`` counts this process's CPU time:
    with one thread (``OMP_NUM_THREADS=1``) that is the work itself, whatever else shares the machine."""
    now = CLOCKS[clock]
    times = []
    for _ in range(repeats + 1):  # first call warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = now()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(now() - start)
    return out, statistics.median(times[1:])


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu_peak_child(path_name, input_args, cfg, queue):
    inputs = make_inputs(*input_args)
    base = _rss_mb()
    PATHS[path_name](*inputs, cfg)
    queue.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)


def peak_memory_mb(device, path_name, input_args, cfg):
    """Extra peak memory of one path over its inputs: CUDA allocator peak, or (CPU) a fresh process's peak RSS."""
    if device.type == "cuda":
        inputs = make_inputs(*input_args)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        PATHS[path_name](*inputs, cfg)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    ctx = multiprocessing.get_context("spawn")  # fork after OpenMP work can deadlock the child
    queue = ctx.Queue()
    child = ctx.Process(target=_cpu_peak_child, args=(path_name, input_args, cfg, queue))
    child.start()
    while True:  # a child that dies (e.g. cannot import this file) must fail the benchmark, not hang it
        try:
            peak = queue.get(timeout=5)
            break
        except Empty:
            if not child.is_alive():
                raise RuntimeError(f"peak-memory child for {path_name} exited with code {child.exitcode}") from None
    child.join()
    return peak


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--groups", type=int, default=32)
    p.add_argument("--per-group", type=int, default=4)
    p.add_argument("--length", type=int, default=None, help="response tokens (default 1024 CPU, 4096 CUDA)")
    p.add_argument("--hidden", type=int, default=None, help="hidden size (default 1024 CPU, 2560 CUDA)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--subspace", default="randomized", choices=["randomized", "exact"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                   help="wall: elapsed time; cpu: process CPU time (use with OMP_NUM_THREADS=1 on a shared machine)")
    p.add_argument("--out", default="benchmarks/results/bench_residuals.json")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    length = args.length or (4096 if cuda else 1024)
    width = args.hidden or (2560 if cuda else 1024)
    cfg = ResRLConfig(subspace=args.subspace)
    input_args = (args.groups, args.per_group, length, width, device, getattr(torch, args.dtype))
    fast_mem = peak_memory_mb(device, "package", input_args, cfg)
    ref_mem = peak_memory_mb(device, "per_group_port", input_args, cfg)
    inputs = make_inputs(*input_args)
    if args.clock == "cpu" and cuda:
        raise SystemExit("--clock cpu measures CPU work; on CUDA use the default wall clock")
    (fast_res, fast_adv), fast_s = timed(lambda: package_path(*inputs, cfg), device, args.repeats, args.clock)
    (ref_res, ref_adv), ref_s = timed(lambda: per_group_port(*inputs, cfg), device, args.repeats, args.clock)

    result = {
        "shape": {"groups": args.groups, "per_group": args.per_group, "length": length, "hidden": width,
                  "dtype": args.dtype, "subspace": args.subspace},
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "clock": args.clock,
        "torch": torch.__version__, "python": platform.python_version(),
        "package_s": fast_s, "per_group_port_s": ref_s, "speedup": ref_s / fast_s,
        "package_peak_mb": fast_mem, "per_group_port_peak_mb": ref_mem,
        "max_rel_residual_diff": float((fast_res - ref_res).abs().max() / ref_res.abs().max()),
        "max_abs_advantage_diff": float((fast_adv - ref_adv).abs().max()),
    }
    for key, value in result.items():
        print(f"{key:>24}: {value:.4g}" if isinstance(value, float) else f"{key:>24}: {value}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
