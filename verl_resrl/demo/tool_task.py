"""The demo arithmetic task with a calculator tool: tiny assets for veRL's multi-turn tool agent loop on CPU.

``build_tool_assets(out_dir)`` writes

* ``model/`` — a byte-level BPE tokenizer whose ChatML chat template renders tools (their names, in a system
  turn), assistant tool calls in the Hermes format (``<tool_call>{"name": ..., "arguments": ...}</tool_call>``)
  and tool results as Qwen2.5 does (a user turn holding ``<tool_response>...</tool_response>``), and a tiny
  ``Qwen2ForCausalLM`` (0.1 M parameters) given a short supervised warm-up on two kinds of answers: a call
  ``calculator(expression)`` followed, after the tool's result, by ``Answer: <result>`` (70 %), or the demo
  task's own chain of thought. Sampled at temperature 1 it calls the tool in part of its responses, copies
  expression and result imperfectly and gets some direct answers wrong, so groups mix correct and wrong
  responses, with and without tool output inside them;
* ``train.parquet`` / ``val.parquet`` — demo-task problems of two terms up to 9 (:mod:`verl_resrl.demo.task`,
  whose ``compute_score`` is the reward: the decoded response must end with ``Answer: <value>``);
* ``manifest.json`` — the build settings, the warm-up losses and the sha256 of the weights; a second call with
  the same settings reuses the build.

The warm-up sequences are built with veRL's own Continuous Token builder (the one its agent loop uses for a
``qwen2`` model), so the prompt, the inserted turn boundary and the tool turn are token for token what the
agent loop will feed the model. :func:`tool_agent_overrides` gives the ``main_ppo`` overrides of a run;

    python -m verl_resrl.cpu.launch $(python -m verl_resrl.demo.tool_task OUT_DIR) algorithm.adv_estimator=resrl

trains it on CPU.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from verl_resrl.cpu.tiny_assets import EOS, PAD, build_bpe_tokenizer
from verl_resrl.demo import task as demo_task
from verl_resrl.demo.calculator_tool import TOOL_CONFIG_PATH, TOOL_NAME, TOOL_SCHEMA
from verl_resrl.demo.policy import sha256_file

TOOL_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
# Tools are listed by name only: the tiny model's context is short.
CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools:{% for tool in tools %} "
    "{{ tool.function.name if tool.function is defined else tool.name }}{% endfor %}<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'tool' %}"
    "<|im_start|>user\n<tool_response>\n{{ message.content }}\n</tool_response><|im_end|>\n"
    "{% elif message.role == 'assistant' and message.tool_calls %}"
    "<|im_start|>assistant\n{{ message.content or '' }}{% for call in message.tool_calls %}"
    "<tool_call>{\"name\": \"{{ call.function.name }}\", \"arguments\": {{ call.function.arguments | tojson }}}"
    "</tool_call>{% endfor %}<|im_end|>\n"
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ToolTaskConfig:
    seed: int = 0
    # small problems (two terms up to 9): a 0.1 M-parameter model learns to call, copy and answer in seconds
    max_operand: int = 9
    n_terms: int = 2
    n_train: int = 128
    n_val: int = 16
    tool_share: float = 0.7  # share of warm-up answers that call the calculator
    vocab_size: int = 360
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 256
    steps: int = 200
    batch_size: int = 32
    lr: float = 5e-3
    threads: int = 1


@dataclass(frozen=True)
class ToolAssets:
    model_path: str
    train_files: str
    val_files: str
    reward_path: str
    tool_config_path: str
    reward_name: str = "compute_score"


def tool_call_text(expression: str) -> str:
    """The Hermes tool call the warm-up teaches (what veRL's ``hermes`` parser reads)."""
    arguments = json.dumps({"expression": expression})
    return f'<tool_call>{{"name": "{TOOL_NAME}", "arguments": {arguments}}}</tool_call>'


def problems(config: ToolTaskConfig) -> tuple[list, list]:
    """The training and validation problems (disjoint expressions) of the demo task's generator."""
    shape = dict(min_terms=config.n_terms, max_terms=config.n_terms, max_operand=config.max_operand)
    train = demo_task.generate(config.n_train, demo_task.TRAIN_SEED, **shape)
    val = demo_task.generate(config.n_val, demo_task.TEST_SEED, exclude={p.expression for p in train}, **shape)
    return train, val


def build_tokenizer(problems, config: ToolTaskConfig):
    """BPE on the task's rendered conversations, the tool markers as whole added tokens, the tool template."""
    texts = []
    for p in problems:
        texts.append(f"<|im_start|>system\nTools: {TOOL_NAME}<|im_end|>\n<|im_start|>user\n{p.prompt}<|im_end|>\n"
                     f"<|im_start|>assistant\n{tool_call_text(p.expression)}<|im_end|>\n<|im_start|>user\n"
                     f"<tool_response>\n{p.answer}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
                     f"Answer: {p.answer}<|im_end|>\n<|im_start|>assistant\n{p.solution}<|im_end|>\n")
    for marker in TOOL_TOKENS:  # whole tokens: keep them out of the merges
        texts = [t.replace(marker, " ") for t in texts]
    tokenizer = build_bpe_tokenizer(texts, config.vocab_size, split_digits=True)
    tokenizer.add_tokens(TOOL_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def encode_episode(builder, tokenizer, problem, use_tool: bool) -> tuple[list[int], list[int]]:
    """(token ids, loss mask) of one episode as the tool agent loop assembles it; the mask marks model tokens."""
    from verl_resrl.demo.calculator_tool import calculator_response

    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    messages = [{"role": "user", "content": problem.prompt}]
    ids = builder.build_initial_tokens(messages, tools=[TOOL_SCHEMA])
    mask = [0] * len(ids)
    if use_tool:
        call = tokenizer.encode(tool_call_text(problem.expression), add_special_tokens=False) + [eos_id]
        ids, mask = ids + call, mask + [1] * len(call)
        assistant = {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": TOOL_NAME, "arguments": {"expression": problem.expression}}}]}
        history = messages + [assistant]
        tool = {"role": "tool", "content": calculator_response({"expression": problem.expression})}
        merged = builder.merge_context_tokens(history, history + [tool], ids, tools=[TOOL_SCHEMA])
        mask += [0] * (len(merged.token_ids) - len(ids))
        ids = merged.token_ids
        answer = f"Answer: {problem.answer}"
    else:
        answer = problem.solution
    tail = tokenizer.encode(answer, add_special_tokens=False) + [eos_id]
    return ids + tail, mask + [1] * len(tail)


def build_model(config: ToolTaskConfig, tokenizer):
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    eos_id, pad_id = tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(PAD)
    hf_config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=pad_id, rope_theta=10000.0,
    )
    torch.manual_seed(config.seed)
    model = Qwen2ForCausalLM(hf_config).to(torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=eos_id)
    return model


def warm_up(model, episodes: list[tuple[list[int], list[int]]], pad_id: int, config: ToolTaskConfig) -> list[float]:
    """Supervised steps on the model tokens of ``episodes``; returns the mean loss of every 50 steps."""
    import torch

    rng = random.Random(config.seed)
    optim = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.98))
    losses, trace = [], []
    model.train()
    for step in range(1, config.steps + 1):
        batch = [episodes[i] for i in rng.sample(range(len(episodes)), config.batch_size)]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        labels = torch.full_like(input_ids, -100)
        for row, (ids, mask) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            labels[row, : len(ids)] = torch.where(torch.tensor(mask).bool(), torch.tensor(ids), -100)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == config.steps:
            trace.append(round(sum(losses) / len(losses), 4))
            losses = []
    model.eval()
    return trace


def build_tool_assets(out_dir, config: ToolTaskConfig = ToolTaskConfig(), log=print) -> ToolAssets:
    """Write (or reuse, when the manifest matches ``config`` and the weights' sha256) the assets in ``out_dir``."""
    import torch

    from verl_resrl import verl_internals

    create_continuous_token_builder = verl_internals.resolve("demo.create_continuous_token_builder")

    out = Path(out_dir)
    model_dir = out / "model"
    assets = ToolAssets(model_path=str(model_dir), train_files=str(out / "train.parquet"),
                        val_files=str(out / "val.parquet"), reward_path=demo_task.__file__,
                        tool_config_path=TOOL_CONFIG_PATH)
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        weights = model_dir / "model.safetensors"
        if (manifest.get("version") == MANIFEST_VERSION and manifest.get("config") == asdict(config)
                and weights.is_file() and manifest.get("weights_sha256") == sha256_file(weights)):
            return assets
    start = time.time()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        train, val = problems(config)
        tokenizer = build_tokenizer(train, config)
        builder = create_continuous_token_builder(tokenizer, hf_model_type="qwen2")
        rng = random.Random(config.seed)
        episodes = [encode_episode(builder, tokenizer, p, rng.random() < config.tool_share) for p in train]
        model = build_model(config, tokenizer)
        trace = warm_up(model, episodes, tokenizer.pad_token_id, config)
    finally:
        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    demo_task.write_parquet(train, assets.train_files, "train")
    demo_task.write_parquet(val, assets.val_files, "test")
    manifest = {"version": MANIFEST_VERSION, "config": asdict(config), "warmup_loss": trace,
                "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer),
                "build_seconds": round(time.time() - start, 1),
                "weights_sha256": sha256_file(model_dir / "model.safetensors")}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    log(f"[tool task] built {out} in {manifest['build_seconds']} s; warm-up loss {trace}")
    return assets


def multi_turn_overrides(tool_config_path: str = TOOL_CONFIG_PATH, max_assistant_turns: int = 2) -> list[str]:
    """``main_ppo`` overrides that run veRL's tool agent loop with the tools of ``tool_config_path``."""
    return [
        "actor_rollout_ref.rollout.multi_turn.enable=True",
        "actor_rollout_ref.rollout.multi_turn.format=hermes",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={tool_config_path}",
        f"actor_rollout_ref.rollout.multi_turn.max_assistant_turns={max_assistant_turns}",
        "actor_rollout_ref.rollout.agent.default_agent_loop=tool_agent",
    ]


def tool_agent_overrides(assets: ToolAssets, max_assistant_turns: int = 2) -> list[str]:
    """``main_ppo`` overrides for ``assets``' data, model and reward under the tool agent loop."""
    return [
        f"data.train_files={assets.train_files}",
        f"data.val_files={assets.val_files}",
        f"actor_rollout_ref.model.path={assets.model_path}",
        f"reward.custom_reward_function.path={assets.reward_path}",
        f"reward.custom_reward_function.name={assets.reward_name}",
        *multi_turn_overrides(assets.tool_config_path, max_assistant_turns),
    ]


def cpu_demo_overrides(assets: ToolAssets, steps: int = 2) -> list[str]:
    """Every ``main_ppo`` override of a small CPU run of the tool task (after :func:`cpu_overrides`)."""
    from verl_resrl.cpu.launch import tiny_grpo_overrides

    return tiny_grpo_overrides(assets, steps=steps, response_length=64) + multi_turn_overrides(assets.tool_config_path)


def main() -> None:
    import sys

    parser = argparse.ArgumentParser(description="Build the tool task's assets; print the main_ppo overrides of a "
                                                 "CPU run, one per line (for python -m verl_resrl.cpu.launch).")
    parser.add_argument("out_dir")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    assets = build_tool_assets(args.out_dir, log=lambda line: print(line, file=sys.stderr))
    print("\n".join(cpu_demo_overrides(assets, args.steps)))


if __name__ == "__main__":
    main()
