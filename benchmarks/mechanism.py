"""Mechanism probe rows of BENCHMARKS.md §7: run each (model, task) probe and merge their summaries.

    python benchmarks/mechanism.py                 # run every row (resumes from the cached samples), then merge
    python benchmarks/mechanism.py --rows demo       # one row
    python benchmarks/mechanism.py --report-only   # merge what the rows' directories hold

Each row is one ``python -m verl_resrl.diagnostics probe`` command (printed before it runs) writing to
``benchmarks/results/mechanism/<row>/``; the merged ``benchmarks/results/mechanism/summary.json`` has one entry per
(model, task, layer) and ``summary.md`` the table of BENCHMARKS.md §7.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "mechanism"

ROWS = {
    "smollm2_chain_sum": ["--model", "smollm2-135m-instruct", "--task", "chain_sum", "--level", "t2d2"],
    # GSM8K: through the math recipe (BENCHMARKS.md section 9) the model got about half of short GSM8K problems
    # right, in responses of 183 tokens on average, so groups are often mixed and 256 tokens hold its solutions
    "qwen_coder": ["--model", "qwen2.5-coder-0.5b-instruct", "--task", "gsm8k", "--max-new-tokens", "256",
                   "--prompts-per-batch", "4"],
    "demo": ["--model", "verl_resrl/demo/starting_policy", "--task", "demo", "--max-new-tokens", "64"],
}
KEYS = ("model", "task", "layer", "mixed_groups", "spearman_weight_head", "spearman_weight_full",
        "spearman_residual_head", "spearman_residual_full", "damage_per_push", "damage_per_push_difference")


def command(row: str) -> list[str]:
    return [sys.executable, "-m", "verl_resrl.diagnostics", "probe", *ROWS[row], "--out", str(RESULTS / row)]


def merge(rows: list[str]) -> dict:
    merged, sgd = [], {}
    for row in rows:
        path = RESULTS / row / "summary.json"
        if not path.is_file():
            continue
        summary = json.loads(path.read_text())
        merged += [{key: entry[key] for key in KEYS} for entry in summary["rows"]]
        if summary.get("sgd_check"):
            sgd[row] = {k: summary["sgd_check"][k] for k in ("groups", "max_relative_error")}
    return {"rows": merged, "sgd_check": sgd}


def fmt(entry: dict) -> str:
    if entry["median"] is None:
        return "–"
    lo, hi = entry["ci"]
    return f"{entry['median']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def table(summary: dict) -> str:
    lines = ["| model | task | layer | groups | ρ(w, head) | ρ(w, full) | damage/push residual | uniform | shuffled "
             "| inverse | oracle | residual − uniform | residual − shuffled |", "|---" * 13 + "|"]
    for r in summary["rows"]:
        d, diff = r["damage_per_push"], r["damage_per_push_difference"]
        lines.append(" | ".join([f"| {r['model']}", r["task"], str(r["layer"]), str(r["mixed_groups"]),
                                 fmt(r["spearman_weight_head"]), fmt(r["spearman_weight_full"]),
                                 *(fmt(d[w]) for w in ("residual", "uniform", "shuffled", "inverse", "oracle")),
                                 fmt(diff["residual-uniform"]), fmt(diff["residual-shuffled"])]) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.report_only:
        for row in args.rows:
            cmd = command(row)
            print("$ " + shlex.join(cmd), flush=True)
            subprocess.run(cmd, cwd=REPO, check=True)
    summary = merge(list(ROWS))
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=1))
    text = table(summary)
    (RESULTS / "summary.md").write_text(text + "\n")
    print(text)
    return summary


if __name__ == "__main__":
    main()
