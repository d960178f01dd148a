import pytest
from omegaconf import OmegaConf

from verl_resrl import ResRLConfig


def test_defaults_are_the_papers():
    c = ResRLConfig()
    assert (c.rank, c.max_pos_tokens, c.min_pos_tokens) == (64, 4096, 4)
    assert (c.q_low, c.q_high, c.min_weight, c.pos_weight) == (0.2, 0.8, 0.1, 0.1)
    assert (c.hidden_layer, c.split_by) == (-2, "reward")
    assert c.dump_dir is None  # the debugging dump is off unless asked for


@pytest.mark.parametrize(
    "key,value",
    [
        ("rank", 0),
        ("rank", 2.5),
        ("rank", True),
        ("max_pos_tokens", 3),
        ("min_pos_tokens", 1),
        ("q_low", -0.1),
        ("q_high", 1.5),
        ("q_low", 0.8),
        ("q_high", 0.2),
        ("min_weight", 1.2),
        ("min_weight", -0.1),
        ("pos_weight", -0.5),
        ("pos_weight", float("nan")),
        ("split_by", "sign"),
        ("subspace", "lanczos"),
        ("oversample", -1),
        ("power_iters", -1),
        ("seed", -3),
        ("hidden_layer", "penultimate"),
        ("degenerate_range", -1.0),
        ("layer_norm_eps", 0.0),
        ("dump_dir", ""),
        ("dump_dir", 3),
    ],
)
def test_invalid_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=rf"resrl\.{key}"):
        ResRLConfig(**{key: value})


def test_quantile_order_error_names_both():
    with pytest.raises(ValueError, match=r"q_low .* must be < resrl\.q_high"):
        ResRLConfig(q_low=0.5, q_high=0.5)


def test_from_dict_accepts_plain_and_omegaconf_mappings():
    assert ResRLConfig.from_dict({"rank": 32}).rank == 32
    assert ResRLConfig.from_dict(OmegaConf.create({"rank": 16, "split_by": "advantage"})).split_by == "advantage"
    assert ResRLConfig.from_dict(None) == ResRLConfig()
    assert ResRLConfig.from_dict(ResRLConfig(rank=8).to_dict()) == ResRLConfig(rank=8)


def test_from_dict_rejects_unknown_keys_listing_valid_ones():
    with pytest.raises(ValueError, match=r"unknown resrl setting\(s\) \['ranks'\]; valid keys are \[.*'rank'"):
        ResRLConfig.from_dict({"ranks": 3})


def test_from_dict_rejects_non_mappings():
    with pytest.raises(TypeError):
        ResRLConfig.from_dict([("rank", 3)])
