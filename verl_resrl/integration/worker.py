"""Actor-side ResRL: capture one layer's response states during the old-log-prob pass, return residuals.

``TrainingWorker.infer_batch`` is wrapped: when the request carries the ResRL settings (only the driver's
old-log-prob request does; the reference model's and the update's passes never do), a forward hook is armed
on the configured layer of the actor's model for the duration of the pass. ``prepare_model_outputs`` of the
FSDP engine is wrapped to turn each micro-batch's captured states into per-sample response states, exactly
as veRL turns logits into log-probs (remove-padding packing, Ulysses gather, dynamic batch order), and to
hand them to :class:`~verl_resrl.core.streaming.StreamingGroupResiduals`, which computes each group as soon as
it is complete. The residuals are returned with the log-probs as nested per-sample tensors.
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

logger = logging.getLogger(__name__)

SAMPLE_INDEX = "resrl_sample_index"


class _Session:
    """State of one old-log-prob pass on one rank."""

    def __init__(self, engine, capture: HiddenStateCapture, stream: StreamingGroupResiduals):
        self.engine = engine
        self.capture = capture
        self.stream = stream


_active: _Session | None = None
_captures: dict[int, HiddenStateCapture] = {}


def _capture_for(engine, hidden_layer: int) -> HiddenStateCapture:
    key = (id(engine.module), hidden_layer)
    if key not in _captures:
        _captures[key] = HiddenStateCapture(engine.module, hidden_layer)
        logger.info("ResRL captures hidden_states[%d] = output of %s", hidden_layer, _captures[key].description)
    return _captures[key]


def _response_lengths(data) -> torch.Tensor:
    mask = data["response_mask"]
    return mask.offsets().diff() if mask.is_nested else torch.full((mask.shape[0],), mask.shape[1])


def _response_masks(data) -> list[torch.Tensor]:
    mask = data["response_mask"]
    return [m.bool() for m in mask.unbind()] if mask.is_nested else [m.bool() for m in mask]


def _non_tensor(data, key, default=None):
    return verl_internals.resolve("tu.get_non_tensor_data")(data=data, key=key, default=default)


def _wrap_infer_batch(original):
    @functools.wraps(original)
    def infer_batch(self, data):
        global _active
        settings = _non_tensor(data, REQUEST_KEY)
        if settings is None:
            return original(self, data)
        config = ResRLConfig.from_dict(dict(settings))
        size = data.batch_size[0]
        for key in ("resrl_group", "resrl_positive"):
            if key not in data.keys():
                raise RuntimeError(f"ResRL: the actor's old-log-prob request has no '{key}' field")
        groups = data["resrl_group"].tolist()
        stream = StreamingGroupResiduals(groups, data["resrl_positive"].bool(), _response_lengths(data), config,
                                         masks=_response_masks(data))
        data[SAMPLE_INDEX] = torch.arange(size)
        session = _Session(self.engine, _capture_for(self.engine, config.hidden_layer), stream)
        _active = session
        try:
            with session.capture.armed():
                output = original(self, data)
        finally:
            _active = None
            session.capture.pop()
            data.pop(SAMPLE_INDEX, None)
        residual, has_residual = stream.finish()
        if output is None:  # ranks that do not return outputs (tensor/sequence-parallel followers)
            return None
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
        if len(captured) != 1:
            raise RuntimeError(f"ResRL expected one captured forward per micro-batch, got {len(captured)}")
        for index, states in zip(micro_batch[SAMPLE_INDEX].tolist(),
                                 response_states(self, captured[0], output_args, micro_batch)):
            session.stream.add(index, states)
        del captured
        session.stream.seconds += time.perf_counter() - start  # capture share; flush() times the math itself
        session.stream.flush()
        return model_output

    return prepare_model_outputs


def response_states(engine, hidden: torch.Tensor, output_args: dict, micro_batch) -> list[torch.Tensor]:
    """Per-sample response-aligned states (the state at position t predicts response token t), copied."""
    use_remove_padding = _non_tensor(micro_batch, "use_remove_padding", True)
    offsets = micro_batch["input_ids"].offsets()
    lengths = _response_lengths(micro_batch).tolist()
    if use_remove_padding:
        packed = engine._gather_and_unpad_packed(hidden.squeeze(0), output_args["pad_size"])  # (total_nnz, H)
        ends = offsets[1:].tolist()
        return [packed[end - n - 1 : end - 1].clone() for end, n in zip(ends, lengths)]
    seq_lens = offsets.diff().tolist()  # right-padded (bsz, max_seqlen, H)
    return [hidden[i, total - n - 1 : total - 1].clone() for i, (total, n) in enumerate(zip(seq_lens, lengths))]


def register() -> None:
    when_imported("verl.workers.engine_workers",
                  lambda m: wrap(m.TrainingWorker, "infer_batch", _wrap_infer_batch, "TrainingWorker.infer_batch"))
    when_imported(
        "verl.workers.engine.fsdp.transformer_impl",
        lambda m: wrap(m.FSDPEngineWithLMHead, "prepare_model_outputs", _wrap_prepare_model_outputs,
                       "FSDPEngineWithLMHead.prepare_model_outputs"),
    )
