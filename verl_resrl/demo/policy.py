"""The demo's starting policy: a task-sized tokenizer, a small Qwen2, and a short supervised warm-up.

The quickstart starts from the policy that ships with the package (``starting_policy/``: safetensors weights,
tokenizer, ``manifest.json``). :func:`starting_policy` checks every file against the manifest and the weights
against :data:`STARTING_POLICY_SHA256` before anything uses it, so every machine starts from the same weights.

``build_policy(out_dir)`` is how that policy was made, kept to reproduce it or to build another one. It writes a
Hugging Face model directory (``save_pretrained``: config, safetensors weights, tokenizer with a ChatML chat
template, generation config) and ``manifest.json`` with the build settings, the warm-up trace, the sha256 of every
file of the directory and the wall time. The warm-up trains on the task's chain-of-thought targets (loss on
response tokens only) and stops as soon as the sampled pass@1 (temperature 1.0) on a dev split (disjoint from the
held-out evaluation problems) reaches ``target_pass1``: a policy that solves some problems and has room to learn.
Everything is seeded, uses 1 torch thread and ``torch.use_deterministic_algorithms(True)``, so a rebuild on the
same machine gives the same weights (the checksum in the manifest tells). The weights also depend on the
torch/transformers versions and on the CPU's instruction set, which decides the floating-point summation order of
the kernels: on one machine, seven settings of ``ATEN_CPU_CAPABILITY`` / ``MKL_CBWR`` gave five different
policies, warmed up in 600 to 1,000 steps. The manifest records the versions and the CPU (``platform``). The
packaged policy is the default build (``PolicyConfig()``) on a Sapphire Rapids CPU with torch 2.13 and
transformers 5.10.4 (800 warm-up steps); a rebuild elsewhere is a different policy.

    python -m verl_resrl.demo.policy --verify-packaged      # check the packaged policy
    python -m verl_resrl.demo.policy OUT_DIR [--force]      # build (or reuse when the manifest verifies)
    python -m verl_resrl.demo.policy OUT_DIR --verify       # check the files against the manifest
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from verl_resrl.cpu.tiny_assets import EOS, PAD, build_bpe_tokenizer
from verl_resrl.demo import task as demo_task
from verl_resrl.demo.evaluate_policy import prompt_ids, sample_completions, score_completions
from verl_resrl.demo.task import N_TRAIN_PROBLEMS
N_DEV_PROBLEMS = 64
DEV_SEED = 3
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1

# The policy shipped with the package (package data), and the sha256 of its weights.
STARTING_POLICY_DIR = Path(__file__).resolve().with_name("starting_policy")
STARTING_POLICY_SHA256 = "ca9d4e95a1fa6276e2639556cc188e9144a490d2e79d8be0a84fdf88b3e0b405"


@dataclass(frozen=True)
class PolicyConfig:
    seed: int = 0
    vocab_size: int = 320
    hidden_size: int = 256  # well above ResRL's rank 64, as in real models (rank << hidden size)
    intermediate_size: int = 512
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 256
    # warm-up
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    max_steps: int = 2500
    eval_every: int = 100
    eval_samples: int = 4  # samples per dev problem for the stopping rule
    target_pass1: float = 0.30
    threads: int = 1  # one thread: deterministic, and robust on a shared machine (2 OMP threads on busy cores crawl)
    n_train: int = N_TRAIN_PROBLEMS
    n_dev: int = N_DEV_PROBLEMS


# --- tokenizer and model ------------------------------------------------------------------------------------

def tokenizer_corpus(problems) -> list[str]:
    return [f"<|im_start|>user\n{p.prompt}<|im_end|>\n<|im_start|>assistant\n{p.solution}<|im_end|>\n"
            for p in problems]


def build_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE (digits split one by one) trained on ``texts``, with the ChatML chat template."""
    return build_bpe_tokenizer(texts, vocab_size, split_digits=True)


def build_model(config: PolicyConfig, tokenizer):
    """A randomly initialised ``Qwen2ForCausalLM`` (seeded) sized by ``config`` for ``tokenizer``."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    eos_id, pad_id = tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(PAD)
    hf_config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        rope_theta=10000.0,
    )
    torch.manual_seed(config.seed)
    model = Qwen2ForCausalLM(hf_config).to(torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=eos_id)
    return model


# --- warm-up ------------------------------------------------------------------------------------------------

def encode_examples(tokenizer, problems) -> list[tuple[list[int], int]]:
    """(prompt + solution + EOS token ids, prompt length) per problem; the prompt as veRL's rollout builds it."""
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    out = []
    for ids, p in zip(prompt_ids(tokenizer, problems), problems):
        target = tokenizer(p.solution, add_special_tokens=False)["input_ids"] + [eos_id]
        out.append((ids + target, len(ids)))
    return out


def collate(examples, pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(examples):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention[row, :len(ids)] = 1
        labels[row, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
    return input_ids, attention, labels


def warm_up(model, tokenizer, config: PolicyConfig, train_problems, dev_problems, log=print) -> list[dict]:
    """Supervised warm-up on the chain-of-thought targets until the sampled dev pass@1 reaches the target.

    Returns the trace: one entry per dev evaluation (step, loss, dev pass@1, seconds).
    """
    import torch

    examples = encode_examples(tokenizer, train_problems)
    pad_id = tokenizer.pad_token_id
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    optim = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps)))
    trace, order, losses = [], [], []
    start = time.time()
    for step in range(1, config.max_steps + 1):
        if len(order) < config.batch_size:
            order += rng.sample(range(len(examples)), len(examples))
        batch, order = order[:config.batch_size], order[config.batch_size:]
        model.train()
        input_ids, attention, labels = collate([examples[i] for i in batch], pad_id)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        schedule.step()
        losses.append(loss.item())
        if step % config.eval_every == 0 or step == config.max_steps:
            completions = sample_completions(model, tokenizer, dev_problems, config.eval_samples, seed=config.seed + step)
            dev = score_completions(dev_problems, completions)
            entry = {"step": step, "loss": round(sum(losses) / len(losses), 4), "dev_pass@1": round(dev["pass@1"], 4),
                     "seconds": round(time.time() - start, 1)}
            losses = []
            trace.append(entry)
            log(f"[demo policy] warm-up step {step}: loss {entry['loss']:.3f}, dev pass@1 {entry['dev_pass@1']:.3f} "
                f"({entry['seconds']:.0f} s)")
            if dev["pass@1"] >= config.target_pass1:
                break
    return trace


# --- build, manifest, verify --------------------------------------------------------------------------------

def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_checksums(model_dir) -> dict[str, str]:
    model_dir = Path(model_dir)
    return {p.name: sha256_file(p) for p in sorted(model_dir.iterdir()) if p.is_file() and p.name != MANIFEST}


def verify_policy(model_dir) -> dict:
    """The manifest of ``model_dir`` after checking that every recorded file is present with its sha256."""
    model_dir = Path(model_dir)
    manifest_path = model_dir / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} missing: build the policy with python -m verl_resrl.demo.policy")
    manifest = json.loads(manifest_path.read_text())
    for name, expected in manifest["sha256"].items():
        path = model_dir / name
        if not path.is_file():
            raise ValueError(f"{path} missing (listed in {manifest_path})")
        actual = sha256_file(path)
        if actual != expected:
            raise ValueError(f"{path}: sha256 {actual} != {expected} recorded in {manifest_path}")
    return manifest


class StartingPolicyError(RuntimeError):
    """The packaged starting policy is missing or does not match its checksums."""


def starting_policy(dest=None, source=STARTING_POLICY_DIR,
                    expected_sha256: str = STARTING_POLICY_SHA256) -> tuple[Path, dict]:
    """The packaged starting policy's directory and manifest, after checking every file's sha256 and the weights'.

    With ``dest``, the files are copied there (replacing what is there) and the copy is checked too; the returned
    directory is then ``dest``. Raises :class:`StartingPolicyError` naming the fix when a check fails.
    """
    source = Path(source)
    try:
        manifest = verify_policy(source)
        weights = manifest["sha256"].get("model.safetensors")
        if weights != expected_sha256:
            raise ValueError(f"manifest records weights sha256 {weights}, expected {expected_sha256}")
        if dest is not None:
            dest = Path(dest)
            dest.mkdir(parents=True, exist_ok=True)
            for name in [*manifest["sha256"], MANIFEST]:
                shutil.copyfile(source / name, dest / name)
            manifest = verify_policy(dest)
    except (OSError, ValueError, KeyError) as err:
        raise StartingPolicyError(
            f"starting policy check failed: {err}. The packaged policy ({source}) is incomplete or altered: "
            f"reinstall the package (pip install --force-reinstall --no-deps verl-resrl, or in a checkout "
            f"git checkout -- verl_resrl/demo/starting_policy), or build a policy on this machine with python -m "
            f"verl_resrl.demo.policy OUT_DIR (another CPU gives other weights, so other numbers)") from err
    return (dest if dest is not None else source), manifest


def _versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


def _platform() -> dict[str, str]:
    """The CPU the weights were computed on: its model name and the kernels torch dispatched to."""
    import platform

    import torch

    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"machine": platform.machine(), "cpu": model,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def build_policy(out_dir, config: PolicyConfig = PolicyConfig(), force: bool = False, log=print) -> dict:
    """Build (or reuse, when its manifest matches ``config`` and verifies) the starting policy in ``out_dir``.

    Returns the manifest.
    """
    import torch

    out = Path(out_dir)
    if not force and (out / MANIFEST).is_file():
        try:
            manifest = verify_policy(out)
        except ValueError as err:
            log(f"[demo policy] rebuilding: {err}")
        else:
            if manifest.get("config") == asdict(config) and manifest.get("version") == MANIFEST_VERSION:
                log(f"[demo policy] reusing {out} (checksums verified)")
                return manifest
            log(f"[demo policy] rebuilding {out}: built with other settings")
    start = time.time()
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    try:
        train = demo_task.generate(config.n_train, demo_task.TRAIN_SEED)
        dev = demo_task.generate(config.n_dev, DEV_SEED, exclude={p.expression for p in train})
        tokenizer = build_tokenizer(tokenizer_corpus(train) * 2, config.vocab_size)
        model = build_model(config, tokenizer)
        n_params = sum(p.numel() for p in model.parameters())
        log(f"[demo policy] Qwen2 with {n_params / 1e6:.2f} M parameters, vocabulary {len(tokenizer)}; warm-up "
            f"until dev pass@1 >= {config.target_pass1} (at most {config.max_steps} steps)")
        trace = warm_up(model, tokenizer, config, train, dev, log=log)
        out.mkdir(parents=True, exist_ok=True)
        if (out / MANIFEST).exists():
            (out / MANIFEST).unlink()
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    manifest = {
        "version": MANIFEST_VERSION,
        "config": asdict(config),
        "parameters": n_params,
        "vocab_size": len(tokenizer),
        "warmup_steps": trace[-1]["step"] if trace else 0,
        "reached_target": bool(trace) and trace[-1]["dev_pass@1"] >= config.target_pass1,
        "trace": trace,
        "build_seconds": round(time.time() - start, 1),
        "versions": _versions(),
        "platform": _platform(),
        "sha256": file_checksums(out),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    log(f"[demo policy] saved {out} in {manifest['build_seconds']:.0f} s; weights sha256 "
        f"{manifest['sha256'].get('model.safetensors', '?')}")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build or verify the demo's starting policy.")
    parser.add_argument("out_dir", type=Path, nargs="?")
    parser.add_argument("--verify-packaged", action="store_true", help="check the policy shipped with the package")
    parser.add_argument("--force", action="store_true", help="rebuild even if a verified build exists")
    parser.add_argument("--verify", action="store_true", help="only check the files against the manifest")
    parser.add_argument("--target-pass1", type=float, default=PolicyConfig.target_pass1)
    parser.add_argument("--max-steps", type=int, default=PolicyConfig.max_steps)
    args = parser.parse_args(argv)
    if args.verify_packaged:
        path, manifest = starting_policy()
        print(f"{path}: {len(manifest['sha256'])} files verified, weights sha256 {STARTING_POLICY_SHA256}")
        return
    if args.out_dir is None:
        parser.error("OUT_DIR is required unless --verify-packaged")
    if args.verify:
        manifest = verify_policy(args.out_dir)
        print(f"{args.out_dir}: {len(manifest['sha256'])} files verified")
        return
    config = PolicyConfig(target_pass1=args.target_pass1, max_steps=args.max_steps)
    build_policy(args.out_dir, config, force=args.force)


if __name__ == "__main__":
    main()
