"""Learning study on the CPU demo task: does ResRL help, and is it the residuals?

Every run starts from the same policy (:mod:`verl_resrl.demo.policy`, built or reused) and trains through veRL's
real ``main_ppo`` on CPU with the same sample budget (``--steps`` x 16 prompts x 8 responses, temperature 1.0,
no KL); the seed sets the data order, the rollout sampling and ResRL's subspace sampling. Each trained
checkpoint is evaluated with 16 samples per problem at temperature 1.0 on two disjoint held-out splits: **dev**
(128 problems, used for every selection) and **test** (256 problems, used only for the final tables).

Methods (``METHODS``): GRPO, NSR, W-REINFORCE, ResRL with the paper's lambda = 0.1 (``resrl``) and ResRL with
lambda = 1.0 (``resrl_pos1``). The study, in stages (each stage's runs are planned from the finished ones):

1. ``sweep``    every method x lr in {3e-5, 1e-4, 3e-4}, 4 mini-batches per step (the paper's ratio), seed 0;
2. ``regime``   every method at its best sweep lr (dev Avg@16) with 1 mini-batch per step (on-policy only);
3. ``final``    every method's selected configuration (best dev Avg@16 of stages 1-2) x seeds 1, 2 (seed 0 is
                the selected run itself);
4. ``ablation`` the selected ResRL configuration (the better of ``resrl`` / ``resrl_pos1`` on dev) with uniform
                negative weights (``+algorithm.resrl.min_weight=1.0``) and with each group's weights shuffled
                (``+algorithm.resrl.weights=shuffled``), seeds 0, 1, 2.

When three seeds leave the decisive comparisons' intervals straddling 0, ``--extra-seeds 3 4`` adds those seeds to
the decisive pairs only (the selected ResRL configuration, GRPO's, and the selected ResRL with uniform weights);
the final tables and bootstrap intervals then use every finished seed of each configuration.

Every run starts from the policy in ``<out-dir>/policy`` (the study's starting weights, committed beside its
results): a rebuild gives other weights on a CPU with another instruction set (:mod:`verl_resrl.demo.policy`), so
the study keeps the weights it started from instead of rebuilding them. A new study builds its policy (or takes
``--policy-dir``) and copies it there. An invocation whose policy differs from the one the committed runs were
trained from stops before training, naming both checksums. (The committed study predates this: its policy,
sha256 ``f55bbe6f...``, is kept by the first invocation on a machine whose build reproduces it.)

Each finished run writes ``<out-dir>/runs/<run>.json`` (settings, dev and test metrics with per-problem counts,
per-step training metrics). Commit these as they land: a later invocation reuses every run whose file matches
its settings, so an interrupted study resumes instead of retraining. After the runs (or with ``--report-only``)
:mod:`learning_report` writes ``learning.md`` (tables), ``learning.json`` (summary, bootstrap intervals),
``pass_at_k.png`` and ``training_curves.png`` into ``--out-dir``.

    python benchmarks/learning.py                          # the whole study (resumes from committed runs)
    python benchmarks/learning.py --stages sweep regime    # only these stages
    python benchmarks/learning.py --report-only            # tables and plots from the committed runs
    python benchmarks/learning.py --jobs 2                 # two main_ppo runs at a time
    python benchmarks/learning.py --extra-seeds 3 4        # more seeds for ResRL vs GRPO and vs uniform
    python benchmarks/learning.py --quick                  # smoke run: 2 runs x 3 steps, 32 + 32 problems

Budget (measured on 2 cores): a run alone trains at ~14 s per step (rollout ~5 s, old log-probs ~2.5 s, update
~6 s; veRL's CPU workers use one thread each), i.e. ~15 min for 60 steps, plus 1-4 min of start-up and 3-8 min
of evaluating 6,144 samples (up to 17 min for a collapsed model's 64-token loops). Two runs at a time (``--jobs
2``, or two invocations with disjoint ``--methods``) train at 12-19 s per step each (12-16 s on an otherwise idle
machine), 1.5-2x the throughput of one. ``--methods`` also limits the ablation stage
(it belongs to ``resrl`` / ``resrl_pos1``), so two invocations can share the study without running a run twice::

    python benchmarks/learning.py --methods grpo nsr w_reinforce &
    python benchmarks/learning.py --methods resrl resrl_pos1 &

The whole study is 36 runs (15 sweep + 5 regime + 10 final + 6 ablation): about 8 hours two at a time, so it
spans several sessions; it resumes from the committed runs.

The tables of BENCHMARKS.md section 1, and the command that prints each (into ``learning.md`` of its out-dir):

    selection (dev, seed 0)               python benchmarks/learning.py --report-only
    test table from the study's policy    python benchmarks/learning.py --report-only   (rerun: without it)
    test table from a second policy       python benchmarks/learning_replication.py --report-only
      (every selected configuration,      (rerun: python benchmarks/learning_replication.py --jobs 2)
      both ablations, seeds 0-4)
    differences pooled over both policies python benchmarks/learning_replication.py --report-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import learning_report  # noqa: E402
from verl_resrl.demo.evaluate_policy import BATCH_PROMPTS_128  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "learning"
DEFAULT_WORK = REPO / "outputs" / "learning"

# label -> (veRL estimator, extra Hydra overrides)
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "grpo": ("grpo", ()),
    "nsr": ("nsr", ()),
    "w_reinforce": ("w_reinforce", ()),
    "resrl": ("resrl", ()),
    "resrl_pos1": ("resrl", ("+algorithm.resrl.pos_weight=1.0",)),
}
RESRL_METHODS = ("resrl", "resrl_pos1")
ABLATIONS: dict[str, tuple[str, ...]] = {
    "uniform": ("+algorithm.resrl.min_weight=1.0",),
    "shuffled": ("+algorithm.resrl.weights=shuffled",),
}
LRS = (1e-4, 3e-5, 3e-4)  # run order: the pilot's lr first
SWEEP_MINI_BATCHES = 4
FINAL_SEEDS = (1, 2)
ABLATION_SEEDS = (0, 1, 2)
DECISIVE_ABLATION = "uniform"  # with GRPO, the comparison --extra-seeds strengthens (see plan())
STAGES = ("sweep", "regime", "final", "ablation")
N_DEV, N_TEST = 128, 256
K = 16
EVAL_BATCH_PROMPTS = BATCH_PROMPTS_128  # problems per generate call (recorded in every run's splits)


def config_of(name: str) -> str:
    """A run name without its seed suffix (``..._s<seed>``): the configuration that selection chooses between."""
    return name.rsplit("_s", 1)[0]


@dataclass(frozen=True)
class Run:
    """One main_ppo run of the study."""

    stage: str
    method: str  # a METHODS label
    lr: float
    mini_batches: int
    seed: int
    ablation: str | None = None  # an ABLATIONS label

    @property
    def name(self) -> str:
        tag = f"_{self.ablation}" if self.ablation else ""
        return f"{self.method}{tag}_lr{self.lr:g}_mb{self.mini_batches}_s{self.seed}"

    @property
    def config(self) -> str:
        """The run's configuration without its seed (what selection chooses between)."""
        return config_of(self.name)

    def overrides(self) -> list[str]:
        return [*METHODS[self.method][1], *(ABLATIONS[self.ablation] if self.ablation else ())]


@dataclass
class StudyState:
    """Finished runs by name, and the selections they imply (dev Avg@16, ties broken by dev pass@16)."""

    records: dict[str, dict] = field(default_factory=dict)

    def score(self, run: Run) -> tuple[float, float] | None:
        record = self.records.get(run.name)
        if record is None:
            return None
        dev = record["dev"]
        return dev[f"avg@{K}"], dev[f"pass@{K}"]

    def best(self, runs: list[Run]) -> Run | None:
        """The best of ``runs`` by dev score (the first of equals), once all of them have finished."""
        scores = [self.score(r) for r in runs]
        if any(s is None for s in scores):
            return None
        return runs[max(range(len(runs)), key=lambda i: scores[i])]


def sweep_runs(method: str) -> list[Run]:
    return [Run("sweep", method, lr, SWEEP_MINI_BATCHES, 0) for lr in LRS]


def regime_run(state: StudyState, method: str) -> Run | None:
    best = state.best(sweep_runs(method))
    return None if best is None else Run("regime", method, best.lr, 1, 0)


def selected_run(state: StudyState, method: str) -> Run | None:
    """The method's selected seed-0 run: the best on dev of its sweep runs and its regime run."""
    regime = regime_run(state, method)
    return None if regime is None else state.best([*sweep_runs(method), regime])


def selected_resrl(state: StudyState) -> Run | None:
    chosen = [selected_run(state, m) for m in RESRL_METHODS]
    return None if None in chosen else state.best(chosen)


def plan(state: StudyState, stages=STAGES, methods=tuple(METHODS), extra_seeds=()) -> list[Run]:
    """Every run of the requested stages whose prerequisites have finished, in priority order (finished runs
    included; the caller skips them).

    ``extra_seeds`` adds seeds to the decisive pairs only: the selected ResRL configuration, GRPO's and the selected
    ResRL with ``DECISIVE_ABLATION`` weights, for when three seeds leave their intervals straddling 0."""
    runs: list[Run] = []
    resrl = selected_resrl(state)
    if "sweep" in stages:
        runs += [Run("sweep", m, lr, SWEEP_MINI_BATCHES, 0) for lr in LRS for m in methods]
    if "regime" in stages:
        runs += [r for r in (regime_run(state, m) for m in methods) if r is not None]
    if "final" in stages:
        for m in methods:
            chosen = selected_run(state, m)
            if chosen is not None:
                decisive = m == "grpo" or (resrl is not None and m == resrl.method)
                seeds = (*FINAL_SEEDS, *(extra_seeds if decisive else ()))
                runs += [replace(chosen, stage="final", seed=s) for s in seeds]
    if "ablation" in stages and resrl is not None and any(m in methods for m in RESRL_METHODS):
        runs += [replace(resrl, stage="ablation", ablation=a, seed=s) for a in ABLATIONS
                 for s in (*ABLATION_SEEDS, *(extra_seeds if a == DECISIVE_ABLATION else ()))]
    return runs


def seeds_of(records: dict[str, dict], run: Run) -> list[dict]:
    """The finished records of ``run``'s configuration, every seed, in seed order."""
    return sorted((r for r in records.values() if config_of(r["name"]) == run.config), key=lambda r: r["seed"])


def final_groups(state: StudyState) -> dict[str, list[dict]]:
    """Label -> the records of its selected configuration, every finished seed (0, 1, 2 and any extra seeds)."""
    groups: dict[str, list[dict]] = {}
    for m in METHODS:
        chosen = selected_run(state, m)
        if chosen is not None:
            groups[m] = seeds_of(state.records, chosen)
    chosen = selected_resrl(state)
    if chosen is not None:
        for a in ABLATIONS:
            recs = seeds_of(state.records, replace(chosen, ablation=a))
            if recs:
                groups[f"{chosen.method}_{a}"] = recs
    return groups


# --- running ----------------------------------------------------------------------------------------------------

STEP_KEYS = ("critic/score/mean", "timing_s/step", "resrl/", "actor/entropy", "actor/pg_loss", "actor/pg_clipfrac",
             "actor/ppo_kl", "response_length/mean")


def run_settings(run: Run, args):
    from verl_resrl.demo.rl import RLSettings

    return RLSettings(steps=args.steps, lr=run.lr, seed=run.seed, mini_batches=run.mini_batches)


def record_matches(record: dict, run: Run, args, policy_sha: str) -> bool:
    return (record.get("settings") == asdict(run_settings(run, args)) and record.get("overrides") == run.overrides()
            and record.get("policy_sha256") == policy_sha and record.get("splits") == split_sizes(args)
            and record.get("eval_seed") == args.eval_seed)


def split_sizes(args) -> dict[str, int]:
    return {"dev": args.n_dev, "test": args.n_test, "eval_batch_prompts": EVAL_BATCH_PROMPTS}


def held_out_splits(n_dev: int, n_test: int):
    """Disjoint dev and test problems, both disjoint from the training split."""
    from verl_resrl.demo.evaluate_policy import held_out

    problems = held_out(n_dev + n_test)
    return problems[:n_dev], problems[n_dev:]


def evaluate(model_dir, args) -> dict[str, dict]:
    from verl_resrl.demo.evaluate_policy import evaluate_model_dir

    dev, test = held_out_splits(args.n_dev, args.n_test)
    return {name: evaluate_model_dir(model_dir, problems=problems, k=K, seed=args.eval_seed, threads=args.threads,
                                     batch_prompts=EVAL_BATCH_PROMPTS)
            for name, problems in (("dev", dev), ("test", test))}


RAY_START_TIMEOUT = "The current node timed out during startup"  # ray.init on an overloaded machine


def train_and_evaluate(run: Run, args, policy_dir: Path, data: tuple[str, str], policy_sha: str) -> dict:
    from verl_resrl.demo.rl import demo_overrides, hf_checkpoint, train

    settings = run_settings(run, args)
    run_dir = args.work_dir / "runs" / run.name
    estimator = METHODS[run.method][0]
    overrides = [*demo_overrides(policy_dir, data[0], data[1], run_dir, estimator, settings), *run.overrides()]
    print(f"[learning] {run.name}: training {settings.steps} steps (log: {run_dir / 'train.log'})", flush=True)
    echo = (lambda m: print(f"{run.name} {m}", flush=True)) if args.progress else (lambda m: None)
    result = train(overrides, run_dir, settings.steps, timeout=args.run_timeout, echo=echo)
    if result.returncode != 0 and RAY_START_TIMEOUT in Path(result.log_path).read_text(errors="replace"):
        print(f"[learning] {run.name}: Ray did not start in time (a busy machine); retrying once", flush=True)
        result = train(overrides, run_dir, settings.steps, timeout=args.run_timeout, echo=echo)
    if result.returncode != 0:
        raise RuntimeError(f"{run.name}: main_ppo exit {result.returncode}, see {result.log_path}")
    start = time.time()
    evaluation = evaluate(hf_checkpoint(run_dir, settings.steps), args)
    return {
        **asdict(run), "name": run.name, "estimator": estimator, "overrides": run.overrides(),
        "settings": asdict(settings), "policy_sha256": policy_sha, "splits": split_sizes(args),
        "eval_seed": args.eval_seed, "train_seconds": round(result.seconds, 1),
        "eval_seconds": round(time.time() - start, 1), "jobs": args.jobs,
        "dev": _strip(evaluation["dev"]), "test": _strip(evaluation["test"]),
        "steps": {str(s): {k: v for k, v in m.items() if k.startswith(STEP_KEYS)}
                  for s, m in sorted(result.steps.items())},
    }


def _strip(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("examples", "model")}


def load_records(runs_dir: Path) -> dict[str, dict]:
    records = {}
    for path in sorted(runs_dir.glob("*.json")):
        record = json.loads(path.read_text())
        records[record["name"]] = record
    return records


def execute(args, state: StudyState, policy_dir: Path, data, policy_sha: str, planner=None) -> None:
    """Run every planned run that has no matching record, ``args.jobs`` at a time, re-planning as runs finish.

    ``planner(state)`` lists the runs in priority order (default: :func:`plan` with ``args``' stages, methods and
    extra seeds)."""
    if planner is None:
        def planner(st):
            return plan(st, args.stages, args.methods, args.extra_seeds)
    # Ray starts its workers at niceness 15; on a CPU machine they are the training itself, so they keep the
    # study's own priority (run times then do not depend on whatever else runs at normal priority).
    os.environ.setdefault("RAY_worker_niceness", "0")
    runs_dir = args.out_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    failed: set[str] = set()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        running: dict = {}
        while True:
            todo = [r for r in planner(state)
                    if r.name not in failed and r.name not in {x.name for x in running.values()}
                    and not (r.name in state.records and record_matches(state.records[r.name], r, args, policy_sha))]
            if args.max_runs is not None:
                todo = todo[:max(0, args.max_runs - args.started)]
            while todo and len(running) < args.jobs:
                run = todo.pop(0)
                args.started += 1
                running[pool.submit(train_and_evaluate, run, args, policy_dir, data, policy_sha)] = run
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                run = running.pop(future)
                try:
                    record = future.result()
                except Exception as exc:  # keep the other runs going; report at the end
                    print(f"[learning] {run.name} FAILED: {exc}", flush=True)
                    failed.add(run.name)
                    continue
                (runs_dir / f"{run.name}.json").write_text(json.dumps(record, indent=1))
                state.records[run.name] = record
                print(f"[learning] {run.name}: dev avg@{K} {100 * record['dev'][f'avg@{K}']:.1f} pass@{K} "
                      f"{100 * record['dev'][f'pass@{K}']:.1f} | test avg@{K} {100 * record['test'][f'avg@{K}']:.1f} "
                      f"({record['train_seconds']:.0f} s train, {record['eval_seconds']:.0f} s eval)", flush=True)
    if failed:
        raise RuntimeError(f"runs failed: {sorted(failed)}")


def study_policy_sha(records: dict[str, dict], start: dict | None) -> str | None:
    """The sha256 of the starting policy that the committed runs (and ``start.json``) were trained from; None for
    a new study."""
    shas = {r["policy_sha256"] for r in [*records.values(), *([start] if start else [])] if "policy_sha256" in r}
    if len(shas) > 1:
        raise SystemExit(f"the committed runs come from {len(shas)} different starting policies ({sorted(shas)}); "
                         "a study compares runs from one policy: move the others to another --out-dir")
    return next(iter(shas), None)


def resolve_policy(args, expected_sha: str | None, other_than: tuple[str, str] | None = None) -> tuple[Path, str]:
    """The study's policy directory and its weights' sha256.

    ``--policy-dir`` if given, else ``<out-dir>/policy`` if the study has kept one, else a build in
    ``<work-dir>/policy``. The policy must be the one the committed runs started from; a new study keeps a copy
    of its policy in ``<out-dir>/policy`` (commit it with the runs). ``other_than = (sha, reason)`` refuses the
    policy with that sha256."""
    import shutil

    from verl_resrl.demo.policy import PolicyConfig, build_policy, verify_policy

    kept = args.out_dir / "policy"
    kept_manifest = verify_policy(kept) if (kept / "manifest.json").is_file() else None
    if args.policy_dir is not None:
        policy_dir, manifest = args.policy_dir.resolve(), verify_policy(args.policy_dir)
    elif kept_manifest is not None:
        policy_dir, manifest = kept, kept_manifest
    else:
        policy_dir = args.work_dir / "policy"
        manifest = build_policy(policy_dir, PolicyConfig(), log=lambda m: print(m, flush=True))
    sha = manifest["sha256"]["model.safetensors"]
    expected = {f"the runs in {args.out_dir / 'runs'} were trained from": expected_sha,
                f"the study's kept policy {kept} is": kept_manifest and kept_manifest["sha256"]["model.safetensors"]}
    for source, want in expected.items():
        if want is not None and sha != want:
            raise SystemExit(
                f"{policy_dir}: starting policy sha256 {sha}, but {source} {want}. A rebuild gives other weights on "
                f"a CPU with another instruction set (this one: {manifest.get('platform', {}).get('cpu', '?')}, "
                f"torch kernels {manifest.get('platform', {}).get('torch_cpu_capability', '?')}). Resume with "
                f"--policy-dir DIR holding the study's policy (weights sha256 {want}), or start a separate study "
                "with --out-dir NEW.")
    if other_than is not None and sha == other_than[0]:
        raise SystemExit(f"{policy_dir}: starting policy sha256 {sha} is {other_than[1]}")
    if kept_manifest is None:
        shutil.copytree(policy_dir, kept, dirs_exist_ok=True)
        verify_policy(kept)
        print(f"[learning] kept the starting policy in {kept} (commit it with the runs)", flush=True)
    return policy_dir, sha


def start_record(args, policy_dir: Path, policy_sha: str) -> dict:
    path = args.out_dir / "start.json"
    if path.is_file():
        record = json.loads(path.read_text())
        if record.get("policy_sha256") == policy_sha and record.get("splits") == split_sizes(args) \
                and record.get("eval_seed") == args.eval_seed:
            return record
    evaluation = evaluate(policy_dir, args)
    record = {"name": "start", "policy_sha256": policy_sha, "splits": split_sizes(args), "eval_seed": args.eval_seed,
              "dev": _strip(evaluation["dev"]), "test": _strip(evaluation["test"])}
    path.write_text(json.dumps(record, indent=1))
    return record


def add_run_arguments(parser: argparse.ArgumentParser, out_dir: Path, work_dir: Path) -> None:
    """The options of training and evaluating runs (shared with :mod:`learning_replication`)."""
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--n-dev", type=int, default=N_DEV)
    parser.add_argument("--n-test", type=int, default=N_TEST)
    parser.add_argument("--eval-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="main_ppo runs at a time")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each evaluation")
    parser.add_argument("--max-runs", type=int, default=None, help="start at most this many new runs")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the test differences")
    parser.add_argument("--out-dir", type=Path, default=out_dir)
    parser.add_argument("--work-dir", type=Path, default=work_dir, help="policy, data, runs (git-ignored)")
    parser.add_argument("--policy-dir", type=Path, default=None,
                        help="the starting policy (default: OUT/policy if kept there, else a build in WORK/policy)")
    parser.add_argument("--run-timeout", type=float, default=3600)
    parser.add_argument("--report-only", action="store_true", help="only write the report from finished runs")
    parser.add_argument("--progress", action="store_true", help="one line per training step")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--extra-seeds", nargs="+", type=int, default=[], metavar="SEED",
                        help="more seeds for the decisive pairs only: the selected ResRL configuration, GRPO and "
                             "ResRL with uniform weights (final and ablation stages)")
    add_run_arguments(parser, DEFAULT_OUT, DEFAULT_WORK)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: sweep of grpo and resrl at the first lr, 3 steps, 32 dev + 32 test problems")
    args = parser.parse_args(argv)
    if args.quick:
        args.stages, args.methods, args.steps, args.n_dev, args.n_test = ["sweep"], ["grpo", "resrl"], 3, 32, 32
        args.max_runs = 2
        if args.out_dir == DEFAULT_OUT:
            args.out_dir = DEFAULT_WORK.parent / "learning_quick"
        if args.work_dir == DEFAULT_WORK:
            args.work_dir = DEFAULT_WORK.parent / "learning_quick"
    args.out_dir, args.work_dir = args.out_dir.resolve(), args.work_dir.resolve()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    args.started = 0
    wall = time.time()

    state = StudyState(load_records(args.out_dir / "runs"))
    start = json.loads((args.out_dir / "start.json").read_text()) if (args.out_dir / "start.json").is_file() else None
    if not args.report_only:
        from verl_resrl.demo.rl import write_data

        policy_dir, policy_sha = resolve_policy(args, study_policy_sha(state.records, start))
        data = write_data(args.work_dir / "data", n_test=args.n_dev)  # main_ppo's val file (validation is off)
        start = start_record(args, policy_dir, policy_sha)
        execute(args, state, policy_dir, data, policy_sha)
        state = StudyState(load_records(args.out_dir / "runs"))  # with what other invocations have added
    context = {
        "command": "python benchmarks/learning.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "wall_seconds_this_invocation": round(time.time() - wall, 1),
        "stages": {"lrs": LRS, "sweep_mini_batches": SWEEP_MINI_BATCHES, "final_seeds": FINAL_SEEDS,
                   "ablation_seeds": ABLATION_SEEDS, "extra_seeds": args.extra_seeds,
                   "methods": {m: list(v[1]) for m, v in METHODS.items()},
                   "ablations": {a: list(v) for a, v in ABLATIONS.items()}},
    }
    selection = {m: (r.name if (r := selected_run(state, m)) else None) for m in METHODS}
    resrl = selected_resrl(state)
    return learning_report.write_report(args.out_dir, state.records, start, final_groups(state), selection,
                                        resrl.method if resrl else None, context, k=K,
                                        bootstrap=args.bootstrap)


if __name__ == "__main__":
    main()
