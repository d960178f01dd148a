"""Tables, bootstrap intervals and plots of the learning study (:mod:`learning`), from its per-run records.

A record is one run's JSON (``benchmarks/results/learning/runs/<run>.json``): its ``dev`` and ``test``
evaluations (``avg@16``, ``pass@1..16``, ``distinct_answers``, ``no_answer_rate``, ``per_problem`` = [n, c] per
problem) and its per-step training metrics (``steps``).

The difference between two methods on the test split is the mean over seeds and problems of the per-problem
metric (accuracy c/n, or the unbiased pass@k) of one minus the other; its 95% interval is a percentile bootstrap
that resamples problems (the same problems for both methods) and seeds (paired by seed index: runs of the same
seed share the data order).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from verl_resrl.evaluate import pass_at_k

SUMMARY_KEYS = ("distinct_answers", "no_answer_rate")
CURVE_KEYS = {"critic/score/mean": "train reward (mean score)", "actor/entropy": "entropy",
              "response_length/mean": "response length (tokens)"}
TRAINING_KEYS = {  # step metric -> column of the training table
    "critic/score/mean": "train reward",
    "actor/entropy": "entropy",
    "response_length/mean": "response length",
    "actor/pg_clipfrac": "clip fraction",
    "resrl/neg_weight_mean": "ResRL neg. weight mean",
    "resrl/coverage": "coverage",
}


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def aggregate(evals: list[dict], k: int) -> dict[str, dict]:
    """mean, std (over runs; 0 for one run) and values of each scalar metric of the evaluations ``evals``."""
    out = {}
    for key in (f"avg@{k}", *[f"pass@{j}" for j in range(1, k + 1)], *SUMMARY_KEYS):
        values = [e[key] for e in evals]
        out[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "values": values}
    return out


def per_problem(evals: list[dict], metric: str, k: int) -> np.ndarray:
    """``(seeds, problems)`` per-problem ``metric`` (``avg`` = c / n, or ``pass``: unbiased pass@k)."""
    rows = []
    for e in evals:
        if metric == "avg":
            rows.append([c / n for n, c in e["per_problem"]])
        else:
            rows.append([pass_at_k(n, c, k) for n, c in e["per_problem"]])
    return np.asarray(rows, dtype=np.float64)


def bootstrap_difference(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """Difference of means ``a - b`` with a 95% percentile bootstrap interval.

    Args:
        a, b: ``(seeds, problems)`` per-problem values of two methods on the same problems; seed rows are paired by
            index when both have the same number of seeds, resampled independently otherwise.
    """
    return pooled_difference([(a, b)], resamples, seed)


def pooled_difference(pairs: list[tuple[np.ndarray, np.ndarray]], resamples: int = 2000, seed: int = 0) -> dict:
    """The mean over studies of each study's difference of means ``a - b``, with a 95% percentile bootstrap
    interval.

    Args:
        pairs: one ``(a, b)`` per study (e.g. per starting policy), each as in :func:`bootstrap_difference`. Every
            study is evaluated on the same problems, so one problem resample serves them all; seeds are resampled
            within each study. Each study weighs the same, whatever its number of seeds.
    """
    n_problems = {x.shape[1] for pair in pairs for x in pair}
    if len(n_problems) != 1:
        raise ValueError(f"different problem sets: {sorted(n_problems)} problems")
    (n,) = n_problems
    rng = np.random.default_rng(seed)
    problems = rng.integers(0, n, size=(resamples, n))
    diffs = np.zeros(resamples)
    for a, b in pairs:
        seeds_a = rng.integers(0, a.shape[0], size=(resamples, a.shape[0]))
        seeds_b = seeds_a if a.shape[0] == b.shape[0] else rng.integers(0, b.shape[0], size=(resamples, b.shape[0]))
        mean_a = a[seeds_a].mean(axis=1)  # (R, P): the resampled seeds' mean per problem
        mean_b = b[seeds_b].mean(axis=1)
        diffs += (np.take_along_axis(mean_a, problems, 1) - np.take_along_axis(mean_b, problems, 1)).mean(axis=1)
    diffs /= len(pairs)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    seeds = [[int(a.shape[0]), int(b.shape[0])] for a, b in pairs]
    return {"diff": float(np.mean([a.mean() - b.mean() for a, b in pairs])), "ci95": [float(lo), float(hi)],
            "excludes_0": bool(lo > 0 or hi < 0), "seeds": seeds[0] if len(pairs) == 1 else seeds}


def sweep_table(records: dict[str, dict], selection: dict[str, str | None], k: int) -> str:
    """Dev Avg@k / pass@k of every seed-0 sweep and regime run; the selected configuration in bold."""
    runs = [r for r in records.values() if r["stage"] in ("sweep", "regime")]
    columns = sorted({(r["mini_batches"], r["lr"]) for r in runs if r["stage"] == "sweep"}, key=lambda c: c[1])
    header = ["method", *[f"lr {lr:g}, {mb} mb" for mb, lr in columns], "1 mb at selected lr"]
    lines = [f"Dev split (Avg@{k} / pass@{k}, %), seed 0; **bold** = selected configuration:", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in dict.fromkeys(r["method"] for r in runs):
        cells = [method]
        mine = [r for r in runs if r["method"] == method]
        for mb, lr in columns:
            cells.append(_cell([r for r in mine if r["stage"] == "sweep" and r["lr"] == lr], selection, method, k))
        regime = [r for r in mine if r["stage"] == "regime"]
        cells.append((f"(lr {regime[0]['lr']:g}) " if regime else "") + _cell(regime, selection, method, k))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(recs: list[dict], selection: dict, method: str, k: int) -> str:
    if not recs:
        return "-"
    r = recs[0]
    text = f"{pct(r['dev'][f'avg@{k}'])} / {pct(r['dev'][f'pass@{k}'])}"
    return f"**{text}**" if selection.get(method) == r["name"] else text


def final_table(groups: dict[str, list[dict]], start: dict | None, k: int) -> str:
    ks = [j for j in (1, 4, 16) if j <= k]
    header = ["method", "configuration", "seeds", f"Avg@{k}", *[f"pass@{j}" for j in ks], "distinct answers",
              "no answer"]
    lines = [f"Test split (256 problems x {k} samples), mean ± std over seeds:", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = ([("start", "-", "-", aggregate([start["test"]], k))] if start else [])
    for label, recs in groups.items():
        config = f"lr {recs[0]['lr']:g}, {recs[0]['mini_batches']} mb"
        rows.append((label, config, str(len(recs)), aggregate([r["test"] for r in recs], k)))
    for label, config, seeds, agg in rows:
        def ms(key, scale=100.0, digits=1):
            return f"{scale * agg[key]['mean']:.{digits}f} ± {scale * agg[key]['std']:.{digits}f}"

        lines.append("| " + " | ".join([label, config, seeds, ms(f"avg@{k}"), *[ms(f"pass@{j}") for j in ks],
                                         ms("distinct_answers", 1.0, 2), ms("no_answer_rate")]) + " |")
    return "\n".join(lines) + "\n"


def differences(groups: dict[str, list[dict]], reference: str, k: int, resamples: int) -> dict[str, dict]:
    """``reference`` minus every other label on the test split: Avg@k and pass@k with bootstrap intervals."""
    return pooled_differences([groups], reference, k, resamples)


def pooled_differences(studies: list[dict[str, list[dict]]], reference: str, k: int, resamples: int) -> dict:
    """``reference`` minus every other label that all ``studies`` (label -> records, one dict per starting
    policy) have: the mean of the studies' test-split differences, Avg@k and pass@k, with a bootstrap interval
    (:func:`pooled_difference`). One study gives :func:`differences`."""
    if not all(st.get(reference) for st in studies):
        return {}
    labels = [label for label in studies[0] if label != reference and all(st.get(label) for st in studies)]
    out = {}
    for label in labels:
        out[label] = {}
        for metric, m in ((f"avg@{k}", "avg"), (f"pass@{k}", "pass")):
            pairs = [(per_problem([r["test"] for r in st[reference]], m, k),
                      per_problem([r["test"] for r in st[label]], m, k)) for st in studies]
            out[label][metric] = pooled_difference(pairs, resamples)
    return out


def differences_table(diffs: dict[str, dict], reference: str, k: int,
                      over: str = "problems and seeds") -> str:
    lines = [f"Test split: {reference} minus each method (percentage points), 95% bootstrap interval over "
             f"{over}:", "", f"| vs | Avg@{k} diff [95% CI] | pass@{k} diff [95% CI] |", "|---|---|---|"]
    for label, d in diffs.items():
        cells = []
        for metric in (f"avg@{k}", f"pass@{k}"):
            x = d[metric]
            mark = " *" if x["excludes_0"] else ""
            cells.append(f"{100 * x['diff']:+.1f} [{100 * x['ci95'][0]:+.1f}, {100 * x['ci95'][1]:+.1f}]{mark}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("\\* the interval excludes 0.")
    return "\n".join(lines) + "\n"


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
    keys = [key for key in TRAINING_KEYS if any(key in t for t in training.values())]
    lines = [f"Training, mean of the last {last} steps (then over seeds):", "",
             "| method | " + " | ".join(TRAINING_KEYS[key] for key in keys) + " |", "|---|" + "---|" * len(keys)]
    for name, values in training.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[key]:.3f}" if key in values else "-" for key in keys)
                     + " |")
    return "\n".join(lines) + "\n"


def curves(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Mean over runs of ``key`` at each step that every run logged."""
    steps = sorted(set.intersection(*(set(int(s) for s in r["steps"]) for r in records)))
    values = [statistics.fmean(r["steps"][str(s)][key] for r in records) for s in steps
              if all(key in r["steps"][str(s)] for r in records)]
    return steps[:len(values)], values


def plot_pass_at_k(series: dict[str, dict], k: int, path: Path) -> None:
    plt = _pyplot()
    ks = list(range(1, k + 1))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, agg in series.items():
        mean = [100 * agg[f"pass@{j}"]["mean"] for j in ks]
        std = [100 * agg[f"pass@{j}"]["std"] for j in ks]
        style = {"color": "black", "linestyle": "--"} if name == "start" else {}
        line, = ax.plot(ks, mean, marker="o", markersize=3, label=name, **style)
        ax.fill_between(ks, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.12,
                        color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k on the test split (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` values (fewer at the start)."""
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    return [float((cumulative[i + 1] - cumulative[max(0, i + 1 - window)]) / min(window, i + 1))
            for i in range(len(values))]


def plot_training_curves(groups: dict[str, list[dict]], path: Path, window: int = 5) -> None:
    """Per-step training metrics, mean over seeds, as a trailing ``window``-step moving average: every run sees the
    same prompts at the same step (the seed sets the data order), so the raw curves mostly show prompt difficulty."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CURVE_KEYS), figsize=(4.2 * len(CURVE_KEYS), 3.6))
    for ax, (key, label) in zip(axes, CURVE_KEYS.items()):
        for name, recs in groups.items():
            steps, values = curves(recs, key)
            if values:
                ax.plot(steps, moving_average(values, window), label=name, linewidth=1.2)
        ax.set_xlabel("step")
        ax.set_title(f"{label}, {window}-step moving average", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(out_dir: Path, records: dict[str, dict], start: dict | None, groups: dict[str, list[dict]],
                 selection: dict[str, str | None], reference: str | None, context: dict, k: int = 16,
                 bootstrap: int = 2000, pooled_with: dict[str, list[dict]] | None = None) -> dict:
    """Write ``learning.md``, ``learning.json`` and the plots into ``out_dir``; return the summary.

    ``pooled_with``: another study's groups (label -> records, from another starting policy); the report then
    also has ``reference`` minus each label of both, pooled over the two studies (:func:`pooled_differences`)."""
    out_dir = Path(out_dir)
    parts = [sweep_table(records, selection, k)] if records else []
    summary: dict = {**context, "selection": selection, "selected_resrl": reference, "runs": sorted(records)}
    groups = {label: recs for label, recs in groups.items() if recs}
    if groups:
        parts.append(final_table(groups, start, k))
        summary["final"] = {label: {"runs": [r["name"] for r in recs],
                                    "test": {key: {"mean": v["mean"], "std": v["std"]}
                                             for key, v in aggregate([r["test"] for r in recs], k).items()}}
                            for label, recs in groups.items()}
        if reference in groups and len(groups) > 1:
            diffs = differences(groups, reference, k, bootstrap)
            summary["differences"] = {"reference": reference, "vs": diffs}
            parts.append(differences_table(diffs, reference, k))
            pooled = pooled_differences([groups, pooled_with], reference, k, bootstrap) if pooled_with else {}
            if pooled:
                summary["pooled_differences"] = {"reference": reference, "vs": pooled}
                parts.append("Both starting policies (this study and the other one), each weighing the same:\n\n"
                             + differences_table(pooled, reference, k, "problems and each study's seeds"))
        training = {label: training_summary(recs) for label, recs in groups.items()}
        summary["training"] = training
        parts.append(training_table(training))
        series = {"start": aggregate([start["test"]], k)} if start else {}
        series.update({label: aggregate([r["test"] for r in recs], k) for label, recs in groups.items()})
        plot_pass_at_k(series, k, out_dir / "pass_at_k.png")
        plot_training_curves(groups, out_dir / "training_curves.png")
    md = "\n".join(parts)
    (out_dir / "learning.md").write_text(md)
    (out_dir / "learning.json").write_text(json.dumps(summary, indent=1))
    print(md, flush=True)
    return summary
