"""verl_resrl.length_scaled_reward: the scaling function and the registered ``length_scaled`` reward manager."""

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from verl_resrl import length_scaled_reward as lsr

REWARD_PATH = str(Path(__file__).resolve().parents[1] / "reward_fns" / "math_reward.py")


@pytest.mark.parametrize("length, expected", [
    (0, 1.0), (1000, 1.0), (3500, 1.0),
    (3500 + 298, 1.0 - 0.3 * 298 / 596),  # halfway -> 0.85
    (4096, 0.7), (5000, 0.7), (100_000, 0.7),
])
def test_length_scale_of_positive_reward(length, expected):
    assert lsr.length_scale(1.0, length) == pytest.approx(expected)
    assert lsr.length_scale(0.5, length) == pytest.approx(0.5 * expected)


def test_length_scale_is_monotone_and_leaves_non_positive_rewards():
    factors = [lsr.length_factor(n) for n in range(3400, 4200)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))
    assert lsr.length_factor(3798) == pytest.approx(0.85)
    for length in (10, 3800, 9000):
        assert lsr.length_scale(0.0, length) == 0.0
        assert lsr.length_scale(-1.0, length) == -1.0


def test_length_scale_custom_settings():
    assert lsr.length_scale(1.0, 150, start=100, max_len=200, end_scale=0.5) == pytest.approx(0.75)
    assert lsr.length_scale(1.0, 300, start=100, max_len=200, end_scale=0.0) == 0.0


def test_length_scale_config_reading_and_validation():
    cfg = OmegaConf.create({"reward_kwargs": {"length_scale": {"start": 10, "max_len": 20}}})
    assert lsr.LengthScale.from_reward_config(cfg) == lsr.LengthScale(10, 20, 0.7)
    assert lsr.LengthScale.from_reward_config(OmegaConf.create({})) == lsr.LengthScale(3500, 4096, 0.7)
    with pytest.raises(ValueError, match="start < max_len"):
        lsr.LengthScale(4096, 4096, 0.7)
    with pytest.raises(ValueError, match="end_scale"):
        lsr.LengthScale(1, 2, 1.5)
    with pytest.raises(ValueError, match="unknown"):
        lsr.LengthScale.from_reward_config(OmegaConf.create({"reward_kwargs": {"length_scale": {"stat": 1}}}))


class _DigitTokenizer:
    """Token ids are characters: id = ord(c); padding id 0 never decoded (the manager cuts it off)."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(int(i)) for i in ids)


def _agent_loop_item(response_text, filler_tokens, ground_truth):
    """One sample as veRL 0.9.1's agent loop sends it to a reward worker (attention mask over prompt+response)."""
    from verl import DataProto

    prompt = torch.tensor([ord("Q")] * 3)
    response = torch.tensor([ord(" ")] * filler_tokens + [ord(c) for c in response_text])
    input_ids = torch.cat([prompt, response])
    batch = {"prompts": prompt[None], "responses": response[None], "input_ids": input_ids[None],
             "attention_mask": torch.ones_like(input_ids)[None]}
    non_tensors = {"data_source": np.array(["math"], dtype=object),
                   "reward_model": np.array([{"ground_truth": ground_truth}], dtype=object),
                   "extra_info": np.array([{"index": 0}], dtype=object)}
    return DataProto.from_dict(tensors=batch, non_tensors=non_tensors)


def test_registered_manager_through_veRL_loader():
    """veRL's own load_reward_manager: registry name, custom reward path, reward_kwargs, length scaling."""
    from verl.trainer.ppo.reward import load_reward_manager

    lsr.register()
    lsr.register()  # idempotent
    config = OmegaConf.create({"reward": {
        "custom_reward_function": {"path": REWARD_PATH, "name": "compute_score",
                                   "reward_kwargs": {"reward_style": "signed"}},
        "reward_manager": {"source": "register", "name": "length_scaled"},
        "reward_kwargs": {"length_scale": {"start": 10, "max_len": 30, "end_scale": 0.5}},
        "sandbox_fusion": {"url": None},
    }})
    manager = load_reward_manager(config, _DigitTokenizer())
    assert type(manager).__name__ == "LengthScaledRewardManager"

    def run(text, filler, gold):
        return manager.loop.run_until_complete(manager.run_single(_agent_loop_item(text, filler, gold)))

    short = run(r"\boxed{7}", 0, "7")  # 9 tokens <= start
    assert short["reward_score"] == 1.0
    assert short["reward_extra_info"]["acc"] == 1.0 and short["reward_extra_info"]["length_scale"] == 1.0
    middle = run(r"\boxed{7}", 11, "7")  # 20 tokens: halfway from 10 to 30 -> x0.75
    assert middle["reward_score"] == pytest.approx(0.75)
    assert middle["reward_extra_info"]["unscaled_score"] == 1.0
    assert middle["reward_extra_info"]["acc"] == 1.0  # accuracy stays unscaled
    long_wrong = run(r"\boxed{8}", 40, "7")
    assert long_wrong["reward_score"] == -1.0  # negative rewards untouched
    long_right = run(r"\boxed{7}", 40, "7")
    assert long_right["reward_score"] == pytest.approx(0.5)
    assert set(short["reward_extra_info"]) == set(long_wrong["reward_extra_info"])  # same keys every sample
