"""Wall time of veRL's real main_ppo on CPU (verl_resrl.cpu backend): generation and step time of the ``hf``
rollout, batched vs unbatched.

Default configuration: the ~1 M-parameter Qwen2 of :mod:`verl_resrl.cpu.tiny_assets` (``model_size="1m"``:
hidden 128, 4 layers), 16 prompts x 8 samples (``rollout.n=8``), 32-token responses, GRPO, one trainer rank.
Each variant is a ``main_ppo`` run of ``--steps`` steps:

* ``batched`` — the hf rollout server's defaults (collection window, batch limit ``rollout.max_num_seqs``);
* ``batched_separate_puts`` — batched, but the V1 agent loop's TransferQueue writes are not merged
  (``VERL_RESRL_COALESCE_PUTS=0``, see :mod:`verl_resrl.cpu.coalesced_puts`);
* ``unbatched`` — ``VERL_RESRL_HF_MAX_BATCH=1``: one request at a time.

With ``--repeats R`` every variant runs R times, interleaved (A B C A B C ...) so that a slow spell of the shared
machine falls on all of them; medians are pooled over the runs. Per variant: time to the end of step 1 (Ray
start, worker start-up, warm-up step), and medians over steps 2..N of ``timing_s/step``, ``timing_s/gen`` and the
other ``timing_s/*`` phases; of the rollout server's own time per round (``server_decode``: time spent
decoding; ``server_busy_span``: first request in to last token out — the rest of ``gen`` is veRL's agent loop,
reward and transfer work outside the server); plus the torch thread counts the rollout server and the trainer
report. Prints a table and writes JSON (default ``benchmarks/results/cpu_step.json``).

    python benchmarks/bench_cpu_step.py [--steps 5] [--repeats 1]
        [--variants batched batched_separate_puts unbatched] [--rollout-threads N] [--model-size 1m]
        [--prompts 16] [--n 8] [--response-length 32] [--log-dir DIR] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import tempfile
import time

from verl_resrl.cpu.coalesced_puts import COALESCE_ENV
from verl_resrl.cpu.hf_rollout import BATCH_WINDOW_ENV, MAX_BATCH_ENV, THREADS_ENV
from verl_resrl.cpu.launch import tiny_grpo_overrides
from verl_resrl.cpu.runs import run_cpu_main_ppo
from verl_resrl.cpu.tiny_assets import MODEL_SIZES, build_tiny_assets

VARIANTS = {"batched": {}, "unbatched": {MAX_BATCH_ENV: "1"}, "batched_separate_puts": {COALESCE_ENV: "0"}}
PHASES = ("step", "gen", "old_log_prob", "ref", "adv", "update_actor", "update_weights")
_THREADS_LINE = re.compile(r"\[verl_resrl hf\] (rollout server \d+|trainer rank \d+): torch threads (\d+)")
# printed by the rollout server at each weight sync about the previous round (= the previous step's generation)
_ROUND_LINE = re.compile(r"\[verl_resrl hf\] rollout server 0 round: requests (\d+) in (\d+) batches, decode_s "
                         r"([\d.]+), first_request_to_last_token_s ([\d.]+)")


def _median(values):
    return round(statistics.median(values), 3) if values else None


def run_variant(name: str, env: dict[str, str], args, assets, tmp: str, repeat: int) -> dict:
    """One ``main_ppo`` run of a variant: its timings, with the values of steps 2..N per phase."""
    overrides = tiny_grpo_overrides(
        assets,
        steps=args.steps,
        n_gpus=args.n_gpus,
        n_prompts=args.prompts,
        group_size=args.n,
        response_length=args.response_length,
    ) + [f"trainer.default_local_dir={tmp}/ckpt_{name}_{repeat}", *args.override]
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # run_cpu_main_ppo passes os.environ on; Ray hands it to its actors
    try:
        start = time.time()
        result = run_cpu_main_ppo(overrides, n_gpus=args.n_gpus, cwd=tmp, timeout=args.timeout)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)
        suffix = f"_{repeat}" if args.repeats > 1 else ""
        with open(os.path.join(args.log_dir, f"{name}{suffix}.log"), "w") as f:
            f.write(result.output)
    if result.returncode != 0:
        raise SystemExit(f"main_ppo ({name}) failed:\n{result.output[-5000:]}")
    steps = result.steps
    order = sorted(steps)
    later = order[1:]
    step_times = [steps[s]["timing_s/step"] for s in order]
    rounds = _ROUND_LINE.findall(result.output)[1:]  # skip step 1's round (warm-up), like the steps
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
        "wall_total_s": round(result.seconds, 2),
        # the first step ends when its metrics line is printed; Ray prefixes no timestamps: derive it from the total
        "wall_to_first_step_end_s": round(result.seconds - sum(step_times[1:]), 2),
        "step_times_s": [round(t, 3) for t in step_times],
        "gen_times_s": [round(steps[s].get("timing_s/gen", float("nan")), 3) for s in order],
        "later_steps": {
            **{phase: [steps[s][f"timing_s/{phase}"] for s in later if f"timing_s/{phase}" in steps[s]]
               for phase in PHASES},
            "server_decode": [float(r[2]) for r in rounds],
            "server_busy_span": [float(r[3]) for r in rounds],
        },
        "server_batches_per_round": sorted({int(r[1]) for r in rounds}),
        "torch_threads": {who: int(n) for who, n in _THREADS_LINE.findall(result.output)},
    }


def summarize(env: dict[str, str], runs: list[dict]) -> dict:
    """Medians over steps 2..N of all runs of a variant (each run's own numbers kept under ``runs``)."""
    report = {"env": env}
    for key in (*PHASES, "server_decode", "server_busy_span"):
        report[f"median_{key}_s"] = _median([v for run in runs for v in run["later_steps"][key]])
    report["wall_to_first_step_end_s"] = _median([run["wall_to_first_step_end_s"] for run in runs])
    report["server_batches_per_round"] = sorted({b for run in runs for b in run["server_batches_per_round"]})
    report["torch_threads"] = runs[0]["torch_threads"]
    report["runs"] = [
        {**{k: v for k, v in run.items() if k != "later_steps"},
         "median_step_s": _median(run["later_steps"]["step"]), "median_gen_s": _median(run["later_steps"]["gen"]),
         "median_server_decode_s": _median(run["later_steps"]["server_decode"])}
        for run in runs
    ]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--n-gpus", type=int, default=1)
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="1m")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8, help="responses per prompt (rollout.n)")
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["batched", "batched_separate_puts", "unbatched"])
    parser.add_argument("--rollout-threads", type=int, help=f"sets {THREADS_ENV} (default: the server's default)")
    parser.add_argument("--batch-window", type=float, help=f"sets {BATCH_WINDOW_ENV}")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per variant, interleaved (A B A B ...), medians pooled over all runs")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per main_ppo run")
    parser.add_argument("--log-dir", help="write each variant's main_ppo output to LOG_DIR/<variant>.log")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra Hydra override for every variant (repeatable)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cpu_step.json"))
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2 (step 1 is warm-up)")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    common = {}
    if args.rollout_threads is not None:
        common[THREADS_ENV] = str(args.rollout_threads)
    if args.batch_window is not None:
        common[BATCH_WINDOW_ENV] = str(args.batch_window)
    runs = {name: [] for name in args.variants}
    with tempfile.TemporaryDirectory() as tmp:
        assets = build_tiny_assets(os.path.join(tmp, "assets"), model_size=args.model_size)
        for repeat in range(args.repeats):  # interleaved, so that a slow spell of a shared machine hits every variant
            for name in args.variants:
                runs[name].append(run_variant(name, {**common, **VARIANTS[name]}, args, assets, tmp, repeat))
    results = {name: summarize({**common, **VARIANTS[name]}, variant_runs) for name, variant_runs in runs.items()}

    report = {
        "benchmark": "cpu_main_ppo_grpo_hf_rollout_batching",
        "config": {
            "model_size": args.model_size,
            "prompts": args.prompts,
            "n": args.n,
            "response_length": args.response_length,
            "n_gpus": args.n_gpus,
            "steps": args.steps,
            "repeats": args.repeats,
            "median_over": f"steps 2..{args.steps} of {args.repeats} run(s) per variant",
        },
        "variants": results,
        "cpu_count": os.cpu_count(),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "note": "shared 2-core machine: other processes may run concurrently, timings are noisy",
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)

    cols = ["first_step_end", "step", "gen", "server_decode", "server_busy_span", "old_log_prob", "update_actor"]
    print(f"\n{'variant':<10}" + "".join(f"{c + ' s':>18}" for c in cols) + "   torch threads")
    for name, r in results.items():
        cells = [r["wall_to_first_step_end_s"]] + [r[f"median_{c}_s"] for c in cols[1:]]
        print(f"{name:<10}" + "".join(f"{'-' if v is None else v:>18}" for v in cells) + f"   {r['torch_threads']}")
    if args.repeats > 1:
        for name, r in results.items():
            per_run = ", ".join(f"{run['median_step_s']}/{run['median_gen_s']}" for run in r["runs"])
            print(f"{name}: step/gen medians per run: {per_run}")
    print(f"(medians over steps 2..{args.steps} of {args.repeats} run(s) per variant; JSON: {args.out})")


if __name__ == "__main__":
    main()
