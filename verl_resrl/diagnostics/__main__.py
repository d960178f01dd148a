"""``python -m verl_resrl.diagnostics probe``: measure whether ResRL's weights track gradient interference.

    python -m verl_resrl.diagnostics probe --model smollm2-135m-instruct --task chain_sum --level t2d2 --out DIR
    python -m verl_resrl.diagnostics probe --gguf FILE.gguf --task gsm8k --out DIR --device cuda
    python -m verl_resrl.diagnostics probe --smoke --out DIR        # tiny random model, under a minute

``--model`` is an HF directory or a known asset name (:mod:`verl_resrl.models`), ``--gguf`` a GGUF file
(converted once and cached). Samples and per-group measurements are cached in ``--out``; a rerun resumes. The
report is ``--out/report.md``, ``--out/summary.json`` and ``--out/deciles.png``. Needs torch and transformers
only (no veRL). See :mod:`verl_resrl.diagnostics.probe` for what is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from verl_resrl import ResRLConfig
from verl_resrl.diagnostics import probe
from verl_resrl.diagnostics.report import write_report
from verl_resrl.diagnostics.tasks import load_task
from verl_resrl.models.convert import CONVERTED_FROM


def load_model(args):
    """``(model, tokenizer, description, identity)`` in float32, eager attention (forward-mode AD runs through it).

    ``identity`` is the source GGUF's sha256 for a converted model (the same weights under any path), else the
    model argument.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.smoke:
        return smoke_model(args.seed) + ("tiny random Llama (smoke)", f"smoke-{args.seed}")
    from verl_resrl.models import prepare_model_dir

    directory = prepare_model_dir(args.gguf or args.model)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager")
    source = Path(directory) / CONVERTED_FROM
    identity = json.loads(source.read_text())["sha256"] if source.is_file() else str(args.model or args.gguf)
    return model, tokenizer, str(args.model or args.gguf), identity


def smoke_model(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    from verl_resrl.cpu.tiny_assets import build_bpe_tokenizer

    texts = [f"{a} + {b} = {a + b}. Answer: {a + b}" for a in range(10) for b in range(10)]
    tokenizer = build_bpe_tokenizer(texts * 4, vocab_size=300, split_digits=True)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, attn_implementation="eager",
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config), tokenizer


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m verl_resrl.diagnostics", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="sample, measure, report (resumable)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", help="HF directory or known asset name (verl_resrl.models.ASSETS)")
    source.add_argument("--gguf", help="a GGUF file (converted once, cached)")
    source.add_argument("--smoke", action="store_true", help="tiny random model on the smoke task (< 1 min)")
    p.add_argument("--task", default=None, help="chain_sum | gsm8k | demo (default: smoke with --smoke)")
    p.add_argument("--level", default=None, help="chain_sum level (default t2d2)")
    p.add_argument("--data", default=None, help="chain_sum problem file (default: benchmarks/data/probe_chain_sum.json)")
    p.add_argument("--out", required=True, help="cache and report directory")
    p.add_argument("--layers", type=int, nargs="+", default=None,
                   help="hidden_states indices probed (default: -1, -2 and the middle layer)")
    p.add_argument("--n", type=int, default=8, help="responses per prompt")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--mixed-groups", type=int, default=48, help="stop sampling once this many groups are mixed")
    p.add_argument("--max-prompts", type=int, default=2000, help="give up after this many prompts")
    p.add_argument("--prompts-per-batch", type=int, default=16, help="prompts per generate call")
    p.add_argument("--sgd-checks", type=int, default=3, help="groups whose first-order numbers are checked by a real step")
    p.add_argument("--row-chunk", type=int, default=2,
                   help="responses per differentiated forward: bounds the measurement's memory (0: all at once)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.smoke or args.model or args.gguf):
        p.error("give the model: --model DIR_OR_ASSET, --gguf FILE, or --smoke")
    if args.task is None:
        if not args.smoke:
            p.error("--task is required (chain_sum, gsm8k or demo)")
        args.task = "smoke"
    for name in ("n", "mixed_groups", "max_prompts", "prompts_per_batch", "max_new_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.row_chunk < 0:
        p.error("--row-chunk must be >= 0 (0: every response of a group in one forward)")
    if args.n < 2:
        p.error("--n must be >= 2: a group needs a correct and a wrong response")
    return args


def run(args, log=print) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        task = load_task(args.task, args.data, args.level, args.seed)
    except (FileNotFoundError, ValueError) as error:  # a missing data file or package, an unknown task or level
        raise probe.ProbeError(str(error)) from error
    t0 = time.time()
    model, tokenizer, description, identity = load_model(args)
    model = model.to(args.device).eval()
    layers = probe.probe_layers(model, args.layers)
    probe.lm_head_weight(model)  # refuse a model without a usable LM head before sampling
    config = ResRLConfig()
    meta = {"model": description, "model_id": identity, "task": task.name, "layers": layers, "n": args.n, "temperature": args.temperature,
            "max_new_tokens": args.max_new_tokens, "seed": args.seed, "device": args.device,
            "resrl_config": config.to_dict(), "parameters": sum(p.numel() for p in model.parameters())}
    meta_path = out / "run.json"
    if meta_path.is_file():
        cached = json.loads(meta_path.read_text())
        changed = {k for k in ("model_id", "task", "n", "temperature", "max_new_tokens", "seed") if cached.get(k) != meta[k]}
        if changed:
            raise probe.ProbeError(f"{out} holds a probe with other settings ({', '.join(sorted(changed))}): "
                                   "use another --out")
    if meta_path.is_file():
        meta["model"] = cached["model"]  # the name the cache was made under, whichever path loads it now
    meta_path.write_text(json.dumps(meta, indent=1))
    log(f"[probe] {description} on {task.name}: layers {layers}, {meta['parameters'] / 1e6:.1f} M parameters, "
        f"loaded in {time.time() - t0:.0f} s", flush=True)

    groups = probe.sample(model, tokenizer, task, args, log=log)
    mixed = probe.count_mixed(groups)
    if mixed == 0:
        raise probe.ProbeError(
            f"no mixed groups among {len(groups)} prompts x {args.n} responses (every group all correct or all wrong): "
            "pick a task or level the model solves sometimes, more --max-prompts, or a larger --n")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else probe.eos_ids(model, tokenizer)[0]
    records = probe.measure(model, groups, layers, config, args, pad_id, log=log)
    meta.update(prompts_sampled=len(groups), responses_correct=sum(sum(r > 0 for r in g["rewards"]) for g in groups),
                responses=sum(len(g["rewards"]) for g in groups))
    result = write_report(out, meta, records, layers, config)
    log((out / "report.md").read_text(), flush=True)
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except probe.ProbeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
