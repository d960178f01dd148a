"""Capture one layer's hidden states with a forward hook (no ``output_hidden_states``, no veRL).

``hidden_layer`` follows Hugging Face's ``hidden_states`` indexing for a decoder with L layers:
index 0 is the embedding output, i in 1..L-1 the output of ``layers[i-1]``, and index L (= -1) the output of
the final norm (the LM head's input). Negative indices count from L + 1. Asking the model for all L + 1
hidden states would hold every layer's activations of the whole micro-batch; a hook on one module holds one.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class LayerNotFoundError(ValueError):
    pass


def find_decoder_parts(model: nn.Module) -> tuple[str, nn.ModuleList, nn.Module | None, nn.Module | None]:
    """The decoder's ``layers`` ModuleList and its sibling ``norm`` / ``embed_tokens`` modules.

    Works through wrapper prefixes (FSDP1 ``_fsdp_wrapped_module.``, PEFT ``base_model.model.``, ...): the
    first ``nn.ModuleList`` named ``layers`` (or ``h`` / ``blocks``) whose parent also holds a norm wins.
    """
    for name, module in model.named_modules():
        for list_name in ("layers", "h", "blocks"):
            layers = getattr(module, list_name, None)
            layers = getattr(layers, "_fsdp_wrapped_module", layers)
            if isinstance(layers, nn.ModuleList) and len(layers) > 0:
                norm = next((getattr(module, n) for n in ("norm", "final_layernorm", "ln_f") if hasattr(module, n)), None)
                embed = next((getattr(module, n) for n in ("embed_tokens", "wte", "embeddings") if hasattr(module, n)),
                             None)
                if norm is not None:
                    prefix = f"{name}.{list_name}" if name else list_name
                    return prefix, layers, norm, embed
    raise LayerNotFoundError(
        f"cannot find the decoder layers of {type(model).__name__}: ResRL looks for a ModuleList named "
        "'layers' (or 'h'/'blocks') next to a final norm ('norm'/'final_layernorm'/'ln_f')"
    )


def resolve_hidden_module(model: nn.Module, hidden_layer: int) -> tuple[str, nn.Module]:
    """``(description, module)`` whose forward output is ``hidden_states[hidden_layer]``."""
    prefix, layers, norm, embed = find_decoder_parts(model)
    depth = len(layers)
    index = hidden_layer + depth + 1 if hidden_layer < 0 else hidden_layer
    if not 0 <= index <= depth:
        raise LayerNotFoundError(
            f"resrl.hidden_layer={hidden_layer} is out of range for a model with {depth} decoder layers "
            f"(valid: {-(depth + 1)}..{depth})"
        )
    if index == depth:
        return f"final norm after {prefix}", norm
    if index == 0:
        if embed is None:
            raise LayerNotFoundError(f"resrl.hidden_layer={hidden_layer} asks for the embeddings, which were not found")
        return "embeddings", embed
    return f"{prefix}[{index - 1}]", layers[index - 1]


class HiddenStateCapture:
    """Keep the output of one module for each forward call while armed.

    >>> capture = HiddenStateCapture(model, hidden_layer=-2)
    >>> with capture.armed():
    ...     model(input_ids)
    >>> states = capture.pop()      # list of tensors, one per forward call, detached

    The hook holds a reference to the module's output only (no copy, no extra layer); it is removed when
    ``armed()`` exits, so backward passes and gradient-checkpoint recomputations never fire it.
    """

    def __init__(self, model: nn.Module, hidden_layer: int):
        self.description, self.module = resolve_hidden_module(model, hidden_layer)
        self._outputs: list[torch.Tensor] = []

    def _hook(self, module, args, output):
        state = output[0] if isinstance(output, (tuple, list)) else output
        self._outputs.append(state.detach())

    @contextmanager
    def armed(self):
        handle = self.module.register_forward_hook(self._hook)
        try:
            yield self
        finally:
            handle.remove()

    def pop(self) -> list[torch.Tensor]:
        outputs, self._outputs = self._outputs, []
        return outputs
