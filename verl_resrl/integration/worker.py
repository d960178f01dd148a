"""Actor-side ResRL: capture one layer's response states during the old-log-prob pass, return residuals.

``TrainingWorker.infer_batch`` is wrapped: when the request carries the ResRL settings (only the driver's
old-log-prob request does; the reference model's and the update's passes never do), a forward hook is armed
on the configured layer of the actor's model for the duration of the pass. ``prepare_model_outputs`` of the
FSDP engine is wrapped to turn each micro-batch's captured states into per-sample response states, exactly
as veRL turns logits into log-probs (remove-padding packing, Ulysses gather, dynamic batch order), and to
hand them to :class:`~verl_resrl.core.streaming.StreamingGroupResiduals`, which computes each group as soon as
it is complete. The residuals are returned with the log-probs as nested per-sample tensors. With
``resrl.mask_think_tokens`` the stream's per-sample masks leave out the response tokens in reasoning spans,
found in the request's prompt + response ids (:mod:`verl_resrl.core.think`).

Under Ulysses every rank of a sequence-parallel group takes part in the gather of the states, but only the
rank that returns the pass's outputs computes residuals. An error in this work (it depends on the data, so it
can hit one rank only) is recorded and ends the ResRL work of that rank, while the pass itself runs to its end
so that no rank is left waiting in a collective; after the pass all ranks learn of it and raise.
"""

from __future__ import annotations

import functools
import logging
import time

import torch

from verl_resrl import verl_internals
from verl_resrl.core.capture import HiddenStateCapture
from verl_resrl.core.config import ResRLConfig
from verl_resrl.integration.patching import when_imported, wrap
from verl_resrl.integration.trainer import REQUEST_KEY
from verl_resrl.core.streaming import StreamingGroupResiduals
from verl_resrl.core.think import response_think_masks

logger = logging.getLogger(__name__)

SAMPLE_INDEX = "resrl_sample_index"


class _Session:
    """State of one old-log-prob pass on one rank."""

    def __init__(self, engine, capture: HiddenStateCapture, stream: StreamingGroupResiduals, computes: bool):
        self.engine = engine
        self.capture = capture
        self.stream = stream
        self.computes = computes  # this rank returns the pass's outputs, so it computes the residuals
        self.error: Exception | None = None

    def fail(self, error: Exception) -> None:
        """Record the first error; the pass goes on (every collective still runs) without ResRL work."""
        if self.error is None:
            self.error = error
            logger.error("ResRL: %s: %s; residuals stop here, the pass finishes, then every rank raises",
                         type(error).__name__, error)


_active: _Session | None = None
_captures: dict[int, HiddenStateCapture] = {}


def _capture_for(engine, hidden_layer: int) -> HiddenStateCapture:
    key = (id(engine.module), hidden_layer)
    if key not in _captures:
        _captures[key] = HiddenStateCapture(engine.module, hidden_layer)
        logger.info("ResRL captures hidden_states[%d] = output of %s", hidden_layer, _captures[key].description)
    return _captures[key]


def _response_lengths(data) -> torch.Tensor:
    """``(B,)`` response tokens of each sequence as it is nested in ``input_ids``.

    The V1 trainer sends nested masks. The legacy trainer's ``left_right_2_no_padding`` nests ``input_ids`` but
    keeps the padded ``(B, max_response_length)`` masks: the response is then the part of the attention mask
    after the (left-padded) prompt, as veRL's ``no_padding_2_padding`` cuts it.
    """
    mask = data["response_mask"]
    if mask.is_nested:
        return mask.offsets().diff()
    keys = data.keys()
    if "attention_mask" not in keys or "prompts" not in keys:
        raise RuntimeError("ResRL: the old-log-prob request has a padded response_mask but no attention_mask and "
                           "prompts to find each response's length")
    return data["attention_mask"][:, data["prompts"].shape[1]:].sum(dim=1)


def _response_masks(data) -> list[torch.Tensor]:
    """Per-sample ``(response_length,)`` bool masks of the response tokens that count."""
    mask = data["response_mask"]
    if mask.is_nested:
        return [m.bool() for m in mask.unbind()]
    return [m[:n].bool() for m, n in zip(mask, _response_lengths(data).tolist())]


def _think_masks(data, config: ResRLConfig) -> list[torch.Tensor]:
    """Per-sample ``(response_length,)`` bool masks of the response tokens in reasoning spans."""
    if config.think_token_ids is None:
        raise RuntimeError("ResRL: mask_think_tokens is on but the actor's request names no think_token_ids "
                           "(the driver resolves them from the tokenizer)")
    ids = data["input_ids"]
    sequences = list(ids.unbind()) if ids.is_nested else None
    if sequences is None:
        raise RuntimeError("ResRL: mask_think_tokens needs the nested (unpadded) input_ids of the old-log-prob "
                           "request")
    return response_think_masks(sequences, _response_lengths(data).tolist(), *config.think_token_ids)


def _non_tensor(data, key, default=None):
    return verl_internals.resolve("tu.get_non_tensor_data")(data=data, key=key, default=default)


def _open_session(engine, data, config: ResRLConfig) -> _Session:
    for key in ("resrl_group", "resrl_positive"):
        if key not in data.keys():
            raise RuntimeError(f"ResRL: the actor's old-log-prob request has no '{key}' field")
    masks = _response_masks(data)
    if config.mask_think_tokens:  # think tokens take no part in the subspace and get no residual
        masks = [m & ~t.to(m.device) for m, t in zip(masks, _think_masks(data, config))]
    stream = StreamingGroupResiduals(data["resrl_group"].tolist(), data["resrl_positive"].bool(),
                                     _response_lengths(data), config, masks=masks)
    return _Session(engine, _capture_for(engine, config.hidden_layer), stream,
                    computes=bool(engine.is_mp_src_rank_with_outputs()))


def _raise_if_any_rank_failed(error: Exception | None) -> None:
    """All ranks learn which ranks failed (one small all-reduce); each raises, the failing ones their own error."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        failed = torch.zeros(dist.get_world_size(), dtype=torch.int32)
        failed[dist.get_rank()] = int(error is not None)
        failed = failed.to(verl_internals.resolve("get_device_id")())
        dist.all_reduce(failed)
        ranks = failed.nonzero().flatten().tolist()
        if error is None and ranks:
            raise RuntimeError(f"ResRL failed on rank(s) {ranks} during the actor's old-log-prob pass "
                               "(their error is in their log and in the driver's traceback)")
    if error is not None:
        raise error


def _wrap_infer_batch(original):
    @functools.wraps(original)
    def infer_batch(self, data):
        global _active
        settings = _non_tensor(data, REQUEST_KEY)
        if settings is None:
            return original(self, data)
        config = ResRLConfig.from_dict(dict(settings))
        size = data.batch_size[0]
        session, error = None, None
        try:  # a bad sample must not stop this rank before collectives the other ranks enter
            session = _open_session(self.engine, data, config)
        except Exception as exc:  # noqa: BLE001 - raised on every rank after the pass
            error = exc
            logger.error("ResRL: %s: %s; the pass runs without residuals, then every rank raises",
                         type(exc).__name__, exc)
        if session is None:
            output = original(self, data)
        else:
            data[SAMPLE_INDEX] = torch.arange(size)
            _active = session
            try:
                with session.capture.armed():
                    output = original(self, data)
            finally:
                _active = None
                session.capture.pop()
                data.pop(SAMPLE_INDEX, None)
            if session.error is None and session.computes:
                try:
                    residual, has_residual = session.stream.finish()
                except Exception as exc:  # noqa: BLE001
                    session.fail(exc)
            error = session.error
        _raise_if_any_rank_failed(error)
        if output is None or not session.computes:  # tensor/sequence-parallel followers return nothing
            return None
        stream = session.stream
        nested = functools.partial(torch.nested.as_nested_tensor, layout=torch.jagged)
        output["resrl_residual"] = nested([r.float() for r in residual])
        output["resrl_has_residual"] = nested([h.float() for h in has_residual])
        output["resrl_positive"] = data["resrl_positive"].long().cpu()
        output["resrl_status"] = stream.status.clone()
        output["resrl_rank"] = stream.rank.clone()
        output["resrl_seconds"] = torch.full((size,), stream.seconds, dtype=torch.float32)
        return output

    return infer_batch


def _wrap_prepare_model_outputs(original):
    @functools.wraps(original)
    def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
        model_output = original(self, output, output_args, micro_batch, logits_processor_func)
        session = _active
        if session is None or session.engine is not self or SAMPLE_INDEX not in micro_batch.keys():
            return model_output
        start = time.perf_counter()
        captured = session.capture.pop()
        if session.error is not None and not getattr(self, "use_ulysses_sp", False):
            return model_output  # nothing to compute and no gather to keep in step with
        try:
            if len(captured) != 1:
                raise RuntimeError(f"ResRL expected one captured forward per micro-batch, got {len(captured)}")
            # Every rank of a sequence-parallel group takes part in the gather; only the rank that returns
            # the outputs cuts responses and computes residuals.
            hidden = gathered_states(self, captured[0], output_args, micro_batch)
        except Exception as exc:  # noqa: BLE001
            session.fail(exc)
            return model_output
        del captured
        if session.error is not None or not session.computes:
            return model_output
        try:
            for index, states in zip(micro_batch[SAMPLE_INDEX].tolist(), cut_responses(hidden, micro_batch)):
                session.stream.add(index, states)
            states = hidden = None  # the stream now holds the only references; flush() frees them
            session.stream.seconds += time.perf_counter() - start  # capture share; flush() times the math itself
            session.stream.flush()
        except Exception as exc:  # noqa: BLE001
            session.fail(exc)
        return model_output

    return prepare_model_outputs


def gathered_states(engine, hidden: torch.Tensor, output_args: dict, micro_batch) -> torch.Tensor:
    """The micro-batch's captured states: packed ``(total_nnz, H)`` (Ulysses-gathered, padding removed) with
    remove-padding, else right-padded ``(bsz, max_seqlen, H)``. A collective under Ulysses."""
    if _non_tensor(micro_batch, "use_remove_padding", True):
        return engine._gather_and_unpad_packed(hidden.squeeze(0), output_args["pad_size"])
    return hidden


def cut_responses(hidden: torch.Tensor, micro_batch) -> list[torch.Tensor]:
    """Per-sample response-aligned states (the state at position t predicts response token t), copied."""
    offsets = micro_batch["input_ids"].offsets()
    lengths = _response_lengths(micro_batch).tolist()
    if _non_tensor(micro_batch, "use_remove_padding", True):
        ends = offsets[1:].tolist()
        return [hidden[end - n - 1 : end - 1].clone() for end, n in zip(ends, lengths)]
    seq_lens = offsets.diff().tolist()
    return [hidden[i, total - n - 1 : total - 1].clone() for i, (total, n) in enumerate(zip(seq_lens, lengths))]


def response_states(engine, hidden: torch.Tensor, output_args: dict, micro_batch) -> list[torch.Tensor]:
    """:func:`gathered_states` cut into per-sample response states."""
    return cut_responses(gathered_states(engine, hidden, output_args, micro_batch), micro_batch)


def register() -> None:
    when_imported("verl.workers.engine_workers",
                  lambda m: wrap(m.TrainingWorker, "infer_batch", _wrap_infer_batch, "TrainingWorker.infer_batch"))
    when_imported(
        "verl.workers.engine.fsdp.transformer_impl",
        lambda m: wrap(m.FSDPEngineWithLMHead, "prepare_model_outputs", _wrap_prepare_model_outputs,
                       "FSDPEngineWithLMHead.prepare_model_outputs"),
    )
