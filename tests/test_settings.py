"""Driver-side reading of a veRL config: the actor's Ulysses size and data-parallel size as veRL resolves them."""

import pytest


def _compose(*overrides):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=["algorithm.adv_estimator=resrl",
                                                             "actor_rollout_ref.rollout.n=4",
                                                             "trainer.n_gpus_per_node=8", *overrides])


def _engine_ulysses_size(config) -> int:
    """What veRL's FSDP engine reads: ``engine_config.ulysses_sequence_parallel_size`` of the actor's dataclass."""
    from verl.utils.config import omega_conf_to_dataclass

    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    return actor.engine.ulysses_sequence_parallel_size


@pytest.mark.parametrize(
    "overrides,sp",
    [
        ([], 1),
        (["actor_rollout_ref.actor.ulysses_sequence_parallel_size=2"], 2),  # fsdp_config keeps its YAML default 1
        (["actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size=4"], 4),
        (["actor_rollout_ref.actor.ulysses_sequence_parallel_size=2",
          "actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size=4"], 2),  # the deprecated key wins
    ],
)
def test_data_parallel_size_uses_the_ulysses_size_the_engine_uses(overrides, sp):
    from verl_resrl.integration.settings import data_parallel_size, ulysses_size

    config = _compose("actor_rollout_ref.model.use_remove_padding=True",
                      "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", *overrides)
    assert _engine_ulysses_size(config) == sp
    assert ulysses_size(config.actor_rollout_ref.actor) == sp
    assert data_parallel_size(config) == 8 // sp


def test_batch_size_check_uses_the_data_parallel_size_with_ulysses():
    """sp=2 on 8 GPUs: DP size 4, so 4 prompts x n pass and 6 prompts are refused naming size 4."""
    from verl_resrl.integration.settings import check_config

    sp2 = ("actor_rollout_ref.model.use_remove_padding=True", "actor_rollout_ref.actor.ulysses_sequence_parallel_size=2")
    check_config(_compose("data.train_batch_size=4", *sp2))
    with pytest.raises(ValueError, match=r"train_batch_size=6 must be a multiple of the actor's data-parallel size 4"):
        check_config(_compose("data.train_batch_size=6", *sp2))
