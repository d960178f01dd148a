"""ResRL under veRL's multi-turn tool agent loop (``tool_agent``) on CPU.

``test_tool_agent_loop_masks_and_residuals``: veRL's own ``ToolAgentLoop`` (no Ray) drives the ``hf`` rollout
server and the calculator on the tool task; its ``response_mask`` is 0 exactly on the tool turns, the server's
log-probs of the model tokens equal a forward pass over the whole multi-turn sequence, and ResRL's residuals
from the model's hidden states of these real responses equal ``compute_residuals`` on the model tokens alone.

``test_resrl_under_tool_agent_loop``: the real ``main_ppo``.

The tiny policy of :mod:`verl_resrl.demo.tool_task` calls the calculator tool (:mod:`verl_resrl.demo.calculator_tool`)
in about half of its responses; the agent loop runs the call, puts the tool's answer into the response (tokens
with ``response_mask`` = 0) and asks the model for its next turn through the ``hf`` rollout server. The run
must show tool output inside responses (dumped rollouts: each ``<tool_response>`` holds what the calculator
returns for the call before it), more than one turn per sample, and ResRL reaching every negative response
of every mixed group (``resrl/coverage == 1.0``) with finite advantages.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from types import SimpleNamespace

import pytest
import torch

from verl_resrl.cpu.runs import run_cpu_main_ppo
from verl_resrl.demo.calculator_tool import calculator_response
from verl_resrl.demo.tool_task import build_tool_assets, cpu_demo_overrides

pytestmark = pytest.mark.e2e

TOOL_TURN = re.compile(r"<tool_call>(.*?)</tool_call>.*?<tool_response>\n(.*?)\n</tool_response>", re.DOTALL)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_tool_assets(tmp_path_factory.mktemp("tool_task"))


def tool_turns(output: str) -> list[tuple[str, str]]:
    """(tool call JSON, tool response) pairs of one decoded response."""
    return TOOL_TURN.findall(output)


class DirectServerManager:
    """The agent loop's server client, calling one in-process ``HFRolloutServer`` (no Ray)."""

    def __init__(self, server):
        self.server = server

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        return await self.server.generate(prompt_ids=prompt_ids, sampling_params=dict(sampling_params),
                                          request_id=request_id)


def run_tool_agent_loop(assets, prompts, n):
    """veRL's ToolAgentLoop on each prompt ``n`` times against an in-process hf server; (outputs, server)."""
    from hydra import compose, initialize_config_module
    from transformers import AutoTokenizer
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap
    from verl.experimental.agent_loop.tool_agent_loop import ToolAgentLoop
    from verl.tools.tool_registry import load_all_tools
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from verl.workers.config import HFModelConfig

    from verl_resrl.cpu.hf_rollout import HFRolloutServer
    from verl_resrl.cpu.launch import cpu_overrides

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        config = compose(config_name="ppo_trainer", overrides=cpu_overrides() + cpu_demo_overrides(assets))
    rollout = config.actor_rollout_ref.rollout
    server = HFRolloutServer(SimpleNamespace(max_model_len=None, prompt_length=rollout.prompt_length,
                                             response_length=rollout.response_length, seed=0, max_num_seqs=64),
                             HFModelConfig(path=assets.model_path), replica_rank=0, max_batch_size=64)
    tokenizer = AutoTokenizer.from_pretrained(assets.model_path)
    tools = load_all_tools(tool_config_path=assets.tool_config_path, function_tool_path=None)
    sampling = dict(temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, logprobs=True)

    async def run_all():
        loop = ToolAgentLoop(trainer_config=DictConfigWrap(config), server_manager=DirectServerManager(server),
                             tokenizer=tokenizer, processor=None, dataset_cls=RLHFDataset,
                             data_config=DictConfigWrap(config.data), hf_model_type="qwen2", tools=ToolListWrap(tools))
        runs = [loop.run(dict(sampling), raw_prompt=[{"role": "user", "content": p}]) for p in prompts for _ in range(n)]
        return await asyncio.gather(*runs)

    return asyncio.run(run_all()), server, tokenizer


def test_tool_agent_loop_masks_and_residuals(assets):
    from transformers import AutoModelForCausalLM

    from verl_resrl import ResRLConfig, compute_residuals
    from verl_resrl.demo import task as demo_task
    from verl_resrl.demo.tool_task import ToolTaskConfig, problems

    _, val = problems(ToolTaskConfig())
    val = val[:8]
    outputs, server, tokenizer = run_tool_agent_loop(assets, [p.prompt for p in val], n=4)
    assert server.stats["rejected"] == server.stats["failed"] == 0

    with_tool = 0
    for out in outputs:
        mask = out.response_mask
        assert len(mask) == len(out.response_ids) == len(out.response_logprobs)
        tool_ids = [t for t, m in zip(out.response_ids, mask) if not m]
        calls = tool_turns(tokenizer.decode(out.response_ids))
        if not tool_ids:
            assert out.num_turns == 2 and not calls
            continue
        with_tool += 1
        assert out.num_turns >= 3 and mask[0] == 1
        arguments = json.loads(calls[0][0])["arguments"]
        assert tokenizer.decode(tool_ids).startswith(
            f"\n<|im_start|>user\n<tool_response>\n{calculator_response(arguments)}\n</tool_response><|im_end|>\n")
        assert all(lp == 0.0 for lp, m in zip(out.response_logprobs, mask) if not m)
    print(f"tool agent loop: {with_tool} of {len(outputs)} responses with tool output; follow-up requests "
          f"{server._round.follow_ups} of {server._round.requests}")
    assert with_tool >= 4
    assert server._round.follow_ups == sum(out.num_turns >= 4 for out in outputs)

    # ResRL on these responses: the model's states at the response positions, holes where tool output is
    model = AutoModelForCausalLM.from_pretrained(assets.model_path).eval()
    width = max(len(o.response_ids) for o in outputs)
    hidden = torch.zeros(len(outputs), width, model.config.hidden_size)
    mask = torch.zeros(len(outputs), width)
    worst = 0.0
    for row, out in enumerate(outputs):
        ids = out.prompt_ids + out.response_ids
        with torch.no_grad():
            result = model(torch.tensor([ids]), output_hidden_states=True)
        span = slice(len(out.prompt_ids) - 1, len(ids) - 1)  # the states that predict the response tokens
        hidden[row, : len(out.response_ids)] = result.hidden_states[-2][0, span]
        mask[row, : len(out.response_ids)] = torch.tensor(out.response_mask, dtype=torch.float32)
        logp = torch.log_softmax(result.logits[0, span].float(), -1).gather(
            -1, torch.tensor(out.response_ids)[:, None]).squeeze(-1)
        model_tokens = torch.tensor(out.response_mask).bool()
        worst = max(worst, float((logp[model_tokens] - torch.tensor(out.response_logprobs)[model_tokens]).abs().max()))
    assert worst < 1e-4, worst  # the rollout's log-probs over several turns match the actor's recomputation

    group_ids = [f"g{i // 4}" for i in range(len(outputs))]
    scores = [demo_task.score(tokenizer.decode(o.response_ids, skip_special_tokens=True), val[i // 4].answer)
              for i, o in enumerate(outputs)]
    positive = torch.tensor(scores) > 0
    config = ResRLConfig(rank=16, subspace="exact")
    holed = compute_residuals(hidden, mask, group_ids, positive, config)
    compact_hidden = torch.zeros_like(hidden)
    compact_mask = torch.zeros_like(mask)
    for row in range(len(outputs)):
        keep = mask[row].bool()
        compact_hidden[row, : int(keep.sum())] = hidden[row][keep]
        compact_mask[row, : int(keep.sum())] = 1
    direct = compute_residuals(compact_hidden, compact_mask, group_ids, positive, config)
    assert holed.stats.mixed_groups > 0, scores
    assert holed.stats.coverage == 1.0 and holed.stats.group_rank == direct.stats.group_rank
    assert not bool((holed.has_residual & ~mask.bool()).any())
    for row in range(len(outputs)):
        keep = mask[row].bool()
        n = int(keep.sum())
        assert torch.equal(holed.has_residual[row][keep], direct.has_residual[row, :n])
        torch.testing.assert_close(holed.residual[row][keep], direct.residual[row, :n], rtol=1e-5, atol=1e-6)


def test_resrl_under_tool_agent_loop(assets, tmp_path):
    rollouts = tmp_path / "rollouts"
    overrides = cpu_demo_overrides(assets, steps=2) + [
        "algorithm.adv_estimator=resrl",
        "+algorithm.resrl.rank=16",
        f"trainer.rollout_data_dir={rollouts}",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
    ]
    result = run_cpu_main_ppo(overrides, cwd=str(tmp_path))
    assert result.returncode == 0, result.output[-6000:]
    assert sorted(result.steps) == [1, 2], sorted(result.steps)
    print(f"main_ppo: {result.seconds:.0f} s; " + "; ".join(
        f"step {step}: coverage {m['resrl/coverage']}, mixed groups {m['resrl/mixed_groups']:.0f}, "
        f"num_turns/mean {m['num_turns/mean']:.2f}" for step, m in sorted(result.steps.items())))

    samples = [json.loads(line) for step in (1, 2) for line in (rollouts / f"{step}.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 16
    with_tool = [s for s in samples if tool_turns(s["output"])]
    print(f"responses with tool output: {len(with_tool)} of {len(samples)}; "
          f"correct: {sum(s['score'] > 0 for s in samples)}")
    assert len(with_tool) >= 4, [s["output"] for s in samples]
    for sample in with_tool:
        for call, response in tool_turns(sample["output"]):
            try:
                arguments = json.loads(call)["arguments"]
            except (ValueError, KeyError):
                continue  # the calculator was not called with this (the agent loop answered with an error)
            assert response == calculator_response(arguments), sample["output"]

    mixed_steps = 0
    for step in (1, 2):
        m = result.steps[step]
        assert all(math.isfinite(m[k]) for k in ("critic/advantages/max", "critic/advantages/min", "actor/pg_loss"))
        assert m["actor/grad_norm"] > 0, m
        if m["resrl/mixed_groups"] > 0:
            mixed_steps += 1
            assert m["resrl/coverage"] == 1.0, m
            assert m["resrl/computed_groups"] == m["resrl/mixed_groups"], m
            assert m["resrl/weighted_negative_tokens"] > 0, m
    assert mixed_steps > 0, "no step had a mixed group"
    assert max(result.steps[step]["num_turns/max"] for step in (1, 2)) >= 4  # user, call, tool, answer
