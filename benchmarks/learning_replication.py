"""The learning study's final table -- every selected configuration and both ablations -- from another starting policy.

The study (:mod:`learning`) selects its configurations on one starting policy. This script trains the
configurations it selected -- the selected ResRL (``resrl_pos1`` or ``resrl``), the same with uniform and with
shuffled negative weights, GRPO's, ResRL with the paper's lambda = 0.1, NSR's and W-REINFORCE's: every row of the
study's final table -- from another starting policy, seeds
``--seeds``, with the study's protocol otherwise (``--steps`` x 16 prompts x 8 responses, the same dev and test
splits, 16 samples per problem). Nothing is re-selected: the configurations are read from the study's committed
runs (``--study-dir``), so this tests whether its findings hold for a policy it was not tuned on.

The starting policy is ``--policy-dir`` if given, else the one kept in ``<out-dir>/policy``, else a build on this
machine (whose weights depend on the CPU, see :mod:`verl_resrl.demo.policy`); it must differ from the study's, and
is kept in ``<out-dir>/policy`` so that a later invocation on any machine resumes from the same weights. Runs go in seed
rounds (every configuration of seed 0, then of seed 1, ...), so a stopped replication has balanced seeds. Each
finished run writes ``<out-dir>/runs/<run>.json``; commit them and the kept policy. The report
(``learning.md``, ``learning.json``, ``pass_at_k.png``, ``training_curves.png`` in ``--out-dir``) has the test
table and the selected ResRL minus each other configuration with 95% bootstrap intervals, from this policy and
pooled over both policies (the study's finished seeds and this script's) (:mod:`learning_report`).

    python benchmarks/learning_replication.py --jobs 2              # seeds 0-4 (resumes from committed runs)
    python benchmarks/learning_replication.py --seeds 0 1 2 3 4 5   # one more seed round
    python benchmarks/learning_replication.py --report-only         # tables and plots from the committed runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import learning  # noqa: E402
import learning_report  # noqa: E402

DEFAULT_OUT = learning.REPO / "benchmarks" / "results" / "learning_replication"
DEFAULT_WORK = learning.REPO / "outputs" / "learning_replication"
SEEDS = (0, 1, 2, 3, 4)


def replication_configs(study: learning.StudyState) -> dict[str, learning.Run]:
    """Label -> seed-0 run of each configuration the study selected, in priority order (the decisive pairs
    first, then the paper's lambda, then the other baselines). Labels are the study's final-table labels."""
    resrl = learning.selected_resrl(study)
    chosen = {m: learning.selected_run(study, m) for m in learning.METHODS}
    if resrl is None or None in chosen.values():
        raise SystemExit("the study has not selected its configurations yet (its sweep and regime stages must "
                         "finish first): nothing to replicate")
    configs = {resrl.method: resrl, "grpo": chosen["grpo"], **{f"{resrl.method}_{a}": replace(resrl, ablation=a)
                                                               for a in learning.ABLATIONS}}
    for method in ("resrl", "nsr", "w_reinforce"):  # the paper's lambda (when lambda = 1.0 is selected) and the rest
        configs.setdefault(method, chosen[method])
    return {label: replace(run, stage="replication", seed=0) for label, run in configs.items()}


def replication_plan(configs: dict[str, learning.Run], seeds) -> list[learning.Run]:
    """Every configuration of each seed, round by round."""
    return [replace(run, seed=s) for s in seeds for run in configs.values()]


def replication_groups(configs: dict[str, learning.Run], records: dict[str, dict]) -> dict[str, list[dict]]:
    """Label -> the finished records of its configuration, in seed order."""
    return {label: learning.seeds_of(records, run) for label, run in configs.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--study-dir", type=Path, default=learning.DEFAULT_OUT,
                        help="the study whose selected configurations are replicated (its runs/ are read)")
    learning.add_run_arguments(parser, DEFAULT_OUT, DEFAULT_WORK)
    args = parser.parse_args(argv)
    args.out_dir, args.work_dir = args.out_dir.resolve(), args.work_dir.resolve()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    args.started = 0
    wall = time.time()

    study = learning.StudyState(learning.load_records(args.study_dir / "runs"))
    study_sha = learning.study_policy_sha(study.records, None)
    configs = replication_configs(study)
    state = learning.StudyState(learning.load_records(args.out_dir / "runs"))
    start_path = args.out_dir / "start.json"
    start = json.loads(start_path.read_text()) if start_path.is_file() else None
    if not args.report_only:
        from verl_resrl.demo.rl import write_data

        policy_dir, policy_sha = learning.resolve_policy(
            args, learning.study_policy_sha(state.records, start),
            other_than=(study_sha, "the study's own starting policy; a replication starts from another one (the "
                                   "study's --extra-seeds gives more seeds of the same policy)"))
        data = write_data(args.work_dir / "data", n_test=args.n_dev)
        start = learning.start_record(args, policy_dir, policy_sha)
        learning.execute(args, state, policy_dir, data, policy_sha,
                         planner=lambda st: replication_plan(configs, args.seeds))
        state = learning.StudyState(learning.load_records(args.out_dir / "runs"))
    context = {
        "command": "python benchmarks/learning_replication.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "wall_seconds_this_invocation": round(time.time() - wall, 1),
        "study_policy_sha256": study_sha, "policy_sha256": start["policy_sha256"] if start else None,
        "configurations": {label: run.config for label, run in configs.items()}, "seeds": args.seeds,
    }
    reference = next(iter(configs))
    return learning_report.write_report(args.out_dir, {}, start, replication_groups(configs, state.records), {},
                                        reference, context, k=learning.K, bootstrap=args.bootstrap,
                                        pooled_with=learning.final_groups(study))


if __name__ == "__main__":
    main()
