"""The ``hf`` rollout server's batching (verl_resrl.cpu.hf_rollout.HFRolloutServer, used directly, not as a Ray
actor): batched and one-at-a-time decoding give the same tokens and log-probs, log-probs equal a full forward
recomputation (also after a weight sync), the window / batch-limit settings, and per-request errors that never
block the other requests. (generate_batch's greedy batch-vs-single check and top-k/top-p are in
test_cpu_backend.py.)"""

from __future__ import annotations

import asyncio
import re
import time
from types import SimpleNamespace

import pytest
import torch

from verl_resrl.cpu import hf_rollout
from verl_resrl.cpu.hf_rollout import (
    BATCH_WINDOW_ENV,
    MAX_BATCH_ENV,
    MAX_WAIT_ENV,
    THREADS_ENV,
    HFRolloutServer,
    SamplingSettings,
    _Request,
    generate_batch,
    resolve_max_batch_size,
)

PROMPT_LENGTH, RESPONSE_LENGTH = 32, 12
SAMPLED = {"temperature": 0.8, "top_p": 1.0, "top_k": -1, "logprobs": True}
GREEDY = {"temperature": 0, "top_p": 1.0, "top_k": -1, "logprobs": True}


@pytest.fixture(scope="module")
def model_config(tmp_path_factory):
    from verl.workers.config import HFModelConfig

    from verl_resrl.cpu.tiny_assets import build_tiny_assets

    assets = build_tiny_assets(tmp_path_factory.mktemp("tiny_hf"))
    return HFModelConfig(path=assets.model_path)


@pytest.fixture
def make_server(model_config, monkeypatch):
    for name in (BATCH_WINDOW_ENV, MAX_BATCH_ENV, MAX_WAIT_ENV, THREADS_ENV):
        monkeypatch.delenv(name, raising=False)

    def make(max_batch=None, window=None, seed: int = 7, max_model_len=None, max_wait=None, free_cache_engine=False):
        for name, value in ((MAX_BATCH_ENV, max_batch), (BATCH_WINDOW_ENV, window), (MAX_WAIT_ENV, max_wait)):
            if value is not None:
                monkeypatch.setenv(name, str(value))
        config = SimpleNamespace(
            max_model_len=max_model_len,
            prompt_length=PROMPT_LENGTH,
            response_length=RESPONSE_LENGTH,
            seed=seed,
            max_num_seqs=1024,
            free_cache_engine=free_cache_engine,
        )
        server = HFRolloutServer(config, model_config, replica_rank=0, max_batch_size=config.max_num_seqs)
        for name in (BATCH_WINDOW_ENV, MAX_BATCH_ENV, MAX_WAIT_ENV):
            monkeypatch.delenv(name, raising=False)
        return server

    threads = torch.get_num_threads()  # the server sets the process's torch threads: restore them afterwards
    yield make
    torch.set_num_threads(threads)


def _prompts(n: int, seed: int = 0, vocab: int = 320) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 20, (n,), generator=g).tolist()  # different lengths: left padding in a batch
    return [torch.randint(3, vocab, (k,), generator=g).tolist() for k in lengths]


async def _generate_all(server, prompts, params, return_exceptions=False):
    calls = [server.generate(prompt_ids=p, sampling_params=dict(pr), request_id=str(i))
             for i, (p, pr) in enumerate(zip(prompts, params))]
    return await asyncio.gather(*calls, return_exceptions=return_exceptions)


def _forward_logprobs(model, prompt, tokens, temperature):
    """The actor's recomputation: one forward pass over prompt + response, log_softmax(logits / T)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1].float()
        logp = torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), -1)
        return logp.gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1)


# --- batched == one at a time ------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [SAMPLED, GREEDY], ids=["sampled", "greedy"])
def test_server_batched_equals_one_at_a_time(make_server, params):
    prompts = _prompts(10)
    prompts += [prompts[0], prompts[0]]  # a group's repeated prompt gets its own stream per occurrence
    batched, single = make_server(), make_server(max_batch=1)
    out_b = asyncio.run(_generate_all(batched, prompts, [params] * len(prompts)))
    out_s = asyncio.run(_generate_all(single, prompts, [params] * len(prompts)))
    assert batched.get_stats()["max_batch"] == len(prompts)  # really decoded together
    assert single.get_stats()["max_batch"] == 1 and single.get_stats()["batches"] == len(prompts)
    for b, s in zip(out_b, out_s):
        assert b.token_ids == s.token_ids
        assert len(b.token_ids) == len(b.log_probs) and 1 <= len(b.token_ids) <= RESPONSE_LENGTH
        assert torch.allclose(torch.tensor(b.log_probs), torch.tensor(s.log_probs), atol=1e-5, rtol=0)
    if params is SAMPLED:
        assert out_b[-1].token_ids != out_b[-2].token_ids  # same prompt, different samples
        assert len({tuple(o.token_ids) for o in out_b}) == len(prompts)


def test_sampled_logprobs_match_forward_after_weight_sync(make_server):
    server = make_server()
    # a weight sync: the server must sample from, and score with, the new weights
    new_weights = {k: v + 0.05 * torch.randn_like(v) for k, v in server.model.state_dict().items()}
    new_weights.pop("lm_head.weight", None)  # tied to the embeddings: not sent
    server.update_weights(new_weights, global_steps=3)
    prompts = _prompts(6, seed=1)
    params = [dict(SAMPLED, temperature=t) for t in (0.8, 0.8, 0.8, 1.0, 1.0, 1.3)]  # 3 batches by settings
    outs = asyncio.run(_generate_all(server, prompts, params))
    assert server.get_stats()["batches"] == 3
    for k, v in new_weights.items():
        assert torch.equal(server.model.state_dict()[k], v)
    worst = 0.0
    for prompt, pr, out in zip(prompts, params, outs):
        ref = _forward_logprobs(server.model, prompt, out.token_ids, pr["temperature"])
        worst = max(worst, float((torch.tensor(out.log_probs) - ref).abs().max()))
        assert out.extra_fields["global_steps"] == 3
    assert worst < 1e-5, worst



def test_weight_sync_in_buckets(make_server):
    """A sync split into buckets loads every one; only the last (final=True) checks the coverage."""
    server = make_server()
    own = server.model.state_dict()
    new_weights = {k: v + 0.05 * torch.randn_like(v) for k, v in own.items() if k != "lm_head.weight"}
    buckets = list(hf_rollout.weight_buckets(new_weights.items(), max_bytes=64 * 1024))
    assert len(buckets) > 3 and sum(map(len, buckets)) == len(new_weights)
    for bucket in buckets[:-1]:
        server.update_weights(bucket, global_steps=2, final=False)
    assert server.get_stats()["weight_updates"] == 0  # not finished yet
    assert server.update_weights(buckets[-1], global_steps=2, final=True) == len(new_weights)
    assert server.get_stats()["weight_updates"] == 1 and server.global_steps == 2
    for k, v in new_weights.items():
        assert torch.equal(server.model.state_dict()[k], v)
    # the coverage check spans the buckets of one sync, and a failed sync leaves nothing for the next
    first = dict(list(new_weights.items())[:1])
    server.update_weights(first, final=False)
    with pytest.raises(KeyError, match="weight sync lacks"):
        server.update_weights({}, final=True)
    with pytest.raises(KeyError, match="weight sync lacks"):
        server.update_weights({}, final=True)
    with pytest.raises(KeyError, match="weights not in the rollout model"):
        server.update_weights({"no.such.weight": torch.zeros(1)}, final=False)


def test_sleep_releases_the_weights_until_the_next_complete_sync(make_server):
    """free_cache_engine: sleep frees every parameter, requests fail until a sync has covered them all again, and
    the refilled model generates exactly what it did before; without it sleep keeps the weights."""
    server = make_server(free_cache_engine=True)
    prompts = _prompts(4, seed=2)
    before = asyncio.run(_generate_all(server, prompts, [GREEDY] * len(prompts)))
    weights = {k: v.clone() for k, v in server.model.state_dict().items() if k != "lm_head.weight"}
    tied = server.model.get_output_embeddings().weight is server.model.get_input_embeddings().weight

    asyncio.run(server.sleep())
    assert all(p.numel() == 0 for p in server.model.parameters())
    assert server.get_stats()["weight_releases"] == 1
    with pytest.raises(RuntimeError, match="request 0 arrived while the server's weights are released"):
        asyncio.run(_generate_all(server, prompts[:1], [GREEDY]))
    asyncio.run(server.sleep())  # a second sleep has nothing left to free
    assert server.get_stats()["weight_releases"] == 1

    buckets = list(hf_rollout.weight_buckets(weights.items(), max_bytes=64 * 1024))
    server.update_weights(buckets[0], final=False)
    with pytest.raises(KeyError, match="weight sync lacks"):
        server.update_weights({}, final=True)
    with pytest.raises(RuntimeError, match="weights are released"):  # an incomplete sync restores nothing
        asyncio.run(_generate_all(server, prompts[:1], [GREEDY]))
    for bucket in buckets[:-1]:
        server.update_weights(bucket, global_steps=1, final=False)
    server.update_weights(buckets[-1], global_steps=1, final=True)
    for k, v in weights.items():
        assert torch.equal(server.model.state_dict()[k], v)
    assert (server.model.get_output_embeddings().weight is server.model.get_input_embeddings().weight) == tied
    after = asyncio.run(_generate_all(server, prompts, [GREEDY] * len(prompts)))
    assert [o.token_ids for o in after] == [o.token_ids for o in before]

    keeping = make_server(free_cache_engine=False)
    asyncio.run(keeping.sleep())
    assert keeping.get_stats()["weight_releases"] == 0
    assert len(asyncio.run(_generate_all(keeping, prompts[:1], [GREEDY]))[0].token_ids) >= 1


def test_weight_buckets_group_by_size_and_keep_order():
    weights = [(f"w{i}", torch.zeros(n)) for i, n in enumerate([10, 10, 30, 5, 100, 1])]  # float32: 4 bytes each
    buckets = list(hf_rollout.weight_buckets(iter(weights), max_bytes=80))
    assert [list(b) for b in buckets] == [["w0", "w1"], ["w2"], ["w3"], ["w4"], ["w5"]]
    assert [list(b) for b in hf_rollout.weight_buckets(iter([]), max_bytes=80)] == [[]]
    source = torch.ones(3)
    (copied,) = hf_rollout.weight_buckets(iter([("a", source)]), max_bytes=80)
    source.zero_()
    assert torch.equal(copied["a"], torch.ones(3))  # a copy: the trainer may reuse its buffer


def test_prompt_forward_computes_the_last_position_logits_only(model_config):
    """Prompt logits over the whole vocabulary are never read: the LM head sees one position per row."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_config.local_path, attn_implementation="sdpa").eval()
    positions = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: positions.append(o.shape[1]))
    settings = SamplingSettings(temperature=0.9, top_p=1.0, top_k=-1, ignore_eos=True)
    prompts = _prompts(3, seed=4)
    batch = [_Request(p, 4, settings, True, None, seed=i, generator=torch.Generator().manual_seed(i))
             for i, p in enumerate(prompts)]
    generate_batch(model, batch, {2}, 0, torch.Generator().manual_seed(0))
    hook.remove()
    assert max(len(p) for p in prompts) > 1 and positions == [1] * 4
    for prompt, r in zip(prompts, batch):
        ref = _forward_logprobs(model, prompt, r.token_ids, settings.temperature)
        assert torch.allclose(torch.tensor(r.log_probs), ref, atol=1e-5, rtol=0)

def test_generate_batch_sampled_streams_independent_of_batch(model_config):
    """generate_batch itself: per-request generators make a sampled row independent of its batch-mates, with
    top-k / top-p and different budgets, and log-probs equal the forward recomputation."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_config.local_path, attn_implementation="sdpa").eval()
    settings = SamplingSettings(temperature=0.9, top_p=0.95, top_k=40, ignore_eos=True)
    prompts = _prompts(5, seed=2)
    budgets = [3, 12, 7, 12, 1]

    def requests(idx):
        return [_Request(prompts[i], budgets[i], settings, True, None, seed=100 + i,
                         generator=torch.Generator().manual_seed(100 + i)) for i in idx]

    batch = requests(range(5))
    generate_batch(model, batch, {2}, 0, torch.Generator().manual_seed(0))
    for i, r in enumerate(batch):
        alone = requests([i])
        generate_batch(model, alone, {2}, 0, torch.Generator().manual_seed(0))
        assert r.token_ids == alone[0].token_ids and len(r.token_ids) == budgets[i]
        ref = _forward_logprobs(model, prompts[i], r.token_ids, settings.temperature)
        assert torch.allclose(torch.tensor(r.log_probs), ref, atol=1e-5, rtol=0)


def test_generate_batch_reports_each_request_when_it_ends(model_config):
    """on_finished fires once per request, as soon as its own sequence ends (before longer batch-mates finish),
    and the batch shrinks as rows finish without changing any row's output."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_config.local_path, attn_implementation="sdpa").eval()
    settings = SamplingSettings(temperature=1.0, top_p=1.0, top_k=-1, ignore_eos=True)
    prompts = _prompts(8, seed=4)
    budgets = [2, 10, 4, 10, 1, 6, 10, 3]
    batch = [_Request(prompts[i], budgets[i], settings, True, None, seed=i, generator=torch.Generator().manual_seed(i))
             for i in range(8)]
    seen = []  # (request index, tokens of every request at that moment)
    widths = []
    real_forward = model.forward

    def forward(*args, **kwargs):
        widths.append(kwargs["input_ids"].shape[0])
        return real_forward(*args, **kwargs)

    model.forward = forward
    generate_batch(model, batch, {2}, 0, torch.Generator().manual_seed(0),
                   on_finished=lambda r: seen.append((batch.index(r), [len(x.token_ids) for x in batch])))
    assert sorted(i for i, _ in seen) == list(range(8))
    for i, lengths in seen:
        assert lengths[i] == budgets[i]
        assert all(n <= budgets[i] for n in lengths)  # nobody is ahead of the request that just ended
    assert widths[0] == 8 and widths[-1] < 8  # finished rows were dropped
    model.forward = real_forward
    for i, r in enumerate(batch):
        alone = [_Request(prompts[i], budgets[i], settings, True, None, seed=i,
                          generator=torch.Generator().manual_seed(i))]
        generate_batch(model, alone, {2}, 0, torch.Generator().manual_seed(0))
        assert r.token_ids == alone[0].token_ids
        assert r.log_probs == pytest.approx(alone[0].log_probs, abs=1e-5)


# --- settings -----------------------------------------------------------------------------------------------------


def test_window_and_batch_limit_settings(make_server, monkeypatch, capsys):
    server = make_server(max_batch=4, window=0.3)
    assert server.max_batch_size == 4 and server.batch_window_s == 0.3

    async def staggered():
        first = asyncio.create_task(server.generate([5, 6, 7], GREEDY, "a"))
        await asyncio.sleep(0.05)  # arrives inside the 0.3 s window of the first request
        rest = [server.generate(p, GREEDY, str(i)) for i, p in enumerate(_prompts(8, seed=3))]
        return await asyncio.gather(first, *rest)

    outs = asyncio.run(staggered())
    stats = server.get_stats()
    assert len(outs) == 9 and stats["max_batch"] == 4 and stats["batches"] == 3  # 4 + 4 + 1

    # a trickle of requests, each within one window of the last, is collected until the maximum wait
    async def trickle(server, count, gap):
        tasks = []
        for i in range(count):
            tasks.append(asyncio.create_task(server.generate([5, 6, 7 + i], GREEDY, str(i))))
            await asyncio.sleep(gap)
        return await asyncio.gather(*tasks)

    patient = make_server(window=0.15, max_wait=10)
    asyncio.run(trickle(patient, 6, 0.03))
    assert patient.get_stats()["batches"] == 1 and patient.get_stats()["max_batch"] == 6
    hasty = make_server(window=0.15, max_wait=0.05)
    asyncio.run(trickle(hasty, 6, 0.03))
    assert hasty.get_stats()["batches"] >= 2 and hasty.get_stats()["max_batch"] < 6

    # after a weight sync, a round is collected until it has as many requests as the previous one, across
    # pauses longer than the window (a busy agent loop); the sync prints one line about the round that ended
    async def burst_with_pause(server, first, second, pause):
        tasks = [asyncio.create_task(server.generate([5, 6, 7 + i], GREEDY, str(i))) for i in range(first)]
        await asyncio.sleep(pause)
        tasks += [asyncio.create_task(server.generate([8, 9, 7 + i], GREEDY, f"b{i}")) for i in range(second)]
        return await asyncio.gather(*tasks)

    rounds = make_server(window=0.02, max_wait=5)
    asyncio.run(burst_with_pause(rounds, 6, 0, 0))
    weights = {k: v for k, v in rounds.model.state_dict().items() if k != "lm_head.weight"}
    rounds.update_weights(weights, global_steps=1)
    assert re.search(r"round: requests 6 in 1 batches, decode_s [\d.]+, first_request_to_last_token_s [\d.]+, "
                     r"arrivals_span_s [\d.]+", capsys.readouterr().out)
    asyncio.run(burst_with_pause(rounds, 3, 3, 0.2))
    assert rounds.get_stats()["batches"] == 2  # one per round
    rounds.update_weights(weights, global_steps=2)  # the next round expects 6: a round of 2 waits at most max_wait
    fewer = make_server(window=0.02, max_wait=0.3)
    asyncio.run(burst_with_pause(fewer, 4, 0, 0))
    fewer.update_weights(weights, global_steps=1)
    asyncio.run(burst_with_pause(fewer, 2, 0, 0))
    assert fewer.get_stats()["batches"] == 2

    assert make_server().max_batch_size == 1024  # rollout.max_num_seqs without the variable
    for name, value in ((MAX_BATCH_ENV, "0"), (MAX_BATCH_ENV, "lots"), (BATCH_WINDOW_ENV, "-1"),
                        (BATCH_WINDOW_ENV, "nan"), (MAX_WAIT_ENV, "inf"), (THREADS_ENV, "0")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match=name):
            make_server()
        monkeypatch.delenv(name)
    assert resolve_max_batch_size(256) == 256 and resolve_max_batch_size() == 1024
    with pytest.raises(ValueError, match=r"actor_rollout_ref\.rollout\.max_num_seqs must be >= 1, got 0"):
        resolve_max_batch_size(0)
    monkeypatch.setenv(MAX_BATCH_ENV, "8")  # the variable, when set, decides alone
    assert resolve_max_batch_size(0) == 8 and resolve_max_batch_size(256) == 8
    monkeypatch.delenv(MAX_BATCH_ENV)
    monkeypatch.setenv(THREADS_ENV, "2")
    before = torch.get_num_threads()
    try:
        assert make_server().get_stats()["torch_threads"] == 2
    finally:
        torch.set_num_threads(before)


# --- bad input: that request fails, the others complete ------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, params, message",
    [
        ([], {}, "empty prompt"),
        (list(range(3, 3 + PROMPT_LENGTH + RESPONSE_LENGTH)), {}, "leaves no room"),
        ([5, 6, 7], {"max_tokens": 0}, "max_tokens=0 must be >= 1"),
        ([5, 6, 7], {"max_tokens": -4}, "max_tokens=-4"),
        ([5, 6, 7], {"max_new_tokens": 0}, "max_new_tokens=0"),
        ([5, 6, 7], {"max_tokens": "many"}, "max_tokens='many'"),
        ([5, 6, 7], {"n": 5}, "n=5 exceeds the batch limit of 4"),
        ([5, 6, 7], {"n": 2}, "one sequence"),
        ([5, 6, 7], {"n": 0}, "n=0"),
        ([5, 10_000], {}, r"outside the vocabulary \[0, 320\)"),
        ([5, -1], {}, "outside the vocabulary"),
        ([5, 6, 7], {"top_p": 0.0}, "top_p=0.0"),
        ([5, 6, 7], {"temperature": -1.0}, "temperature=-1.0"),
        ([5, 6, 7], {"repetition_penalty": 1.2}, "repetition_penalty"),
        ([5, 6, 7], {"stop_token_ids": [10_000]}, r"stop_token_ids \[10000\]"),
        ([5, 6, 7], {"stop_token_ids": ["x"]}, "stop_token_ids"),
        ([5, 6, 7], {"stop": ["</tool_call>"]}, "stop strings are not supported"),
    ],
    ids=["empty", "too_long", "max_tokens_0", "max_tokens_neg", "max_new_tokens_0", "max_tokens_str", "n_over_limit",
         "n_2", "n_0", "token_too_big", "token_negative", "top_p_0", "temperature_neg", "repetition_penalty",
         "stop_token_id_too_big", "stop_token_id_str", "stop_strings"],
)
def test_bad_request_fails_alone(make_server, prompt, params, message):
    server = make_server(max_batch=4, window=0.05)
    good = _prompts(3, seed=4)
    prompts = [good[0], prompt, good[1], good[2]]
    all_params = [SAMPLED, dict(SAMPLED, **params), SAMPLED, SAMPLED]
    outs = asyncio.run(asyncio.wait_for(_generate_all(server, prompts, all_params, return_exceptions=True), 60))
    assert isinstance(outs[1], ValueError) and outs[1].args[0].startswith("hf rollout")
    assert re.search(message, str(outs[1])), str(outs[1])
    for out in (outs[0], outs[2], outs[3]):
        assert not isinstance(out, BaseException) and len(out.token_ids) >= 1
    assert server.get_stats()["rejected"] == 1 and server.get_stats()["max_batch"] == 3


def test_prompt_beyond_model_positions_is_rejected(make_server):
    server = make_server(max_model_len=10_000)  # the model itself has 512 positions
    assert server.context_length() == 512
    with pytest.raises(ValueError, match="no room"):
        asyncio.run(server.generate(list(range(3, 300)) * 2, SAMPLED, "long"))
    # the budget is clamped to the room left in the context
    out = asyncio.run(server.generate([5] * 508, dict(SAMPLED, max_tokens=50), "tight"))
    assert len(out.token_ids) <= 4


def test_decode_failure_fails_only_its_request(make_server, monkeypatch):
    """A request that passes the checks but breaks the decoding: the batch is retried request by request, the
    others get exactly their one-at-a-time output, the culprit gets the exception."""
    poison = [1, 1, 1]  # _prompts never uses ids < 3
    real = hf_rollout.generate_batch

    def fragile(model, requests, *args):
        if any(r.prompt_ids == poison for r in requests):
            for r in requests:  # fail half-way, after consuming random numbers
                r.token_ids.append(1)
                if r.generator is not None:
                    torch.rand((), generator=r.generator)
            raise RuntimeError("decode blew up")
        return real(model, requests, *args)

    monkeypatch.setattr(hf_rollout, "generate_batch", fragile)
    prompts = _prompts(5, seed=5)
    prompts[2] = poison
    server, reference = make_server(), make_server(max_batch=1)
    outs = asyncio.run(asyncio.wait_for(_generate_all(server, prompts, [SAMPLED] * 5, return_exceptions=True), 60))
    refs = asyncio.run(_generate_all(reference, prompts, [SAMPLED] * 5, return_exceptions=True))
    assert isinstance(outs[2], RuntimeError) and "decode blew up" in str(outs[2])
    for i in (0, 1, 3, 4):
        assert outs[i].token_ids == refs[i].token_ids and outs[i].log_probs == pytest.approx(refs[i].log_probs)
    assert server.get_stats()["failed"] == 1
    # the server still serves afterwards
    assert len(asyncio.run(server.generate([5, 6], SAMPLED, "after")).token_ids) >= 1


def test_failure_after_some_requests_ended_retries_only_the_rest(make_server, monkeypatch):
    """Requests that already got their result when the batch fails keep it; only the unfinished are retried."""
    poison = [1, 1, 1]
    real = hf_rollout.generate_batch

    def fails_at_the_end(model, requests, eos, pad, generator, on_finished=None):
        culprit = [r for r in requests if r.prompt_ids == poison]
        others = [r for r in requests if r.prompt_ids != poison]
        if others:
            real(model, others, eos, pad, generator, on_finished)
        if culprit:
            raise RuntimeError("decode blew up late")

    monkeypatch.setattr(hf_rollout, "generate_batch", fails_at_the_end)
    prompts = _prompts(4, seed=6) + [poison]
    server, reference = make_server(), make_server(max_batch=1)
    outs = asyncio.run(asyncio.wait_for(_generate_all(server, prompts, [SAMPLED] * 5, return_exceptions=True), 60))
    refs = asyncio.run(_generate_all(reference, prompts[:4], [SAMPLED] * 4))
    assert isinstance(outs[4], RuntimeError)
    assert [o.token_ids for o in outs[:4]] == [r.token_ids for r in refs]
    assert server.get_stats()["batches"] == 2 and server.get_stats()["failed"] == 1  # the batch + the culprit alone


def test_cancelled_request_does_not_block_others(make_server):
    server = make_server(window=0.05)

    async def run():
        doomed = asyncio.create_task(server.generate([5, 6, 7], SAMPLED, "doomed"))
        others = [asyncio.create_task(server.generate(p, SAMPLED, str(i))) for i, p in enumerate(_prompts(3, 6))]
        await asyncio.sleep(0)
        doomed.cancel()
        done = await asyncio.wait_for(asyncio.gather(*others), 60)
        await server.wait_for_requests_to_drain()
        return doomed, done

    doomed, done = asyncio.run(run())
    assert doomed.cancelled() and all(len(o.token_ids) >= 1 for o in done)
    assert server.get_stats()["max_batch"] == 3  # the cancelled request was not decoded


# --- multi-turn: a sample's next turn is a new request whose prompt extends its previous prompt + output -----------


def test_multiturn_follow_up_requests(make_server, capsys):
    """veRL's tool agent loop sends turn 2 as prompt + turn-1 output + tool output: such requests are decoded like
    any other (log-probs equal the forward recomputation on the grown prompt), are counted as follow-up turns, do
    not raise the next round's expected burst, and a lone follow-up is decoded after one quiet window instead of
    waiting the maximum time for a burst."""
    server = make_server(window=0.02, max_wait=3.0)
    weights = {k: v for k, v in server.model.state_dict().items() if k != "lm_head.weight"}
    tool_output = [11, 12, 13, 14]

    async def episode(prompt, name):
        first = await server.generate(prompt, SAMPLED, f"{name}-1")
        grown = prompt + first.token_ids + tool_output
        second = await server.generate(grown, SAMPLED, f"{name}-2")
        return grown, second

    async def step(prompts):
        return await asyncio.gather(*[episode(p, str(i)) for i, p in enumerate(prompts)])

    prompts = [p[:10] for p in _prompts(4, seed=8)]
    outs = asyncio.run(step(prompts))
    for grown, second in outs:
        ref = _forward_logprobs(server.model, grown, second.token_ids, SAMPLED["temperature"])
        assert float((torch.tensor(second.log_probs) - ref).abs().max()) < 1e-5
        assert len(grown) + len(second.token_ids) <= PROMPT_LENGTH + RESPONSE_LENGTH
    assert server._round.requests == 8 and server._round.follow_ups == 4
    server.update_weights(weights, global_steps=1)
    assert "follow_up_turns 4" in capsys.readouterr().out
    assert server._expected_round == 4  # first turns only

    async def burst_then_lone_follow_up():
        firsts = await asyncio.gather(*[server.generate(p, SAMPLED, str(i)) for i, p in enumerate(prompts)])
        start = time.perf_counter()
        await server.generate(prompts[0] + firsts[0].token_ids + tool_output, SAMPLED, "lone")
        return time.perf_counter() - start

    batches = server.get_stats()["batches"]
    waited = asyncio.run(burst_then_lone_follow_up())
    assert server.get_stats()["batches"] == batches + 2  # the burst in one batch, the follow-up alone
    assert waited < 1.5, f"a lone follow-up waited {waited:.2f} s (max wait 3 s)"


def test_stop_token_ids_end_a_request(make_server):
    """``stop_token_ids`` (tool parsers such as Gemma's add their closing token) end the sequence after that
    token, which is kept, even with ``ignore_eos``; other requests of the batch are not affected."""
    server = make_server()
    prompts = _prompts(3, seed=9)
    free = asyncio.run(_generate_all(server, prompts, [dict(GREEDY, ignore_eos=True)] * 3))
    stop = free[0].token_ids[2]
    params = [dict(GREEDY, ignore_eos=True, stop_token_ids=[stop]), dict(GREEDY, ignore_eos=True),
              dict(GREEDY, ignore_eos=True)]
    stopped = asyncio.run(_generate_all(make_server(), prompts, params))
    cut = free[0].token_ids.index(stop) + 1
    assert stopped[0].token_ids == free[0].token_ids[:cut] and len(stopped[0].log_probs) == cut
    assert [o.token_ids for o in stopped[1:]] == [o.token_ids for o in free[1:]]
