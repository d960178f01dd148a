"""Learning benchmark on the CPU demo task: GRPO vs NSR vs W-REINFORCE vs ResRL.

Every method starts from the same policy (:mod:`verl_resrl.demo.policy`, built or reused), trains through
veRL's real ``main_ppo`` on CPU with the same budget and settings (:class:`verl_resrl.demo.rl.RLSettings`:
steps, prompts per step, n = 8 responses, learning rate, temperature 1.0), for each seed; the seed sets the
data order, the rollout sampling and ResRL's subspace sampling. Each trained checkpoint is evaluated on the
held-out problems (k = 16 samples at temperature 1.0): Avg@16, pass@k for k = 1..16, distinct final answers
per problem, no-answer rate. The starting policy is evaluated the same way.

Writes the results to ``--out-dir`` (default ``benchmarks/results/learning``, meant to be committed):

* ``learning.json``  -- settings, machine, wall times, per-run metrics and step metrics, aggregate mean/std;
* ``learning.md``    -- markdown table, mean ± std over seeds;
* ``pass_at_k.png``  -- pass@k curves (mean over seeds, ±std band), one line per method + the start;
and everything else to ``--work-dir`` (default ``outputs/learning``, git-ignored): ``policy/`` (the starting
policy), ``data/``, ``runs/<method>_seed<s>/`` (``train.log``: the whole veRL output, ``ckpt/``, ``metrics.json``).

    python benchmarks/learning.py                     # the full benchmark: 4 methods x 3 seeds
    python benchmarks/learning.py --quick             # smoke run: resrl, 1 seed, 3 steps, 32 problems
    python benchmarks/learning.py --methods grpo resrl --seeds 0 1 --steps 20

Budget (full): 12 runs x (~70 s start-up + STEPS x step time + ~20 s evaluation); the default STEPS is chosen
so that the whole benchmark fits in about two hours on a 2-core machine (see BENCHMARKS.md for the measured
numbers). Runs are sequential (one ``main_ppo`` at a time). Finished runs are reused when their metrics file
exists (``--fresh`` to redo them), so an interrupted benchmark can resume.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from verl_resrl.demo.evaluate_policy import evaluate_model_dir
from verl_resrl.demo.policy import PolicyConfig, build_policy
from verl_resrl.demo.rl import ESTIMATORS, RLSettings, demo_overrides, hf_checkpoint, train, write_data

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "learning"
DEFAULT_WORK = REPO / "outputs" / "learning"
START = "start"


def run_one(method: str, seed: int, settings: RLSettings, args, policy_dir: Path, data: tuple[str, str],
            policy_sha: str) -> dict:
    run_dir = args.work_dir / "runs" / f"{method}_seed{seed}"
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file() and not args.fresh:
        record = json.loads(metrics_path.read_text())
        if record.get("settings") == asdict(settings) and record.get("policy_sha256") == policy_sha \
                and record.get("n_test") == args.n_test and record.get("eval_seed") == args.eval_seed:
            print(f"[learning] {method} seed {seed}: reusing {metrics_path}", flush=True)
            return record
    print(f"[learning] {method} seed {seed}: training {settings.steps} steps (log: {run_dir / 'train.log'})",
          flush=True)
    overrides = demo_overrides(policy_dir, data[0], data[1], run_dir, method, settings)
    result = train(overrides, run_dir, settings.steps, timeout=args.run_timeout,
                   echo=(lambda m: print(m, flush=True)) if args.progress else (lambda m: None))
    if result.returncode != 0:
        raise RuntimeError(f"{method} seed {seed}: main_ppo exit {result.returncode}, see {result.log_path}")
    start = time.time()
    metrics = evaluate_model_dir(hf_checkpoint(run_dir, settings.steps), k=args.k, n_test=args.n_test,
                                 seed=args.eval_seed)
    record = {
        "method": method, "seed": seed, "settings": asdict(settings), "policy_sha256": policy_sha,
        "n_test": args.n_test, "eval_seed": args.eval_seed, "train_seconds": round(result.seconds, 1),
        "eval_seconds": round(time.time() - start, 1), "metrics": metrics,
        "steps": {str(s): {k: v for k, v in m.items() if k.startswith(("critic/score", "timing_s/step", "resrl/",
                                                                            "actor/entropy", "actor/pg_loss",
                                                                            "response_length/mean"))}
                  for s, m in sorted(result.steps.items())},
    }
    metrics_path.write_text(json.dumps(record, indent=1))
    k = metrics["k"]
    print(f"[learning] {method} seed {seed}: avg@{k} {100 * metrics[f'avg@{k}']:.1f}, pass@1 "
          f"{100 * metrics['pass@1']:.1f}, pass@{k} {100 * metrics[f'pass@{k}']:.1f}, distinct "
          f"{metrics['distinct_answers']:.2f} ({result.seconds:.0f} s train)", flush=True)
    return record


def aggregate(records: list[dict], k: int) -> dict:
    """mean and std (over seeds; std 0 for one seed) of each scalar metric."""
    keys = [f"avg@{k}", *[f"pass@{j}" for j in range(1, k + 1)], "distinct_answers", "no_answer_rate"]
    out = {}
    for key in keys:
        values = [r["metrics"][key] for r in records]
        out[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "values": values}
    return out


def table(summary: dict[str, dict], k: int, seeds: dict[str, int]) -> str:
    ks = [j for j in (1, 2, 4, 8, 16) if j <= k]
    header = ["method", "seeds", f"Avg@{k}", *[f"pass@{j}" for j in ks], "distinct answers", "no answer"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def pct(cell):
        return f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}"

    for name, agg in summary.items():
        cells = [name, str(seeds[name]) if seeds[name] else "-", pct(agg[f"avg@{k}"]), *[pct(agg[f"pass@{j}"]) for j in ks],
                 f"{agg['distinct_answers']['mean']:.2f} ± {agg['distinct_answers']['std']:.2f}",
                 pct(agg["no_answer_rate"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


TRAINING_KEYS = {  # step metric -> column of the training table
    "critic/score/mean": "train reward",
    "actor/entropy": "entropy",
    "response_length/mean": "response length",
    "resrl/neg_weight_mean": "ResRL neg. weight mean",
    "resrl/neg_weight_p50": "neg. weight p50",
    "resrl/rank_mean": "subspace rank",
    "resrl/residual_mean": "residual mean",
    "resrl/coverage": "coverage",
}


def training_summary(records: list[dict], last: int = 10) -> dict[str, float]:
    """Each training metric averaged over the last ``last`` steps of a run, then over the runs (seeds)."""
    out = {}
    for key in TRAINING_KEYS:
        per_run = []
        for record in records:
            steps = sorted(record.get("steps", {}), key=int)[-last:]
            values = [record["steps"][s][key] for s in steps if key in record["steps"][s]]
            if values:
                per_run.append(statistics.fmean(values))
        if per_run:
            out[key] = statistics.fmean(per_run)
    return out


def training_table(training: dict[str, dict[str, float]], last: int = 10) -> str:
    keys = [k for k in TRAINING_KEYS if any(k in t for t in training.values())]
    lines = [f"Training, mean of the last {last} steps (then over seeds):", "",
             "| method | " + " | ".join(TRAINING_KEYS[k] for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for name, values in training.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[k]:.3f}" if k in values else "-" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, dict], k: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = list(range(1, k + 1))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, agg in summary.items():
        mean = [100 * agg[f"pass@{j}"]["mean"] for j in ks]
        std = [100 * agg[f"pass@{j}"]["std"] for j in ks]
        style = {"color": "black", "linestyle": "--"} if name == START else {}
        ax.plot(ks, mean, marker="o", markersize=3, label=name, **style)
        ax.fill_between(ks, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.15,
                        **({"color": "black"} if name == START else {}))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k on held-out problems (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", choices=ESTIMATORS, default=list(ESTIMATORS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=int(os.environ.get("STEPS", "50")))
    parser.add_argument("--lr", type=float, default=RLSettings.lr)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=128)
    parser.add_argument("--eval-seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help="policy, data, runs (git-ignored)")
    parser.add_argument("--policy-dir", type=Path, default=None, help="default: WORK/policy")
    parser.add_argument("--run-timeout", type=float, default=1800)
    parser.add_argument("--fresh", action="store_true", help="retrain runs whose metrics exist")
    parser.add_argument("--progress", action="store_true", help="one line per training step")
    parser.add_argument("--quick", action="store_true", help="smoke run: resrl, seed 0, 3 steps, 32 problems")
    args = parser.parse_args(argv)
    if args.quick:
        args.methods, args.seeds, args.steps, args.n_test = ["resrl"], [0], 3, 32
        if args.out_dir == DEFAULT_OUT:
            args.out_dir = DEFAULT_WORK.parent / "learning_quick"
        if args.work_dir == DEFAULT_WORK:
            args.work_dir = DEFAULT_WORK.parent / "learning_quick"
    args.out_dir = args.out_dir.resolve()
    args.work_dir = args.work_dir.resolve()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    wall = time.time()

    policy_dir = (args.policy_dir or args.work_dir / "policy").resolve()
    manifest = build_policy(policy_dir, PolicyConfig(), log=lambda m: print(m, flush=True))
    data = write_data(args.work_dir / "data", n_test=args.n_test)
    start_metrics = evaluate_model_dir(policy_dir, k=args.k, n_test=args.n_test, seed=args.eval_seed)

    base = RLSettings(steps=args.steps, lr=args.lr)
    records = {START: [{"metrics": start_metrics}]}
    for method in args.methods:
        for seed in args.seeds:
            records.setdefault(method, []).append(run_one(method, seed, replace(base, seed=seed), args, policy_dir,
                                                          data, manifest["sha256"]["model.safetensors"]))
    summary = {name: aggregate(recs, args.k) for name, recs in records.items()}
    training = {name: training_summary(recs) for name, recs in records.items() if name != START}
    seeds = {name: len(recs) if name != START else 0 for name, recs in records.items()}
    result = {
        "benchmark": "learning_cpu_demo",
        "command": "python " + " ".join([Path(sys.argv[0]).name if argv is None else "benchmarks/learning.py",
                                         *(sys.argv[1:] if argv is None else argv)]),
        "settings": {**asdict(base), "seeds": args.seeds, "methods": args.methods, "k": args.k,
                     "n_test": args.n_test, "eval_temperature": 1.0, "eval_seed": args.eval_seed},
        "policy": {"dir": str(policy_dir), "sha256": manifest["sha256"].get("model.safetensors"),
                   "warmup_steps": manifest["warmup_steps"], "parameters": manifest["parameters"]},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "wall_seconds": round(time.time() - wall, 1),
        # train + evaluation time of every run, also when finished runs were reused by this invocation
        "runs_seconds": round(sum(r["train_seconds"] + r["eval_seconds"] for name, recs in records.items()
                                  if name != START for r in recs), 1),
        "training": training,
        "summary": summary,
        "runs": {name: recs for name, recs in records.items() if name != START},
        "start_metrics": start_metrics,
    }
    (args.out_dir / "learning.json").write_text(json.dumps(result, indent=1))
    md = table(summary, args.k, seeds) + "\n" + training_table(training)
    (args.out_dir / "learning.md").write_text(md)
    plot(summary, args.k, args.out_dir / "pass_at_k.png")
    print(md + f"\nwall {result['wall_seconds']:.0f} s (runs: {result['runs_seconds']:.0f} s of training and "
          f"evaluation); results in {args.out_dir}", flush=True)
    return result


if __name__ == "__main__":
    main()
