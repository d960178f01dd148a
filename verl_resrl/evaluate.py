"""Avg@k and unbiased pass@k from generated responses (the paper's evaluation protocol).

``python -m verl_resrl.evaluate RESULTS [RESULTS ...] --out-dir DIR`` reads each results file (parquet or
jsonl; one *run* each, e.g. one method), scores every response with the math reward
(``reward_fns/math_reward.py``), and writes

* ``DIR/metrics.json``  -- per run, per benchmark: prompts, samples per prompt n, ``avg@n`` (mean accuracy over
  all samples), ``pass@k`` for k = 1, 2, 4, ... <= n, and each prompt's (n, correct) counts;
* ``DIR/metrics.md``    -- the same as a markdown table (percent);
* ``DIR/pass_at_k.png`` -- pass@k curves, one panel per benchmark, one line per run.

Input rows (veRL's ``main_generation_server`` output works as is): ``data_source``, the ground truth
(``reward_model.ground_truth`` or ``ground_truth``), the responses (``responses``: a list of n strings, or
``response``: one string per row), and optionally a prompt id (``extra_info.index``, ``index`` or ``uid``;
default: the row number). Rows with the same (data_source, prompt id) are pooled. A row's ``extra_info`` is
passed to the reward (``--reward-fn``; the function-call reward reads the tool schemas from it).

pass@k = 1 - C(n - c, k) / C(n, k) per prompt (c correct out of n), averaged over prompts (Chen et al. 2021).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_REWARD_FN = Path(__file__).resolve().parents[1] / "reward_fns" / "math_reward.py"


# --- estimators ---------------------------------------------------------------------------------------------

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one prompt with ``c`` correct out of ``n`` samples: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def k_values(n: int) -> list[int]:
    """1, 2, 4, ... up to ``n``."""
    return [2 ** i for i in range(int(math.log2(n)) + 1)] if n >= 1 else []


@dataclass
class Benchmark:
    """Correct counts of one benchmark in one run: ``counts[prompt_id] = (n, c)``."""

    counts: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        ns = [n for n, _ in self.counts.values()]
        n_min = min(ns)
        samples = sum(ns)
        correct = sum(c for _, c in self.counts.values())
        out = {"prompts": len(self.counts), "n": n_min, f"avg@{n_min}": correct / samples}
        for k in k_values(n_min):
            out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in self.counts.values()) / len(self.counts)
        out["per_prompt"] = {str(pid): [n, c] for pid, (n, c) in sorted(self.counts.items(), key=lambda x: str(x[0]))}
        return out


# --- reading and scoring -------------------------------------------------------------------------------------

def _field(row: dict, *dotted_names: str):
    for dotted in dotted_names:
        value = row
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            return value
    return None


def read_rows(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    raise ValueError(f"{path}: results must be .parquet or .jsonl")


def samples_of(rows: list[dict], origin: str) -> list[tuple[str, str, str, str, dict | None]]:
    """``(data_source, prompt_id, ground_truth, response, extra_info)`` for every response in ``rows``."""
    samples = []
    for i, row in enumerate(rows):
        data_source = _field(row, "data_source")
        truth = _field(row, "reward_model.ground_truth", "ground_truth", "answer")
        responses = _field(row, "responses", "response")
        if data_source is None or truth is None or responses is None:
            raise ValueError(f"{origin}: row {i} needs data_source, a ground truth (reward_model.ground_truth) "
                             f"and responses; it has {sorted(row)}")
        if isinstance(responses, str):
            responses = [responses]
        prompt_id = _field(row, "extra_info.index", "index", "uid")
        prompt_id = i if prompt_id is None else prompt_id
        extra_info = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else None
        samples += [(str(data_source), str(prompt_id), str(truth), str(r), extra_info) for r in list(responses)]
    return samples


def load_compute_score(path: str | Path = DEFAULT_REWARD_FN):
    """``compute_score`` of a reward file, loaded by path as veRL does."""
    spec = importlib.util.spec_from_file_location("resrl_eval_reward", path)
    if spec is None or not Path(path).is_file():
        raise FileNotFoundError(f"reward function file not found: {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compute_score


def evaluate_run(path: str | Path, compute_score, workers: int = 4) -> dict[str, Benchmark]:
    """Benchmarks of one results file, every response scored (correct = ``acc`` of the reward == 1)."""
    samples = samples_of(read_rows(path), str(path))

    def is_correct(sample):
        data_source, _, truth, response, extra_info = sample
        return compute_score(data_source=data_source, solution_str=response, ground_truth=truth,
                             extra_info=extra_info)["acc"] >= 1.0

    with ThreadPoolExecutor(max_workers=workers) as pool:
        correct = list(pool.map(is_correct, samples))
    tallies = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for (data_source, prompt_id, _, _, _), ok in zip(samples, correct):
        tally = tallies[data_source][prompt_id]
        tally[0] += 1
        tally[1] += int(ok)
    return {ds: Benchmark({pid: tuple(t) for pid, t in prompts.items()}) for ds, prompts in sorted(tallies.items())}


# --- reports ------------------------------------------------------------------------------------------------

def metrics_table(metrics: dict[str, dict[str, dict]]) -> str:
    """Markdown: one row per (run, benchmark), columns avg@n and pass@k in percent."""
    ks = sorted({int(key[5:]) for run in metrics.values() for bench in run.values()
                 for key in bench if key.startswith("pass@")})
    header = ["run", "benchmark", "prompts", "n", "avg@n"] + [f"pass@{k}" for k in ks]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run_name, run in metrics.items():
        for bench_name, bench in run.items():
            n = bench["n"]
            cells = [run_name, bench_name, str(bench["prompts"]), str(n), f"{100 * bench[f'avg@{n}']:.1f}"]
            cells += [f"{100 * bench[f'pass@{k}']:.1f}" if f"pass@{k}" in bench else "" for k in ks]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_pass_at_k(metrics: dict[str, dict[str, dict]], path: str | Path) -> None:
    """pass@k against k (log2 axis), one panel per benchmark, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benchmarks = sorted({b for run in metrics.values() for b in run})
    cols = min(3, len(benchmarks))
    rows = math.ceil(len(benchmarks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.5 * rows), squeeze=False)
    for ax, bench_name in zip(axes.flat, benchmarks):
        for run_name, run in metrics.items():
            if bench_name not in run:
                continue
            ks = sorted(int(key[5:]) for key in run[bench_name] if key.startswith("pass@"))
            ax.plot(ks, [100 * run[bench_name][f"pass@{k}"] for k in ks], marker="o", label=run_name)
        ax.set_xscale("log", base=2)
        ax.set_title(bench_name)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(benchmarks):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_names(paths: list[str], names: str | None) -> list[str]:
    if names:
        result = [n.strip() for n in names.split(",")]
        if len(result) != len(paths):
            raise SystemExit(f"--names has {len(result)} names for {len(paths)} results files")
        return result
    stems = [Path(p).stem for p in paths]
    return stems if len(set(stems)) == len(stems) else [str(p) for p in paths]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m verl_resrl.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="generation files (.parquet / .jsonl), one per run")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--names", default=None, help="comma-separated run names (default: file names)")
    parser.add_argument("--reward-fn", default=str(DEFAULT_REWARD_FN), help="file defining compute_score")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("RESRL_EVAL_WORKERS", "4")))
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    args = parser.parse_args(argv)

    compute_score = load_compute_score(args.reward_fn)
    metrics = {}
    for name, path in zip(run_names(args.results, args.names), args.results):
        metrics[name] = {b: bench.metrics() for b, bench in evaluate_run(path, compute_score, args.workers).items()}

    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    table = metrics_table(metrics)
    (args.out_dir / "metrics.md").write_text(table)
    if not args.no_plot:
        plot_pass_at_k(metrics, args.out_dir / "pass_at_k.png")
    sys.stdout.write(table)
    return metrics


if __name__ == "__main__":
    main()
