"""The probe's report: ``summary.json`` (one row per layer), ``report.md`` and ``deciles.png``."""

from __future__ import annotations

import json
from pathlib import Path

from verl_resrl.core.config import ResRLConfig
from verl_resrl.diagnostics.probe import WEIGHTINGS, layer_summary, sgd_summary


def _interval(entry: dict, digits: int = 3) -> str:
    if entry["median"] is None:
        return "–"
    lo, hi = entry["ci"]
    return f"{entry['median']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def write_report(out: Path, meta: dict, records: list[dict], layers: list[int], config: ResRLConfig) -> dict:
    rows = []
    for layer in layers:
        summary = layer_summary(records, layer, config, meta["seed"])
        rows.append({"model": meta["model"], "task": meta["task"], **summary})
    result = {"meta": meta, "tied_embeddings": any(r["tied_embeddings"] for r in records),
              "sgd_check": sgd_summary(records), "rows": rows}
    (out / "summary.json").write_text(json.dumps(result, indent=1))

    lines = [f"# Mechanism probe: {meta['model']} on {meta['task']}", "",
             f"{meta.get('prompts_sampled', '?')} prompts x {meta['n']} responses at T = {meta['temperature']} "
             f"({meta.get('responses_correct', '?')} of {meta.get('responses', '?')} correct); "
             f"{len(records)} mixed groups measured. ResRLConfig() defaults. Tied input/output embeddings: "
             f"{result['tied_embeddings']} (the head interference covers the LM head's use of W only).", "",
             "Per-group Spearman rho, median [95% bootstrap interval over groups] (share of groups with rho < 0):", "",
             "| layer | groups | rho(weight, head I) | rho(weight, full I) | rho(residual, head I) | rho(residual, full I) |",
             "|---|---:|---|---|---|---|"]
    for row in rows:
        cells = [f"{_interval(row[f'spearman_{k}'])} ({_share(row[f'spearman_{k}'])})"
                 for k in ("weight_head", "weight_full", "residual_head", "residual_full")]
        lines.append(f"| {row['layer']} | {row['mixed_groups']} | " + " | ".join(cells) + " |")
    lines += ["", "Damage per push (correct responses' log-likelihood lost per unit of wrong responses' pushed down, "
              "first order; lower is better), median [95% interval]:", "",
              "| layer | " + " | ".join(WEIGHTINGS) + " | residual − uniform | residual − shuffled |",
              "|---|" + "---|" * (len(WEIGHTINGS) + 2)]
    for row in rows:
        cells = [_interval(row["damage_per_push"][w]) for w in WEIGHTINGS]
        cells += [_interval(row["damage_per_push_difference"][k]) for k in ("residual-uniform", "residual-shuffled")]
        lines.append(f"| {row['layer']} | " + " | ".join(cells) + " |")
    check = result["sgd_check"]
    if check:
        lines += ["", f"First order vs a real SGD step ({check['groups']} groups): largest relative error of the "
                      f"predicted change of either mean log-likelihood {check['max_relative_error']:.2%}."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    plot_deciles(out / "deciles.png", rows, meta)
    return result


def _share(entry: dict) -> str:
    share = entry.get("share_negative")
    return "–" if share is None else f"{share:.0%}"


def plot_deciles(path: Path, rows: list[dict], meta: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the plot is optional; the numbers are in summary.json
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
    for ax, kind in zip(axes, ("head", "full")):
        for row in rows:
            values = row["interference_by_residual_decile"][kind]
            xs = [i + 1 for i, v in enumerate(values) if v is not None]
            ax.plot(xs, [v for v in values if v is not None], marker="o", label=f"layer {row['layer']}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(f"{kind}-model interference" if kind == "full" else "LM-head interference")
        ax.set_xlabel("residual decile within the group (1 = smallest)")
        ax.set_ylabel("interference / group mean |I|")
        ax.legend(fontsize=8)
    fig.suptitle(f"{meta['model']} on {meta['task']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
