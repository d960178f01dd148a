"""Device checks of ResRL's GPU path, in one call: capture, residual math (plain and under autocast), overhead.

    PYTHONPATH=. python benchmarks/gpu_check.py             # CUDA: a few minutes on one H100/H200
    PYTHONPATH=. python benchmarks/gpu_check.py --smoke     # CPU, tiny shapes, under a minute (run by the tests)

Needs torch, transformers and the package's verl-free core only; it never imports veRL (the JSON lists any
``verl`` module found imported at the end, and the run fails if there is one). Each check prints PASS/FAIL per
criterion against its goal; a check that raises is recorded as ERROR with its message and the next one runs, so
one GPU loan gives every answer. Checks that would not finish within ``--budget-s`` are skipped (SKIPPED).

1. ``capture`` -- :class:`HiddenStateCapture`'s states equal ``output_hidden_states`` (same forward: identical;
   a hook-only forward: within 1e-2 of the largest state) for a Qwen3-shaped model (Qwen3-4B's width, 4 layers,
   random init, bf16, sdpa), on padded rows (left and right padding, ``position_ids`` from the mask, as veRL
   passes them) and on packed inputs (one row, ``position_ids`` restarting per sequence, as flash-attention's
   varlen path receives them); layers -1 and -2. Also: each packed sequence's states match its padded row.
2. ``residual_math`` -- :func:`compute_residuals` for a rank-local batch at Qwen3-4B shape (32 groups x 4
   responses of up to 4096 tokens, H = 2560, bf16 states, 0-4 positives per group): median time (CUDA events,
   after warm-up; goal <= 50 ms), extra peak memory over the inputs (goal <= 0.1 GiB), and the largest residual
   difference against an exact float64 SVD on groups with one positive response (no sub-sampling).
3. ``residual_autocast`` -- the same call inside ``torch.autocast(device, bfloat16)``, which is how veRL's actor
   calls it: it must run (CUDA's QR/SVD refuse bf16) and give the fp32 results.
4. ``old_log_prob_overhead`` -- the actor's old-log-prob pass (no-grad forward + response log-probs, bf16
   autocast) of a Qwen3-4B-shaped model (36 layers, random init, bf16, sdpa) over micro-batches of 4 x 4096
   tokens, with and without capture + :class:`StreamingGroupResiduals`, same inputs, same run, interleaved
   (``benchmarks/bench_overhead.py``): extra time (goal <= 0.5 %) and extra peak memory per micro-batch (goal
   <= 0.1 GiB); every group gets its residuals.

``--smoke`` runs the same code on CPU with tiny shapes. Time and memory goals are not judged there (their result
reads ``-``), correctness criteria are. CPU autocast silently runs linear algebra in fp32 where CUDA raises, so
the smoke run makes ``torch.linalg.qr/svd/eigh`` refuse half-precision input as CUDA does
(:func:`cuda_linalg_dtype_rules`): a smoke run fails where a GPU run would.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_overhead import build_model, old_log_prob_pass  # noqa: E402
from bench_residuals import make_inputs  # noqa: E402

from verl_resrl.core.capture import HiddenStateCapture  # noqa: E402
from verl_resrl.core.config import ResRLConfig  # noqa: E402
from verl_resrl.core.residual import compute_residuals  # noqa: E402

GIB = 2**30
# Positive responses per group, cycled over the groups: all-wrong, all-right and mixed groups of each size.
POSITIVES_PER_GROUP = (0, 1, 2, 3, 4, 1, 2, 1)


@dataclass
class Criterion:
    name: str
    value: float | bool | int | str | None
    goal: str
    ok: bool | None  # None: not judged (time and memory goals in --smoke)


@dataclass
class Shapes:
    """Sizes of every check; ``gpu()`` is what the goals are about, ``smoke()`` the CPU miniature."""

    capture_model: str
    capture_layers: int
    capture_lengths: tuple
    residual_groups: int
    residual_per_group: int
    residual_length: int
    residual_hidden: int
    reference_groups: int
    repeats: int
    residual_config: dict
    overhead_model: str
    overhead_micro_batches: int
    overhead_micro_batch_size: int
    overhead_prompt_len: int
    overhead_response_len: int
    overhead_repeats: int
    overhead_config: dict

    @classmethod
    def gpu(cls):
        return cls(capture_model="qwen3-4b", capture_layers=4, capture_lengths=(700, 1024, 129, 411),
                   residual_groups=32, residual_per_group=4, residual_length=4096, residual_hidden=2560,
                   reference_groups=3, repeats=3, residual_config={},
                   overhead_model="qwen3-4b", overhead_micro_batches=16, overhead_micro_batch_size=4,
                   overhead_prompt_len=512, overhead_response_len=3584, overhead_repeats=3, overhead_config={})

    @classmethod
    def smoke(cls):
        # rank 8 + oversample 8 < a group's positive tokens: the randomized range finder (QR) runs, and quickly
        return cls(capture_model="tiny-qwen3", capture_layers=3, capture_lengths=(9, 16, 5, 12),
                   residual_groups=8, residual_per_group=4, residual_length=192, residual_hidden=256,
                   reference_groups=2, repeats=1, residual_config={"rank": 8, "oversample": 8},
                   overhead_model="tiny-qwen3", overhead_micro_batches=4, overhead_micro_batch_size=4,
                   overhead_prompt_len=16, overhead_response_len=48, overhead_repeats=1,
                   overhead_config={"rank": 8, "oversample": 8})


class Checks:
    """Shared state of one run: device, shapes, budget, the residual inputs (built once for checks 2 and 3)."""

    def __init__(self, device: torch.device, shapes: Shapes, budget_s: float):
        self.device, self.shapes, self.budget_s = device, shapes, budget_s
        self.cuda = device.type == "cuda"
        self.start = time.perf_counter()
        self._residual_inputs = None
        self._fp32_result = None

    # ---- helpers -------------------------------------------------------------------------------------------
    def judged(self, value: bool) -> bool | None:
        return value if self.cuda else None

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def timed_ms(self, fn, repeats: int):
        """Median milliseconds of ``repeats`` calls after one warm-up call (CUDA events on GPU); last result."""
        out = fn()
        times = []
        for _ in range(repeats):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                out = fn()
                times.append(1e3 * (time.perf_counter() - t0))
        return statistics.median(times), out

    def extra_peak_gib(self, fn) -> float | None:
        """Peak allocated memory during ``fn()`` above what was allocated before it (CUDA only)."""
        if not self.cuda:
            return None
        self.sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn()
        self.sync()
        del out
        return (torch.cuda.max_memory_allocated() - base) / GIB

    def residual_inputs(self):
        """``(hidden (B, T, H) bf16, mask (B, T), uids, is_positive (B,))``, a decaying spectrum (bench_residuals)."""
        if self._residual_inputs is None:
            s = self.shapes
            hidden, mask, _, uids = make_inputs(s.residual_groups, s.residual_per_group, s.residual_length,
                                                s.residual_hidden, self.device, torch.bfloat16)
            counts = [POSITIVES_PER_GROUP[g % len(POSITIVES_PER_GROUP)] for g in range(s.residual_groups)]
            is_positive = torch.tensor([i % s.residual_per_group < counts[i // s.residual_per_group]
                                        for i in range(len(uids))], device=self.device)
            self._residual_inputs = hidden, mask, uids, is_positive
        return self._residual_inputs

    # ---- 1. capture ----------------------------------------------------------------------------------------
    def capture(self):
        s = self.shapes
        torch.manual_seed(0)  # the random init
        model = build_model(self.device, s.capture_model, num_hidden_layers=s.capture_layers, dtype=torch.bfloat16)
        gen = torch.Generator().manual_seed(1)
        seqs = [torch.randint(0, model.config.vocab_size, (n,), generator=gen) for n in s.capture_lengths]
        width = max(s.capture_lengths) + 8
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        attention = torch.zeros(len(seqs), width, dtype=torch.long)
        lefts = []
        for row, seq in enumerate(seqs):  # left padding (prompt side) and right padding (response side)
            left = (width - len(seq)) // 2
            ids[row, left : left + len(seq)] = seq
            attention[row, left : left + len(seq)] = 1
            lefts.append(left)
        padded = {"input_ids": ids, "attention_mask": attention,
                  "position_ids": (attention.cumsum(-1) - 1).clamp_min(0)}
        packed = {"input_ids": torch.cat(seqs)[None],
                  "position_ids": torch.cat([torch.arange(len(q)) for q in seqs])[None]}
        one_sequence = {"input_ids": packed["input_ids"], "position_ids": torch.arange(sum(map(len, seqs)))[None]}
        to_device = lambda inputs: {k: v.to(self.device) for k, v in inputs.items()}  # noqa: E731
        padded, packed, one_sequence = to_device(padded), to_device(packed), to_device(one_sequence)

        criteria, metrics = [], {"model": f"{s.capture_model} x {s.capture_layers} layers, bf16, sdpa",
                                 "sequence_lengths": list(s.capture_lengths)}
        for layer in (-1, -2):
            capture = HiddenStateCapture(model, layer)
            states = {}
            for name, inputs in (("padded", padded), ("packed", packed), ("packed, no restart", one_sequence)):
                with torch.no_grad():
                    with capture.armed():
                        want = model(**inputs, use_cache=False, output_hidden_states=True).hidden_states[layer]
                    (same_forward,) = capture.pop()
                    with capture.armed():
                        model(**inputs, use_cache=False)
                    (hook_only,) = capture.pop()
                states[name] = hook_only
                if name == "packed, no restart":
                    continue
                # real tokens only: what padding positions hold is up to the attention kernel
                real = inputs["attention_mask"].bool() if "attention_mask" in inputs else slice(None)
                same_forward, want, hook_only = same_forward[real], want[real], hook_only[real]
                scale = want.float().abs().max().item()
                identical = bool(torch.equal(same_forward, want))
                criteria.append(Criterion(f"{name}, layer {layer}: hook == hidden_states (same forward)",
                                          identical, "identical", identical))
                diff = (hook_only.float() - want.float()).abs().max().item() / scale
                criteria.append(Criterion(f"{name}, layer {layer}: hook-only forward vs hidden_states, max|d|/max|h|",
                                          diff, "<= 1e-2", diff <= 1e-2))

            def per_sequence_diff(packed_states):
                worst = 0.0
                offset = 0
                for row, n in enumerate(s.capture_lengths):
                    a = packed_states[0, offset : offset + n].float()
                    b = states["padded"][row, lefts[row] : lefts[row] + n].float()
                    worst = max(worst, ((a - b).abs().max() / b.abs().max()).item())
                    offset += n
                return worst

            isolated, leaked = per_sequence_diff(states["packed"]), per_sequence_diff(states["packed, no restart"])
            criteria.append(Criterion(f"packed vs padded rows, layer {layer}: max|d|/max|h|", isolated,
                                      "<= 0.05 and < 1/4 of the no-restart control",
                                      isolated <= 0.05 and isolated < leaked / 4))
            metrics[f"packed_without_restart_vs_padded_layer{layer}"] = leaked
        del model
        return criteria, metrics

    # ---- 2. residual math ----------------------------------------------------------------------------------
    def residual_math(self):
        s = self.shapes
        cfg = ResRLConfig(**s.residual_config)
        hidden, mask, uids, is_positive = self.residual_inputs()
        run = lambda: compute_residuals(hidden, mask, uids, is_positive, cfg)  # noqa: E731
        ms, result = self.timed_ms(run, s.repeats)
        peak = self.extra_peak_gib(run)
        self._fp32_result = result
        stats = result.stats

        worst, ranks_equal, compared = 0.0, True, []
        for g in range(s.residual_groups):
            rows = [i for i in range(len(uids)) if i // s.residual_per_group == g]
            pos = [i for i in rows if is_positive[i]]
            if len(pos) != 1 or stats.group_status.get(uids[rows[0]]) != "computed":
                continue
            neg = [i for i in rows if not is_positive[i]]
            reference, rank = exact_residuals_float64(hidden, mask, pos, neg, cfg)
            ranks_equal &= rank == stats.group_rank[uids[rows[0]]]
            for i, ref in zip(neg, reference):
                got = result.residual[i][mask[i].bool()].double()
                worst = max(worst, ((got - ref).abs().max() / ref.abs().max()).item())
            compared.append(uids[rows[0]])
            if len(compared) == s.reference_groups:
                break
        criteria = [
            Criterion("time, median (ms)", ms, "<= 50", self.judged(ms <= 50)),
            Criterion("extra peak memory (GiB)", peak, "<= 0.1", self.judged(peak is not None and peak <= 0.1)),
            Criterion(f"vs float64 exact SVD on {len(compared)} groups: max|d|/max|r|", worst, "<= 1e-3",
                      bool(compared) and worst <= 1e-3),
            Criterion("subspace ranks equal the exact ones", ranks_equal, "equal", bool(compared) and ranks_equal),
            Criterion("coverage (negatives of mixed groups with residuals)", stats.coverage, "== 1",
                      stats.coverage == 1.0),
        ]
        metrics = {"batch": list(hidden.shape), "groups": stats.groups, "mixed_groups": stats.mixed_groups,
                   "computed_groups": stats.computed_groups, "subsampled_groups": stats.subsampled_groups,
                   "rank_mean": stats.rank_mean, "reference_groups": compared,
                   "tokens": int(mask.sum()), "input_gib": hidden.numel() * hidden.element_size() / GIB}
        return criteria, metrics

    # ---- 3. residual math under autocast -------------------------------------------------------------------
    def residual_autocast(self):
        s = self.shapes
        cfg = ResRLConfig(**s.residual_config)
        hidden, mask, uids, is_positive = self.residual_inputs()
        if self._fp32_result is None:
            self._fp32_result = compute_residuals(hidden, mask, uids, is_positive, cfg)
        want = self._fp32_result

        def run():
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return compute_residuals(hidden, mask, uids, is_positive, cfg)

        ms, got = self.timed_ms(run, s.repeats)
        diff = ((got.residual - want.residual).abs().max() / want.residual.abs().max()).item()
        criteria = [
            Criterion("runs under bf16 autocast", True, "no error", True),
            Criterion("residual dtype", str(got.residual.dtype), "torch.float32", got.residual.dtype == torch.float32),
            Criterion("vs the call without autocast: max|d|/max|r|", diff, "<= 1e-3", diff <= 1e-3),
            Criterion("same tokens weighted", bool(torch.equal(got.has_residual, want.has_residual)), "identical",
                      bool(torch.equal(got.has_residual, want.has_residual))),
            Criterion("time, median (ms)", ms, "<= 50", self.judged(ms <= 50)),
        ]
        return criteria, {}

    # ---- 4. old-log-prob overhead --------------------------------------------------------------------------
    def old_log_prob_overhead(self):
        s = self.shapes
        self._residual_inputs = self._fp32_result = None  # free the residual batch before the 4B model
        release(self.cuda)
        torch.manual_seed(0)
        model = build_model(self.device, s.overhead_model)
        gen = torch.Generator().manual_seed(0)
        seq_len = s.overhead_prompt_len + s.overhead_response_len
        batches = [torch.randint(0, model.config.vocab_size, (s.overhead_micro_batch_size, seq_len),
                                 generator=gen).to(self.device) for _ in range(s.overhead_micro_batches)]
        total = s.overhead_micro_batches * s.overhead_micro_batch_size
        groups = [f"uid-{i // 4}" for i in range(total)]
        positive = torch.tensor([i % 4 < 2 for i in range(total)])
        resrl = ResRLConfig(**s.overhead_config)
        args = (model, batches, s.overhead_response_len)

        old_log_prob_pass(model, batches[:1], s.overhead_response_len, resrl, groups[: s.overhead_micro_batch_size],
                          positive, torch.bfloat16)  # warm-up of both paths
        base_t, with_t, base_peak, with_peak = [], [], 0, 0
        for _ in range(s.overhead_repeats):  # interleaved, so drift affects both alike
            t, peak, _ = old_log_prob_pass(*args, None, groups, positive, torch.bfloat16)
            base_t.append(t)
            base_peak = max(base_peak, peak)
            t, peak, stream = old_log_prob_pass(*args, resrl, groups, positive, torch.bfloat16)
            with_t.append(t)
            with_peak = max(with_peak, peak)
        base, with_resrl = statistics.median(base_t), statistics.median(with_t)
        extra_pct = 100 * (with_resrl / base - 1)
        extra_peak = (with_peak - base_peak) / GIB if self.cuda else None
        stats = stream.stats
        criteria = [
            Criterion("extra time (%)", extra_pct, "<= 0.5", self.judged(extra_pct <= 0.5)),
            Criterion("extra peak memory per micro-batch (GiB)", extra_peak, "<= 0.1",
                      self.judged(extra_peak is not None and extra_peak <= 0.1)),
            Criterion("groups with residuals / groups", f"{stats.computed_groups}/{len(set(groups))}", "all",
                      stats.computed_groups == len(set(groups)) and stats.coverage == 1.0),
        ]
        metrics = {"model": f"{s.overhead_model}, bf16 autocast, sdpa", "micro_batches": s.overhead_micro_batches,
                   "micro_batch": [s.overhead_micro_batch_size, seq_len], "response_len": s.overhead_response_len,
                   "repeats": s.overhead_repeats, "old_log_prob_s": base, "with_resrl_s": with_resrl,
                   "residual_math_s": stream.seconds,
                   "peak_per_micro_batch_gib": base_peak / GIB if self.cuda else None,
                   "peak_with_resrl_gib": with_peak / GIB if self.cuda else None}
        del model, batches
        return criteria, metrics

    def estimate_s(self, name: str) -> float:
        """Conservative seconds a check takes on one H100/H200 (forward of 4 x 4608 tokens: 0.43 s); CPU: 10."""
        if not self.cuda:
            return 10.0
        s = self.shapes
        forwards = (1 + 2 * s.overhead_repeats * s.overhead_micro_batches) * 0.45
        return {"capture": 30.0, "residual_math": 60.0, "residual_autocast": 15.0,
                "old_log_prob_overhead": 40.0 + forwards}[name]


CHECKS = ("capture", "residual_math", "residual_autocast", "old_log_prob_overhead")


def exact_residuals_float64(hidden, mask, pos_rows, neg_rows, cfg: ResRLConfig):
    """Reference residuals of one group in float64: full SVD of its (not sub-sampled) positive tokens.

    Returns ``([residual (n_i,) per negative row], rank)``.
    """
    width = hidden.shape[-1]
    norm = lambda x: F.layer_norm(x.double(), (width,), eps=cfg.layer_norm_eps)  # noqa: E731
    x = norm(torch.cat([hidden[i][mask[i].bool()] for i in pos_rows]))
    mean = x.mean(dim=0)
    _, sigma, vh = torch.linalg.svd(x - mean, full_matrices=False)
    rank = min(cfg.rank, x.shape[0] - 1, int((sigma > cfg.rank_rtol * sigma[0]).sum()))
    basis = vh[:rank].T
    residuals = []
    for i in neg_rows:
        c = norm(hidden[i][mask[i].bool()]) - mean
        residuals.append((c - (c @ basis) @ basis.T).pow(2).sum(dim=-1) / width)
    return residuals, rank


@contextlib.contextmanager
def cuda_linalg_dtype_rules():
    """Make ``torch.linalg.qr/svd/eigh`` refuse bf16/fp16 input on CPU, as their CUDA kernels do.

    CPU autocast casts these ops to fp32 silently; on CUDA, e.g. QR raises ``"geqrf_cuda" not implemented for
    'BFloat16'``. With this, a CPU run under autocast fails where a GPU run would.
    """
    originals = {name: getattr(torch.linalg, name) for name in ("qr", "svd", "eigh")}

    def strict(name, fn):
        def call(a, *args, **kwargs):
            if a.dtype in (torch.bfloat16, torch.float16):
                raise RuntimeError(f"torch.linalg.{name} got {a.dtype} input, which CUDA does not implement "
                                   "(CPU emulation of CUDA's dtype support)")
            return fn(a, *args, **kwargs)
        return call

    for name, fn in originals.items():
        setattr(torch.linalg, name, strict(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch.linalg, name, fn)


def release(cuda: bool):
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def status_of(criteria: list[Criterion]) -> str:
    return "FAIL" if any(c.ok is False for c in criteria) else "PASS"


def run_checks(checks: Checks, names, on_result=lambda results: None) -> dict:
    """Run ``names`` in order; ``on_result(results so far)`` after each (the JSON survives a killed run)."""
    results = {}
    for name in names:
        elapsed = time.perf_counter() - checks.start
        if elapsed + checks.estimate_s(name) > checks.budget_s:
            results[name] = {"status": "SKIPPED", "error": f"budget: {elapsed:.0f} s used, about "
                             f"{checks.estimate_s(name):.0f} s needed, --budget-s {checks.budget_s:.0f}",
                             "criteria": [], "metrics": {}, "seconds": 0.0}
            on_result(results)
            continue
        t0 = time.perf_counter()
        try:
            criteria, metrics = getattr(checks, name)()
            entry = {"status": status_of(criteria), "error": None, "criteria": [asdict(c) for c in criteria],
                     "metrics": metrics}
        except Exception as exc:  # record and go on: one device loan must answer every check
            entry = {"status": "ERROR", "error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc(limit=8), "criteria": [], "metrics": {}}
        entry["seconds"] = time.perf_counter() - t0
        results[name] = entry
        release(checks.cuda)
        print_check(name, entry)
        on_result(results)
    return results


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def print_check(name: str, entry: dict) -> None:
    print(f"\n{name}: {entry['status']} ({entry['seconds']:.1f} s)", flush=True)
    if entry["error"]:
        print(f"  {entry['error']}")
    for c in entry["criteria"]:
        result = "-" if c["ok"] is None else ("PASS" if c["ok"] else "FAIL")
        print(f"  {c['name']:<72} {fmt(c['value']):>12}  goal {c['goal']:<16} {result}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny shapes (goals on time and memory not judged)")
    p.add_argument("--out", default="benchmarks/results/gpu_check.json")
    p.add_argument("--budget-s", type=float, default=450.0, help="skip checks that would end after this (seconds)")
    p.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    args = p.parse_args(argv)

    if args.smoke:
        device, shapes = torch.device("cpu"), Shapes.smoke()
    elif torch.cuda.is_available():
        device, shapes = torch.device("cuda"), Shapes.gpu()
    else:
        p.error("no CUDA device: run with --smoke for the CPU miniature")
    checks = Checks(device, shapes, args.budget_s)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "mode": "smoke" if args.smoke else "gpu",
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"cpu ({torch.get_num_threads()} threads)"),
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "budget_s": args.budget_s, "shapes": asdict(shapes),
    }

    def write(results):
        verl_modules = sorted(m for m in sys.modules if m == "verl" or m.startswith("verl."))
        report.update(elapsed_s=time.perf_counter() - checks.start, verl_modules_imported=verl_modules,
                      checks=results)
        out.write_text(json.dumps(report, indent=2) + "\n")

    write({})
    with cuda_linalg_dtype_rules() if device.type == "cpu" else contextlib.nullcontext():
        results = run_checks(checks, [n for n in CHECKS if n in args.only], write)
    write(results)
    verl_modules = report["verl_modules_imported"]
    summary = ", ".join(f"{name} {entry['status']}" for name, entry in results.items())
    print(f"\n{summary}; {report['elapsed_s']:.0f} s; veRL imported: {verl_modules or 'no'}; wrote {out}")
    return 1 if verl_modules or any(e["status"] in ("FAIL", "ERROR") for e in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
