"""The quickstart demo: take the packaged starting policy, train it with ResRL through veRL's real ``main_ppo``
on CPU, and compare pass@k on the held-out problems before and after.

    python -m verl_resrl.demo.quickstart [--out-dir outputs/quickstart] [--steps 30] [--estimator resrl] [--seed 0]

The starting policy is the one shipped with the package (:func:`verl_resrl.demo.policy.starting_policy`, its
sha256 checked), so the "before" row is computed from the same weights on every machine. ``--build-policy``
builds one on this machine instead (its weights depend on the CPU). ``--seed`` seeds the RL run (data order,
rollouts, ResRL's subspaces); the evaluation's sampling seed is ``--eval-seed``, fixed by default, so runs with
different ``--seed`` share their "before" row.

The training configuration is the one the learning study (``benchmarks/learning.py``, BENCHMARKS.md section 1)
selected for ResRL on this task: lr 3e-5 with 4 mini-batch updates per step (the paper's ratio) and correct
responses' advantages unscaled (lambda = 1.0; ``--pos-weight 0.1`` is the paper's default, which the study found
worse at this scale). The other estimators get the same lr and mini-batches, so ``--estimator grpo`` is a fair
comparison.

Writes ``OUT/policy`` (a copy of the starting policy + manifest), ``OUT/data`` (parquet),
``OUT/run_<estimator>/train.log`` (the whole veRL output) and its checkpoints, ``OUT/before.json`` /
``OUT/after_<estimator>.json`` and ``OUT/summary.md``. A second run in the same ``--out-dir`` trains from the
start again (no resume) and replaces the first run's results; use one ``--out-dir`` per seed to keep each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from verl_resrl.core.config import ResRLConfig
from verl_resrl.demo.evaluate_policy import BATCH_PROMPTS_128, evaluate_model_dir, summary_table
from verl_resrl.demo.policy import PolicyConfig, build_policy, starting_policy
from verl_resrl.demo.rl import ESTIMATORS, RLSettings, demo_overrides, hf_checkpoint, train, write_data

# The learning study's selected ResRL configuration (dev split): see the module docstring.
STUDY_LR = 3e-5
STUDY_MINI_BATCHES = 4
STUDY_POS_WEIGHT = 1.0
EVAL_BATCH_PROMPTS = BATCH_PROMPTS_128  # as the study evaluates


def run_config(args) -> tuple[RLSettings, list[str]]:
    """The RL run's settings and the Hydra overrides added to :func:`demo_overrides` for ``args``."""
    settings = RLSettings(steps=args.steps, seed=args.seed, lr=args.lr, mini_batches=args.mini_batches)
    if args.estimator != "resrl":
        return settings, []
    ResRLConfig(pos_weight=args.pos_weight)  # a bad lambda fails here, naming the setting, not inside main_ppo
    return settings, [f"+algorithm.resrl.pos_weight={args.pos_weight}"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(os.environ.get("OUT_DIR", "outputs/quickstart")))
    parser.add_argument("--steps", type=int, default=int(os.environ.get("STEPS", "30")))
    parser.add_argument("--estimator", choices=ESTIMATORS, default=os.environ.get("ESTIMATOR", "resrl"))
    parser.add_argument("--lr", type=float, default=STUDY_LR)
    parser.add_argument("--mini-batches", type=int, default=STUDY_MINI_BATCHES,
                        help="actor updates per step (the step's 16 prompts split into this many mini-batches)")
    parser.add_argument("--pos-weight", type=float, default=STUDY_POS_WEIGHT,
                        help="ResRL's lambda on correct responses' advantages (the paper's default is 0.1)")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0, help="the RL run's seed")
    parser.add_argument("--eval-seed", type=int, default=0, help="the evaluations' sampling seed")
    parser.add_argument("--build-policy", action="store_true",
                        help="build the starting policy on this machine instead of using the packaged one")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed for the RL run")
    parser.add_argument("--verbose", action="store_true", help="echo veRL's whole output, not one line per step")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings, extra = run_config(args)  # validates before anything is built
    out = args.out_dir.resolve()
    start = time.time()

    print(f"== 1/4 starting policy ({out / 'policy'})", flush=True)
    if args.build_policy:
        manifest = build_policy(out / "policy", PolicyConfig(), log=lambda m: print(m, flush=True))
    else:
        _, manifest = starting_policy(out / "policy")
    policy_sha = manifest["sha256"]["model.safetensors"]
    print(f"   {'built here' if args.build_policy else 'packaged, checksums verified'}: weights sha256 {policy_sha}",
          flush=True)
    train_file, val_file = write_data(out / "data", n_test=args.n_test)

    print(f"== 2/4 evaluating the starting policy: {args.k} samples x {args.n_test} held-out problems", flush=True)
    before_path = out / "before.json"
    before = json.loads(before_path.read_text()) if before_path.is_file() else {}
    if (before.get("policy_sha256"), before.get("k"), before.get("problems"), before.get("seed"),
            before.get("batch_prompts")) != (policy_sha, args.k, args.n_test, args.eval_seed, EVAL_BATCH_PROMPTS):
        before = evaluate_model_dir(out / "policy", k=args.k, n_test=args.n_test, seed=args.eval_seed,
                                    batch_prompts=EVAL_BATCH_PROMPTS)
        before.update(policy_sha256=policy_sha, batch_prompts=EVAL_BATCH_PROMPTS)
        before_path.write_text(json.dumps(before, indent=1))
    else:
        print(f"   reusing {before_path}", flush=True)

    run_dir = out / f"run_{args.estimator}"
    print(f"== 3/4 {args.estimator} through veRL main_ppo on CPU: {args.steps} steps x {settings.prompts_per_step} "
          f"prompts x {settings.n} responses, lr {settings.lr:g}, {settings.mini_batches} mini-batches per step"
          + (f", lambda {args.pos_weight:g}" if extra else "") + f" (log: {run_dir / 'train.log'})", flush=True)
    overrides = [*demo_overrides(out / "policy", train_file, val_file, run_dir, args.estimator, settings), *extra]
    result = train(overrides, run_dir, args.steps, timeout=args.timeout,
                   echo=lambda m: print(m, flush=True), verbose=args.verbose)
    if result.returncode != 0:
        print(f"main_ppo failed (exit {result.returncode}); last lines of {result.log_path}:", file=sys.stderr)
        print("".join(Path(result.log_path).read_text().splitlines(keepends=True)[-40:]), file=sys.stderr)
        return 1
    step_times = [m["timing_s/step"] for s, m in sorted(result.steps.items()) if s > 1 and "timing_s/step" in m]

    print("== 4/4 evaluating the trained policy", flush=True)
    after = evaluate_model_dir(hf_checkpoint(run_dir, args.steps), k=args.k, n_test=args.n_test, seed=args.eval_seed,
                               batch_prompts=EVAL_BATCH_PROMPTS)
    after.update(policy_sha256=policy_sha, rl_seed=args.seed, steps=args.steps, estimator=args.estimator,
                 train_seconds=round(result.seconds, 1), batch_prompts=EVAL_BATCH_PROMPTS)
    (out / f"after_{args.estimator}.json").write_text(json.dumps(after, indent=1))

    table = summary_table({"before (starting policy)": before, f"after {args.steps} {args.estimator} steps": after})
    lines = [
        f"Held-out problems: {args.n_test}, {args.k} samples each at temperature 1.0 (percent; distinct answers "
        f"= mean distinct final answers per problem).",
        "",
        table,
        "",
        f"Starting policy: weights sha256 {policy_sha[:12]}… ({'built here' if args.build_policy else 'packaged'}); "
        f"RL seed {args.seed}, evaluation seed {args.eval_seed}.",
        f"RL run: {result.seconds:.0f} s wall ({args.steps} steps"
        + (f", median {sorted(step_times)[len(step_times) // 2]:.2f} s/step after the first" if step_times else "")
        + f"); total {time.time() - start:.0f} s.",
        f"Logs: {result.log_path}",
        f"Trained model (HF): {hf_checkpoint(run_dir, args.steps)}",
    ]
    summary = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(summary)
    print(summary, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
