"""The quickstart over several RL seeds: what a user should see, and its run-to-run spread.

Runs ``python -m verl_resrl.demo.quickstart --seed S`` (the packaged starting policy, the default 30 ResRL steps,
evaluation seed 0) for each seed into ``--work-dir/seed_S`` (each run's logs and checkpoints), keeps each run's
``before.json`` / ``after_<estimator>.json`` / ``summary.md`` under ``--out-dir/seed_S`` and writes
``--out-dir/seeds.md``: the "before" row (one: every seed starts from the same weights with the same evaluation
seed) and the "after" rows with their mean, standard deviation and range over the seeds. Seeds whose results are
already in ``--out-dir`` are not rerun; ``--report-only`` only rewrites the report.

    python benchmarks/quickstart_seeds.py [--seeds 0 1 2] [--estimator resrl] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("avg@16", "pass@1", "pass@4", "pass@16", "distinct_answers")


def run_seed(seed: int, args) -> None:
    work = args.work_dir / f"seed_{seed}"
    keep = args.out_dir / f"seed_{seed}"
    first = next((args.out_dir / f"seed_{s}" / "before.json" for s in args.seeds
                  if (args.out_dir / f"seed_{s}" / "before.json").is_file()), None)
    work.mkdir(parents=True, exist_ok=True)
    if first is not None and not (work / "before.json").is_file():
        shutil.copyfile(first, work / "before.json")  # same weights and evaluation seed: reused, not recomputed
    start = time.time()
    cmd = [sys.executable, "-u", "-m", "verl_resrl.demo.quickstart", "--out-dir", str(work), "--seed", str(seed),
           "--estimator", args.estimator, *args.extra]
    print(f"== seed {seed}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("before.json", f"after_{args.estimator}.json", "summary.md"):
        shutil.copyfile(work / name, keep / name)
    (keep / "wall_seconds.txt").write_text(f"{time.time() - start:.0f}\n")


def report(args) -> str:
    rows = {}
    for seed in args.seeds:
        after = args.out_dir / f"seed_{seed}" / f"after_{args.estimator}.json"
        if after.is_file():
            rows[seed] = (json.loads((after.parent / "before.json").read_text()), json.loads(after.read_text()))
    if not rows:
        return "no finished seeds\n"
    befores = {json.dumps([b.get("policy_sha256"), b["seed"]] + [round(b[m], 6) for m in METRICS])
               for b, _ in rows.values()}
    before = next(iter(rows.values()))[0]

    def cell(m, v):
        return f"{v:.2f}" if m == "distinct_answers" else f"{100 * v:.1f}"

    def spread(m, vals):
        scale = 1 if m == "distinct_answers" else 100
        vals = [scale * v for v in vals]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        fmt = "{:.2f}" if m == "distinct_answers" else "{:.1f}"
        return f"{fmt.format(statistics.mean(vals))} ± {fmt.format(sd)} ({fmt.format(min(vals))}–{fmt.format(max(vals))})"

    lines = [f"Quickstart over RL seeds {', '.join(map(str, rows))} ({args.estimator}, "
             f"{next(iter(rows.values()))[1].get('steps', '?')} steps; {before['problems']} held-out problems x "
             f"{before['k']} samples, evaluation seed {before['seed']}; percent, distinct answers per problem).",
             f"Starting policy weights sha256 {before.get('policy_sha256')}; "
             + ("one 'before' row for every seed." if len(befores) == 1 else "THE SEEDS' 'before' ROWS DIFFER."),
             "", "| run | " + " | ".join(METRICS) + " | RL wall s |", "|---" * (len(METRICS) + 2) + "|",
             "| before | " + " | ".join(cell(m, before[m]) for m in METRICS) + " | - |"]
    for seed, (_, after) in rows.items():
        lines.append(f"| after, seed {seed} | " + " | ".join(cell(m, after[m]) for m in METRICS)
                     + f" | {after.get('train_seconds', '?')} |")
    lines.append(f"| after, mean ± sd (min–max) | "
                 + " | ".join(spread(m, [a[m] for _, a in rows.values()]) for m in METRICS) + " | - |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--estimator", default="resrl")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks/results/quickstart")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "outputs/quickstart_seeds")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("extra", nargs="*", help="more quickstart arguments (after --)")
    args = parser.parse_args(argv)
    if not args.report_only:
        for seed in args.seeds:
            if not (args.out_dir / f"seed_{seed}" / f"after_{args.estimator}.json").is_file():
                run_seed(seed, args)
    text = report(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"seeds_{args.estimator}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
