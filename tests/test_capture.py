import pytest
import torch
from torch import nn

from tiny_models import tiny_qwen2
from verl_resrl.core.capture import HiddenStateCapture, LayerNotFoundError, resolve_hidden_module


@pytest.mark.parametrize("hidden_layer", [-1, -2, -3, 0, 1, 2])
def test_hook_equals_output_hidden_states(hidden_layer):
    model = tiny_qwen2(layers=3)
    ids = torch.randint(0, 64, (2, 11))
    with torch.no_grad():
        want = model(input_ids=ids, output_hidden_states=True).hidden_states[hidden_layer]
        capture = HiddenStateCapture(model, hidden_layer)
        with capture.armed():
            model(input_ids=ids)
    (got,) = capture.pop()
    torch.testing.assert_close(got, want)


def test_hook_is_removed_after_the_armed_block():
    model = tiny_qwen2()
    capture = HiddenStateCapture(model, -2)
    with capture.armed():
        model(input_ids=torch.zeros(1, 3, dtype=torch.long))
    model(input_ids=torch.zeros(1, 3, dtype=torch.long))
    assert len(capture.pop()) == 1


class _Wrapper(nn.Module):  # the module path PEFT (base_model.model.) and FSDP1 (_fsdp_wrapped_module.) add
    def __init__(self, inner):
        super().__init__()
        self.base_model = nn.Module()
        self.base_model.model = inner


def test_finds_layers_under_wrapper_prefixes():
    inner = tiny_qwen2(layers=2)
    name, module = resolve_hidden_module(_Wrapper(inner), -2)
    assert module is inner.model.layers[0] and "base_model.model.model.layers" in name
    assert resolve_hidden_module(_Wrapper(inner), -1)[1] is inner.model.norm


def test_clear_errors():
    with pytest.raises(LayerNotFoundError, match="cannot find the decoder layers of Sequential"):
        resolve_hidden_module(nn.Sequential(nn.Linear(2, 2)), -2)
    with pytest.raises(LayerNotFoundError, match=r"hidden_layer=-9 is out of range .* 3 decoder layers"):
        resolve_hidden_module(tiny_qwen2(layers=3), -9)
