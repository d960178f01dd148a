"""An HF-transformers rollout for veRL on CPU, registered as ``actor_rollout_ref.rollout.name=hf``.

veRL's agent loop talks to rollout *servers* token-in/token-out: ``server.generate(prompt_ids=...,
sampling_params=..., request_id=...) -> TokenOutput``. vLLM/SGLang need GPUs, so this module provides the same
contract with ``transformers``:

* :class:`HFRolloutServer` — a Ray actor per replica holding a copy of the policy. Requests are queued and
  served in batches: requests that arrive together and share sampling settings are decoded together
  (left-padded, one KV cache), with temperature / top-p / top-k / max tokens / stop on EOS and on the
  request's ``stop_token_ids`` (the stop token is kept in the output, as vLLM does), and the per-token
  log-probs of the sampled tokens under ``logits / temperature`` (what veRL's actor computes).
* :class:`HFReplica` — the ``RolloutReplica`` that launches one server per replica (hybrid mode: a replica
  per ``tensor_model_parallel_size`` trainer ranks, default 1 on CPU: one replica per rank). The model is
  never sharded: with ``tensor_model_parallel_size=N`` one server serves N trainer ranks, which makes a
  step's rollouts the same for any number of trainer ranks that is a multiple of N (each request's random
  stream depends on its replica).
* :class:`HFServerAdapter` — the ``BaseRollout`` living in each trainer worker; at every weight sync it
  receives the trainer's full (un-sharded) parameters and pushes them to its replica's server.

Batching. veRL's agent loop sends one request per sample, concurrently, but spread over up to a few hundred ms
(it prepares each sample in turn). After the first queued request the server keeps collecting until the queue
holds a full batch, the maximum wait has passed, or no new request has arrived for one collection window once
the round (the requests since the last weight sync) has had as many requests as the previous round; then it
decodes up to the maximum batch size of the queued requests, grouped by sampling settings. Requests arriving
meanwhile queue for the next batch. Multi-turn agent loops (veRL's ``tool_agent``) send a sample's next turn
as a new request whose prompt extends an earlier request's prompt and output: such follow-up requests do not
count towards the round's expected burst (they trickle in as tool calls finish), so a batch of them closes
after one quiet collection window instead of waiting for the burst. A request is answered as soon as its own
sequence ends (the agent loop scores and stores it while the others decode), and finished rows leave the
batch and its KV cache. Each request
has its own random stream (seeded from the rollout seed, the replica, the training step and the prompt), so its
tokens and log-probs are the same whether it is decoded alone or in a batch. At each weight sync the server
prints one line about the round that ended (requests, batches, decode time, first request to last token).
Settings (environment variables, read when the server starts; Ray passes the driver's environment to its
actors):

* ``VERL_RESRL_HF_BATCH_WINDOW_S`` — the collection window in seconds (default ``0.02``; ``0`` = just yield
  once to the event loop);
* ``VERL_RESRL_HF_MAX_WAIT_S`` — the longest a batch keeps collecting (default ``0.5``);
* ``VERL_RESRL_HF_MAX_BATCH`` — the maximum number of sequences decoded together (default: the rollout's
  ``actor_rollout_ref.rollout.max_num_seqs``, 256 in veRL's rollout config; 1024 when the server is built without
  one; ``1`` = one request at a time, unbatched);
* ``VERL_RESRL_HF_THREADS`` — torch intra-op threads of the rollout server (default 1, as Ray gives its
  actors). On 2 cores with the 1 M model and one step's 128 x 32 tokens, a second thread decodes faster in
  isolation (``benchmarks/bench_hf_decode.py``: 0.56 s vs 0.73 s) but not inside ``main_ppo``, where the other
  core is taken by the agent-loop, reward and TransferQueue processes (``benchmarks/bench_cpu_step.py
  --variants batched --repeats 2 --rollout-threads {2,1}``: generation 1.97 vs 1.82 s per step, server decode
  0.73 vs 0.66 s);
* ``VERL_RESRL_HF_WEIGHT_BUCKET_MB`` — a weight sync travels to the server in buckets of about this many MiB
  (default 256), so it needs about two buckets of extra memory on each side, not two more copies of the model
  (a 0.5 B model in float32 is 2.5 GB: whole-model syncs ran a 24 GiB machine out of memory).

Sleep. With ``actor_rollout_ref.rollout.free_cache_engine=True`` (veRL's default) the server frees its weights
when veRL puts the replicas to sleep after generation, as vLLM's sleep does on GPU, and the next weight sync
allocates and fills them again: training then never holds the rollout's copy of the model (2.5 GB for
Qwen2.5-Coder-0.5B in float32; with it, two steps of the code recipe fit a 24 GiB machine). A request that
arrives between the sleep and the end of the next full sync fails with a ``RuntimeError``: the server never
generates from weights it does not have. ``free_cache_engine=False`` keeps the weights in memory all along.

The first forward of a batch (the prompts) computes the logits of the last position only (``logits_to_keep=1``
where the model takes it): a 256-token prompt batch of 32 rows over a 152 k vocabulary would otherwise
allocate 5 GB of logits that are never read.

Bad input (an empty prompt, token ids outside the vocabulary, a prompt that leaves no room in the context,
``max_tokens`` <= 0, stop token ids outside the vocabulary, stop strings (``stop``: not supported),
``n`` other than 1 — the agent loop sends ``rollout.n`` separate requests — or above the
batch limit, unsupported sampling parameters) fails that request alone, with a ``ValueError`` naming the
problem, raised to the agent loop before it is queued. Should a batch still fail while decoding, its requests
are retried one by one so that only the failing one gets the exception.
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import logging
import numbers
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterable, Iterator, Optional

import ray
import torch

from verl_resrl import verl_internals
from verl_resrl._import_hook import when_imported

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "hf"
SERVER_NAME_PREFIX = "hf_"
BATCH_WINDOW_ENV = "VERL_RESRL_HF_BATCH_WINDOW_S"
MAX_BATCH_ENV = "VERL_RESRL_HF_MAX_BATCH"
THREADS_ENV = "VERL_RESRL_HF_THREADS"
MAX_WAIT_ENV = "VERL_RESRL_HF_MAX_WAIT_S"
WEIGHT_BUCKET_ENV = "VERL_RESRL_HF_WEIGHT_BUCKET_MB"
WEIGHT_BUCKET_MB = 256  # default size of one weight-sync bucket
BATCH_WINDOW_S = 0.02  # default collection window: a batch closes after this long without a new request
MAX_WAIT_S = 0.5  # default cap on the collection time of one batch


def _env_number(name: str, cast, minimum, default):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {cast.__name__}") from None
    if not minimum <= value < float("inf"):  # also rejects NaN
        raise ValueError(f"{name}={raw!r}: must be a finite number >= {minimum}")
    return value


def batch_window_s() -> float:
    """The collection window: ``VERL_RESRL_HF_BATCH_WINDOW_S`` or :data:`BATCH_WINDOW_S`."""
    return _env_number(BATCH_WINDOW_ENV, float, 0.0, BATCH_WINDOW_S)


def max_wait_s() -> float:
    """The longest a request waits for others: ``VERL_RESRL_HF_MAX_WAIT_S`` or :data:`MAX_WAIT_S`."""
    return _env_number(MAX_WAIT_ENV, float, 0.0, MAX_WAIT_S)


def resolve_max_batch_size(configured: Optional[int] = None) -> int:
    """The batch limit: ``VERL_RESRL_HF_MAX_BATCH``, else ``configured`` (``rollout.max_num_seqs``), else 1024."""
    from_env = _env_number(MAX_BATCH_ENV, int, 1, None)
    if from_env is not None:
        return from_env
    if configured is None:
        return 1024
    if int(configured) < 1:
        raise ValueError(f"hf rollout: actor_rollout_ref.rollout.max_num_seqs must be >= 1, got {configured}")
    return int(configured)


def rollout_threads() -> int:
    """Torch threads of the rollout server: ``VERL_RESRL_HF_THREADS`` or 1."""
    return _env_number(THREADS_ENV, int, 1, 1)


def weight_bucket_bytes() -> int:
    """Bytes of one weight-sync bucket: ``VERL_RESRL_HF_WEIGHT_BUCKET_MB`` (MiB) or :data:`WEIGHT_BUCKET_MB`."""
    return int(_env_number(WEIGHT_BUCKET_ENV, float, 1.0, float(WEIGHT_BUCKET_MB)) * 2**20)


def weight_buckets(weights: Iterable[tuple[str, torch.Tensor]], max_bytes: int) -> Iterator[dict[str, torch.Tensor]]:
    """``weights`` (name, tensor) as CPU copies, grouped into dicts of at most ``max_bytes`` (a larger tensor
    travels alone). Every item is consumed, in order: un-sharding FSDP2 parameters is a collective."""
    bucket: dict[str, torch.Tensor] = {}
    size = 0
    for name, tensor in weights:
        tensor = tensor.detach().to("cpu").clone()
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > max_bytes:
            yield bucket
            bucket, size = {}, 0
        bucket[name] = tensor
        size += nbytes
    yield bucket  # possibly empty: the last bucket closes the sync


def _return_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise, and the RSS would not drop)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator decides
        pass


def server_actor_name(replica_rank: int) -> str:
    """Ray name of replica ``replica_rank``'s server (looked up by the trainer-side adapter)."""
    return f"{SERVER_NAME_PREFIX}server_{replica_rank}"


# --------------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingSettings:
    """The sampling settings a batch must share (each request has its own token budget)."""

    temperature: float
    top_p: float
    top_k: int
    ignore_eos: bool

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "SamplingSettings":
        rep = float(params.get("repetition_penalty", 1.0) or 1.0)
        if rep != 1.0:
            raise ValueError(f"hf rollout: repetition_penalty={rep} is not supported (use 1.0)")
        top_k = params.get("top_k", -1)
        settings = cls(
            temperature=float(params.get("temperature", 1.0)),
            top_p=float(params.get("top_p", 1.0)),
            top_k=-1 if top_k is None else int(top_k),
            ignore_eos=bool(params.get("ignore_eos", False)),
        )
        if not settings.temperature >= 0 or settings.temperature == float("inf"):
            raise ValueError(f"hf rollout: temperature={settings.temperature} must be finite and >= 0 (0 = greedy)")
        if not 0 < settings.top_p <= 1:
            raise ValueError(f"hf rollout: top_p={settings.top_p} must be in (0, 1]")
        return settings


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (to -inf) the logits outside the top-k set and outside the top-p nucleus, row-wise."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # remove a token if the mass strictly before it already reaches top_p (always keeps the first)
        remove_sorted = (torch.cumsum(probs, dim=-1) - probs) >= top_p
        remove = torch.zeros_like(remove_sorted).scatter(-1, sorted_idx, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


@dataclass
class _Request:
    prompt_ids: list[int]
    max_tokens: int
    settings: SamplingSettings
    want_logprobs: bool
    future: asyncio.Future
    stop_token_ids: frozenset[int] = frozenset()  # besides EOS; honoured even with ignore_eos, as in vLLM
    token_ids: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    # the request's own random stream: its tokens do not depend on which requests share its batch
    generator: Optional[torch.Generator] = None
    seed: Optional[int] = None  # the stream's seed, to replay the request alone if its batch fails
    request_id: str = ""

    def reset(self) -> None:
        """Forget partial output and rewind the random stream (before decoding the request again)."""
        self.token_ids, self.log_probs = [], []
        if self.seed is not None:
            self.generator = torch.Generator().manual_seed(self.seed)


def request_seed(base_seed: int, replica_rank: int, global_steps, prompt_ids: list[int], occurrence: int) -> int:
    """Seed of a request's random stream: the same prompt asked again (a group's n samples) gets a new one."""
    import hashlib

    text = f"{base_seed}:{replica_rank}:{global_steps}:{occurrence}:" + ",".join(map(str, prompt_ids))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & ((1 << 63) - 1)


COMPACT_FRACTION = 0.25  # drop finished rows from the KV cache once a quarter of the live rows have finished


def _drop_rows(past, keep: torch.Tensor) -> bool:
    """Keep only the ``keep`` rows of a transformers KV cache (``Cache.batch_select_indices``, in place)."""
    select = getattr(past, "batch_select_indices", None)
    if select is None:
        return False
    select(keep)
    return True


@torch.no_grad()
def generate_batch(
    model: torch.nn.Module,
    requests: list[_Request],
    eos_token_ids: set[int],
    pad_token_id: int,
    generator: torch.Generator,
    on_finished: Optional[Callable[[_Request], None]] = None,
) -> None:
    """Decode ``requests`` (same :class:`SamplingSettings`) together; fills ``token_ids`` / ``log_probs``.

    ``on_finished(request)`` is called (from this thread) as soon as a request's sequence ends, so its caller
    can go on while the others decode. Finished rows are dropped from the batch (and its KV cache) once they
    are a quarter of the live rows: a row's logits do not depend on which rows share its batch.
    """
    settings = requests[0].settings
    device = next(model.parameters()).device
    n = len(requests)
    max_prompt = max(len(r.prompt_ids) for r in requests)
    input_ids = torch.full((n, max_prompt), pad_token_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros((n, max_prompt), dtype=torch.long, device=device)
    for i, r in enumerate(requests):  # left padding: every row's next token is at the last column
        input_ids[i, max_prompt - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids, dtype=torch.long)
        attention_mask[i, max_prompt - len(r.prompt_ids) :] = 1
    rows = list(requests)  # the request of each live batch row
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    past = None
    step_ids = input_ids
    greedy = settings.temperature <= 0
    # the prompt forward needs the last position's logits only (later steps have one position anyway)
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    for _ in range(max(r.max_tokens for r in requests)):
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1] :]
        out = model(
            input_ids=step_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past,
            use_cache=True,
            **last_only,
        )
        past = out.past_key_values
        logits = out.logits[:, -1, :].float()
        scaled = logits if greedy else logits / settings.temperature
        logprobs_all = torch.log_softmax(scaled, dim=-1)
        if greedy:
            next_ids = torch.argmax(logits, dim=-1)
        else:
            probs = torch.softmax(filter_logits(scaled, settings.top_k, settings.top_p), dim=-1)
            # inverse-CDF sampling with one uniform draw per row from the row's own stream
            uniform = torch.stack([torch.rand((), generator=r.generator or generator) for r in rows])
            cdf = probs.cumsum(dim=-1)
            next_ids = torch.searchsorted(cdf, (uniform * cdf[:, -1]).unsqueeze(-1).to(cdf.dtype), right=True)
            next_ids = next_ids.squeeze(-1).clamp(max=probs.shape[-1] - 1)
        next_logprobs = logprobs_all.gather(-1, next_ids[:, None]).squeeze(-1)
        for i, (r, token, logprob, done) in enumerate(
            zip(rows, next_ids.tolist(), next_logprobs.tolist(), finished.tolist())
        ):
            if done:
                continue
            r.token_ids.append(token)
            r.log_probs.append(logprob)
            if ((token in eos_token_ids and not settings.ignore_eos) or token in r.stop_token_ids
                    or len(r.token_ids) >= r.max_tokens):
                finished[i] = True
                if on_finished is not None:
                    on_finished(r)
        n_finished = int(finished.sum())
        if n_finished == len(rows):
            break
        step_ids = torch.where(finished, torch.full_like(next_ids, pad_token_id), next_ids)[:, None]
        attention_mask = torch.cat([attention_mask, (~finished).long()[:, None]], dim=-1)
        if n_finished >= COMPACT_FRACTION * len(rows):
            keep = (~finished).nonzero().squeeze(-1)
            if _drop_rows(past, keep):
                rows = [rows[i] for i in keep.tolist()]
                step_ids, attention_mask, finished = step_ids[keep], attention_mask[keep], finished[keep]


# --------------------------------------------------------------------------------------------------------------
# Server (Ray actor)
# --------------------------------------------------------------------------------------------------------------


@dataclass
class RoundTimes:
    """What one rollout round (the requests between two weight syncs) cost the server; printed at each sync."""

    requests: int = 0
    follow_ups: int = 0  # requests continuing an earlier request of the round (a multi-turn sample's next turn)
    batches: int = 0
    decode_s: float = 0.0
    first_arrival: Optional[float] = None
    last_arrival: Optional[float] = None
    last_decoded: Optional[float] = None

    def arrived(self, follow_up: bool = False) -> None:
        self.requests += 1
        self.follow_ups += int(follow_up)
        self.last_arrival = time.perf_counter()
        if self.first_arrival is None:
            self.first_arrival = self.last_arrival

    def decoded(self, start: float) -> None:
        self.batches += 1
        self.last_decoded = time.perf_counter()
        self.decode_s += self.last_decoded - start

    def summary(self) -> str:
        span = (self.last_decoded or self.first_arrival) - self.first_arrival
        return (f"requests {self.requests} in {self.batches} batches, decode_s {self.decode_s:.3f}, "
                f"first_request_to_last_token_s {span:.3f}, arrivals_span_s "
                f"{self.last_arrival - self.first_arrival:.3f}, follow_up_turns {self.follow_ups}")


def _resolve(request: _Request) -> None:
    if not request.future.done():
        request.future.set_result(None)


class HFRolloutServer:
    """One rollout replica: an HF causal LM serving token-in/token-out requests in batches."""

    def __init__(self, config, model_config, replica_rank: int, max_batch_size: int = 256):
        from transformers import AutoModelForCausalLM

        hf_model_config_cls = verl_internals.resolve("cpu.HFModelConfig")
        if not isinstance(model_config, hf_model_config_cls):
            model_config = verl_internals.resolve("cpu.omega_conf_to_dataclass")(
                model_config, dataclass_type=hf_model_config_cls
            )
        self.config = config
        self.model_config = model_config
        self.replica_rank = replica_rank
        self.max_batch_size = resolve_max_batch_size(max_batch_size)
        self.batch_window_s = batch_window_s()
        self.max_wait_s = max_wait_s()
        torch.set_num_threads(rollout_threads())
        self.global_steps = None
        path = model_config.local_path
        self.model = AutoModelForCausalLM.from_pretrained(
            path,
            torch_dtype=torch.float32,
            attn_implementation="sdpa",
            trust_remote_code=model_config.trust_remote_code,
        ).eval()
        tokenizer = model_config.tokenizer
        eos = model_config.generation_config.eos_token_id if model_config.generation_config is not None else None
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.eos_token_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else next(iter(self.eos_token_ids), 0)
        self.base_seed = int(getattr(config, "seed", 0) or 0)
        self.generator = torch.Generator().manual_seed(self.base_seed + 1000 * replica_rank)
        self._occurrences: dict[tuple[int, ...], int] = {}  # per prompt since the last weight sync
        self._finished: dict[int, set[int]] = {}  # length -> hashes of prompt + output of this round's requests
        self._queue: list[_Request] = []
        self._synced: set[str] = set()  # parameter names loaded by the buckets of the sync in progress
        self._loop_task: Optional[asyncio.Task] = None
        self._model_lock = threading.Lock()
        self._released: Optional[dict[str, tuple[torch.Size, torch.dtype]]] = None  # shapes while asleep
        self._weights_pending = False  # released, or refilled but not yet covered by a complete sync
        self.stats = {"requests": 0, "batches": 0, "weight_updates": 0, "weight_releases": 0, "rejected": 0,
                      "failed": 0, "max_batch": 0}
        self._round = RoundTimes()
        self._expected_round = 0  # first-turn requests of the previous round (between two weight syncs)
        print(
            f"[verl_resrl hf] rollout server {replica_rank}: torch threads {torch.get_num_threads()} "
            f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), batch window {self.batch_window_s}s, "
            f"max wait {self.max_wait_s}s, max batch {self.max_batch_size}",
            flush=True,
        )

    # -- generation ----------------------------------------------------------------------------------------------

    def context_length(self) -> int:
        """Tokens a sequence may hold: ``rollout.max_model_len`` (else prompt + response length), capped by the
        model's ``max_position_embeddings``."""
        max_model_len = self.config.max_model_len or (self.config.prompt_length + self.config.response_length)
        positions = getattr(self.model.config, "max_position_embeddings", None)
        return min(int(max_model_len), int(positions)) if positions else int(max_model_len)

    def _max_tokens(self, prompt_len: int, params: dict[str, Any]) -> int:
        context = self.context_length()
        room = context - prompt_len
        if room < 1:
            raise ValueError(
                f"hf rollout: prompt of {prompt_len} tokens leaves no room for a response within the context of "
                f"{context} tokens (rollout.max_model_len / prompt_length + response_length, model "
                "max_position_embeddings)"
            )
        if params.get("max_tokens") is not None:
            key = "max_tokens"
        elif params.get("max_new_tokens") is not None:
            key = "max_new_tokens"
        else:
            return max(1, min(self.config.response_length, room))
        wanted = params[key]
        if isinstance(wanted, bool) or not isinstance(wanted, (int, float)) or wanted != int(wanted):
            raise ValueError(f"hf rollout: {key}={wanted!r} must be a positive integer")
        if wanted <= 0:
            raise ValueError(f"hf rollout: {key}={wanted} must be >= 1")
        return min(int(wanted), room)

    def _check_prompt(self, prompt_ids: list[int]) -> None:
        if not prompt_ids:
            raise ValueError("hf rollout: empty prompt (no prompt token ids)")
        vocab = self.model.get_input_embeddings().num_embeddings
        bad = [t for t in prompt_ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"hf rollout: prompt token ids {bad[:5]} are outside the vocabulary [0, {vocab})")

    def _check_n(self, params: dict[str, Any]) -> None:
        n = params.get("n", 1)
        n = 1 if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"hf rollout: n={n!r} must be a positive integer")
        if n > self.max_batch_size:
            raise ValueError(
                f"hf rollout: n={n} exceeds the batch limit of {self.max_batch_size} sequences "
                f"({MAX_BATCH_ENV} / actor_rollout_ref.rollout.max_num_seqs)"
            )
        if n != 1:
            raise ValueError(
                f"hf rollout: n={n}: a request returns one sequence (veRL sends rollout.n separate requests)"
            )

    def _stop_token_ids(self, params: dict[str, Any]) -> frozenset[int]:
        if params.get("stop"):
            raise ValueError(f"hf rollout: stop strings are not supported (stop={params['stop']!r}); "
                             "use stop_token_ids")
        ids = params.get("stop_token_ids") or []
        vocab = self.model.get_input_embeddings().num_embeddings
        bad = [t for t in ids if isinstance(t, bool) or not isinstance(t, numbers.Integral) or not 0 <= t < vocab]
        if bad:
            raise ValueError(f"hf rollout: stop_token_ids {bad[:5]} are not token ids of the vocabulary [0, {vocab})")
        return frozenset(int(t) for t in ids)

    def _make_request(self, prompt_ids, sampling_params: dict[str, Any], request_id: str) -> _Request:
        """Validate one request and give it its random stream; raises ``ValueError`` on bad input."""
        prompt_ids = [int(t) for t in prompt_ids]
        params = dict(sampling_params or {})
        self._check_prompt(prompt_ids)
        self._check_n(params)
        max_tokens = self._max_tokens(len(prompt_ids), params)
        settings = SamplingSettings.from_params(params)
        stop_token_ids = self._stop_token_ids(params)
        occurrence = self._occurrences.get(tuple(prompt_ids), 0)
        self._occurrences[tuple(prompt_ids)] = occurrence + 1
        seed = request_seed(self.base_seed, self.replica_rank, self.global_steps, prompt_ids, occurrence)
        return _Request(
            generator=torch.Generator().manual_seed(seed),
            seed=seed,
            request_id=str(request_id),
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            settings=settings,
            want_logprobs=bool(params.get("logprobs", False)),
            future=asyncio.get_running_loop().create_future(),
            stop_token_ids=stop_token_ids,
        )

    async def generate(self, prompt_ids, sampling_params: dict[str, Any], request_id: str, **kwargs):
        """Generate one response (veRL's ``generate`` contract); returns a ``TokenOutput``.

        Bad input raises ``ValueError`` for this request only (see the module docstring).
        """
        token_output_cls = verl_internals.resolve("cpu.TokenOutput")
        try:
            for key in ("image_data", "video_data", "audio_data"):
                if kwargs.get(key) is not None:
                    raise NotImplementedError(f"hf rollout: {key} (multi-modal input) is not supported")
            if self._weights_pending:
                raise RuntimeError(
                    f"hf rollout: request {request_id} arrived while the server's weights are released (sleep "
                    "frees them; the next complete weight sync restores them)"
                )
            request = self._make_request(prompt_ids, sampling_params, request_id)
        except Exception:
            self.stats["rejected"] += 1
            raise
        self._queue.append(request)
        self.stats["requests"] += 1
        self._round.arrived(follow_up=self._is_follow_up(request.prompt_ids))
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._serve())
        await request.future
        sequence = request.prompt_ids + request.token_ids
        self._finished.setdefault(len(sequence), set()).add(hash(tuple(sequence)))
        return token_output_cls(
            token_ids=request.token_ids,
            log_probs=request.log_probs if request.want_logprobs else None,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    def _is_follow_up(self, prompt_ids: list[int]) -> bool:
        """Whether ``prompt_ids`` extends the prompt + output of a request that ended in this round."""
        return any(length < len(prompt_ids) and hash(tuple(prompt_ids[:length])) in hashes
                   for length, hashes in self._finished.items())

    async def _serve(self) -> None:
        """Drain the queue: collect simultaneous requests (:meth:`_collect`), then decode them in batches."""
        while self._queue:
            await self._collect()
            pending, self._queue = self._queue[: self.max_batch_size], self._queue[self.max_batch_size :]
            try:
                groups: dict[SamplingSettings, list[_Request]] = {}
                for r in pending:
                    if not r.future.done():  # a cancelled request is not decoded
                        groups.setdefault(r.settings, []).append(r)
                for group in groups.values():
                    for start in range(0, len(group), self.max_batch_size):
                        await self._run_batch(group[start : start + self.max_batch_size])
            except BaseException as exc:
                # never leave a caller waiting, whatever went wrong (cancellation of the serving task included)
                error = exc if isinstance(exc, Exception) else RuntimeError(f"hf rollout: serving stopped: {exc!r}")
                for r in pending:
                    if not r.future.done():
                        r.future.set_exception(error)
                raise

    async def _collect(self) -> None:
        """Wait until the queue holds a full batch, the maximum wait has passed since collecting began, or no
        new request arrived for one window once this round has had as many requests as the previous round
        (veRL sends a step's requests in one burst, which a busy agent loop can spread over a few hundred ms:
        decoding the first arrivals alone would split the step into several batches). Follow-up turns of
        multi-turn samples are not part of the burst and do not count."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while len(self._queue) < self.max_batch_size:
            seen = len(self._queue)
            left = self.max_wait_s - (loop.time() - start)
            if left <= 0:
                break
            await asyncio.sleep(min(self.batch_window_s, left))
            first_turns = self._round.requests - self._round.follow_ups
            if len(self._queue) == seen and first_turns >= self._expected_round:
                break

    async def _run_batch(self, batch: list[_Request]) -> None:
        """Decode ``batch``; if it fails, decode its requests one by one so only a failing request errs."""
        self.stats["batches"] += 1  # counted before decoding: callers may get their results before it ends
        self.stats["max_batch"] = max(self.stats["max_batch"], len(batch))
        try:
            await asyncio.to_thread(self._generate_locked, batch)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request(s) below
            if len(batch) == 1:
                self.stats["failed"] += 1
                logger.warning("hf rollout: request %s failed: %r", batch[0].request_id, exc)
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            unfinished = [r for r in batch if not r.future.done()]  # the others already got their result
            logger.warning("hf rollout: a batch of %d failed (%r); retrying its %d unfinished requests one by one",
                           len(batch), exc, len(unfinished))
            for r in unfinished:
                r.reset()
                await self._run_batch([r])
            return
        for r in batch:
            _resolve(r)

    def _generate_locked(self, batch: list[_Request]) -> None:
        loop = batch[0].future.get_loop()

        def on_finished(request: _Request) -> None:  # the caller goes on while the rest of the batch decodes
            loop.call_soon_threadsafe(_resolve, request)

        start = time.perf_counter()
        with self._model_lock:
            generate_batch(self.model, batch, self.eos_token_ids, self.pad_token_id, self.generator, on_finished)
        self._round.decoded(start)

    # -- weights -------------------------------------------------------------------------------------------------

    def update_weights(self, state_dict: dict[str, torch.Tensor], global_steps: Optional[int] = None,
                       final: bool = True) -> int:
        """Load the trainer's full parameters (HF names), whole or in buckets: every bucket but the last comes
        with ``final=False``; the last one checks that the sync covered every model parameter. veRL syncs
        between steps, when no request is decoding."""
        with self._model_lock:
            self._allocate_released()
            own = self.model.state_dict()
            unknown = sorted(set(state_dict) - set(own))
            if unknown:
                raise KeyError(f"hf rollout: weights not in the rollout model: {unknown[:5]}")
            with torch.no_grad():
                for name, tensor in state_dict.items():
                    own[name].copy_(tensor.to(own[name].dtype))
            self._synced.update(state_dict)
            if not final:
                return len(state_dict)
            synced, self._synced = self._synced, set()
            missing = [k for k in own if k not in synced and not self._is_tied(k)]
            if missing:
                raise KeyError(f"hf rollout: weight sync lacks {missing[:5]}")
            self._weights_pending = False
        self.stats["weight_updates"] += 1
        self._occurrences.clear()
        self._finished.clear()
        if self._round.requests:
            print(f"[verl_resrl hf] rollout server {self.replica_rank} round: {self._round.summary()}", flush=True)
            self._expected_round = self._round.requests - self._round.follow_ups
        self._round = RoundTimes()
        if global_steps is not None:
            self.global_steps = global_steps
        return len(synced)

    def release_weights(self) -> int:
        """Free every parameter's memory (shapes and dtypes are kept); returns the bytes freed. The next weight
        sync allocates the parameters again and must cover all of them before the server generates."""
        with self._model_lock:
            if self._released is not None:
                return 0
            released, freed = {}, 0
            for name, param in self.model.named_parameters():  # a tied parameter is listed once
                released[name] = (param.shape, param.dtype)
                freed += param.numel() * param.element_size()
                param.data = torch.empty(0, dtype=param.dtype)
            self._released, self._weights_pending = released, True
        _return_freed_memory()
        self.stats["weight_releases"] += 1
        logger.info("hf rollout: server %d released %.0f MiB of weights", self.replica_rank, freed / 2**20)
        return freed

    def _allocate_released(self) -> None:
        """Give released parameters storage again (uninitialised: the weight sync in progress fills it)."""
        if self._released is None:
            return
        for name, param in self.model.named_parameters():
            shape, dtype = self._released[name]
            param.data = torch.empty(shape, dtype=dtype)
        self._released = None

    def _is_tied(self, name: str) -> bool:
        return name == "lm_head.weight" and bool(getattr(self.model.config, "tie_word_embeddings", False))

    def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    def get_stats(self) -> dict[str, int]:
        return {**self.stats, "torch_threads": torch.get_num_threads(), "max_batch_size": self.max_batch_size}

    # -- lifecycle calls veRL makes on every server (there is no KV cache between requests) -----------------------

    async def wake_up(self, tags: Optional[list[str]] = None):
        if tags is None or "weights" in tags:
            with self._model_lock:
                self._allocate_released()

    async def sleep(self):
        """veRL's sleep after generation: with ``free_cache_engine`` the weights are released (module docstring)."""
        if not getattr(self.config, "free_cache_engine", False):
            return
        await self.wait_for_requests_to_drain()
        await asyncio.to_thread(self.release_weights)

    async def clear_kv_cache(self):
        return None

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def wait_for_requests_to_drain(self):
        while self._queue or (self._loop_task is not None and not self._loop_task.done()):
            await asyncio.sleep(max(self.batch_window_s, 0.001))

    async def abort_all_requests(self, reject_request: bool = False):
        # Requests are short on CPU: let them finish instead of returning partial outputs.
        await self.wait_for_requests_to_drain()
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self):
        return None

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None


# --------------------------------------------------------------------------------------------------------------
# Replica and trainer-side adapter
# --------------------------------------------------------------------------------------------------------------


def _replica_class():
    base = verl_internals.resolve("cpu.RolloutReplica")

    class HFReplica(base):
        """Launches one :class:`HFRolloutServer` per replica (single-process replicas only)."""

        async def launch_servers(self):
            # One process per replica whatever its world size: the replica's other trainer ranks only take part
            # in the weight sync (HFServerAdapter._has_server).
            name = f"{SERVER_NAME_PREFIX}server{'_reward' if self.is_reward_model else ''}"
            name += f"{'_teacher' if self.is_teacher_model else ''}_{self.replica_rank}{self.name_suffix}"
            server = (
                ray.remote(HFRolloutServer)
                .options(name=name, num_cpus=0, max_concurrency=self.max_concurrency)
                .remote(
                    config=self.config,
                    model_config=self.model_config,
                    replica_rank=self.replica_rank,
                    max_batch_size=self.config.max_num_seqs,
                )
            )
            await server.get_stats.remote()  # wait for the model to load
            self.servers = [server]
            self._server_handle = server
            self._server_address = f"hf-rollout://{name}"

        def rollout_worker_use_gpu(self) -> bool:
            return False

    return HFReplica


def _adapter_class():
    base = verl_internals.resolve("cpu.BaseRollout")

    class HFServerAdapter(base):
        """Trainer-side end of the weight sync: full parameters → this rank's replica server."""

        def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
            super().__init__(config, model_config, device_mesh)
            rank = int(os.environ.get("RANK", 0))
            rollout_world_size = (
                self.config.tensor_model_parallel_size
                * self.config.data_parallel_size
                * self.config.pipeline_model_parallel_size
            )
            self.replica_rank = rank // rollout_world_size if replica_rank == -1 else replica_rank
            self._has_server = rank % rollout_world_size == 0
            self._server = None
            print(
                f"[verl_resrl hf] trainer rank {rank}: torch threads {torch.get_num_threads()} "
                f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})",
                flush=True,
            )

        def _server_handle(self):
            if self._server is None:
                self._server = ray.get_actor(server_actor_name(self.replica_rank))
            return self._server

        async def resume(self, tags: list[str]):
            return None

        async def release(self):
            return None

        @torch.no_grad()
        async def update_weights(
            self,
            weights: Generator[tuple[str, torch.Tensor], None, None],
            wire_format: str = "named_tensors",
            global_steps: Optional[int] = None,
            peft_config=None,
            **kwargs,
        ):
            if wire_format != "named_tensors":
                raise NotImplementedError(f"hf rollout supports wire_format='named_tensors' only, got {wire_format!r}")
            if peft_config is not None:
                raise NotImplementedError(
                    "hf rollout: LoRA adapters are not supported; set actor_rollout_ref.model.lora.merge=True"
                )
            start = time.time()
            # Every rank walks the whole generator (un-sharding FSDP2 parameters is a collective); one bucket
            # at a time is copied and sent, so the sync holds about two buckets, not a second copy of the model.
            tensors = 0
            buckets = weight_buckets(weights, weight_bucket_bytes())
            bucket = next(buckets)
            for following in buckets:
                if self._has_server:
                    await self._server_handle().update_weights.remote(bucket, global_steps=global_steps, final=False)
                tensors += len(bucket)
                bucket = following
            if self._has_server:
                await self._server_handle().update_weights.remote(bucket, global_steps=global_steps, final=True)
            tensors += len(bucket)
            logger.info("hf rollout: synced %d tensors in %.2fs", tensors, time.time() - start)

    return HFServerAdapter


_ADAPTER = None
_REPLICA = None


def adapter_class():
    global _ADAPTER
    if _ADAPTER is None:
        _ADAPTER = _adapter_class()
    return _ADAPTER


def replica_class():
    global _REPLICA
    if _REPLICA is None:
        _REPLICA = _replica_class()
    return _REPLICA


def _register_adapter(module) -> None:
    registry = getattr(module, verl_internals.INTERNALS["cpu._ROLLOUT_REGISTRY"].attr)
    registry[(ROLLOUT_NAME, "async")] = f"{__name__}.HFServerAdapter"


def _register_replica(module) -> None:
    registry = getattr(module, verl_internals.INTERNALS["cpu.RolloutReplicaRegistry"].attr)
    registry.register(ROLLOUT_NAME, replica_class)


def register() -> None:
    """Register ``hf`` in veRL's two rollout registries (worker-side adapter, driver-side replica).

    Both registry modules import a good part of veRL's worker stack, so the registration waits until veRL
    imports them itself (see :mod:`verl_resrl._import_hook`).
    """
    when_imported(verl_internals.INTERNALS["cpu._ROLLOUT_REGISTRY"].module, _register_adapter)
    when_imported(verl_internals.INTERNALS["cpu.RolloutReplicaRegistry"].module, _register_replica)


def __getattr__(name: str):
    # veRL's get_rollout_class imports "<module>.HFServerAdapter" by name; the class is built lazily.
    if name == "HFServerAdapter":
        return adapter_class()
    if name == "HFReplica":
        return replica_class()
    raise AttributeError(name)
