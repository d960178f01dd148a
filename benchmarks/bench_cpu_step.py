"""Wall time of veRL's real main_ppo on CPU for the tiny GRPO task (verl_resrl.cpu backend).

Prints and writes to JSON: time from launch to the end of step 1 ("time to first step", including Ray start,
worker start-up and the first, warm-up step), and the median step time (``timing_s/step`` of steps 2..N).

    python benchmarks/bench_cpu_step.py [--steps 5] [--n-gpus 1] [--out benchmarks/results/cpu_step.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

from verl_resrl.cpu.launch import tiny_grpo_overrides
from verl_resrl.cpu.runs import run_cpu_main_ppo
from verl_resrl.cpu.tiny_assets import build_tiny_assets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--n-gpus", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cpu_step.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        assets = build_tiny_assets(os.path.join(tmp, "assets"))
        overrides = tiny_grpo_overrides(assets, steps=args.steps, n_gpus=args.n_gpus) + [
            f"trainer.default_local_dir={tmp}/ckpt"
        ]
        start = time.time()
        result = run_cpu_main_ppo(overrides, n_gpus=args.n_gpus, cwd=tmp)
    if result.returncode != 0:
        raise SystemExit(f"main_ppo failed:\n{result.output[-5000:]}")
    steps = result.steps
    step_times = [steps[s]["timing_s/step"] for s in sorted(steps)]
    # first step ends when its metrics line is printed; Ray prefixes no timestamps, so derive it from the total
    tail = sum(step_times[1:])
    report = {
        "benchmark": "cpu_main_ppo_tiny_grpo",
        "n_gpus": args.n_gpus,
        "steps": args.steps,
        "wall_total_s": round(result.seconds, 2),
        "wall_to_first_step_end_s": round(result.seconds - tail, 2),
        "first_step_s": round(step_times[0], 3),
        "median_step_s": round(statistics.median(step_times[1:]), 3) if len(step_times) > 1 else None,
        "step_times_s": [round(t, 3) for t in step_times],
        "gen_s_median": round(statistics.median(steps[s]["timing_s/gen"] for s in sorted(steps)[1:]), 3)
        if len(steps) > 1
        else None,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "launched_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
