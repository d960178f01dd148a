"""verl_resrl.demo.quickstart: it trains with the learning study's selected ResRL configuration."""

import argparse
import re

import pytest
from harness import load_benchmark

from verl_resrl.core.config import ResRLConfig
from verl_resrl.demo import quickstart
from verl_resrl.demo.rl import demo_overrides


def _pos_weight(overrides) -> float:
    values = [float(m.group(1)) for o in overrides if (m := re.fullmatch(r"\+algorithm\.resrl\.pos_weight=(.+)", o))]
    return values[-1] if values else ResRLConfig().pos_weight


def test_the_default_configuration_is_the_one_the_committed_study_selects():
    study = load_benchmark("learning", "learning_for_quickstart")
    state = study.StudyState(study.load_records(study.DEFAULT_OUT / "runs"))
    chosen = study.selected_resrl(state)
    assert chosen is not None, "the committed study runs select no ResRL configuration"
    settings, extra = quickstart.run_config(quickstart.parse_args([]))
    assert (settings.lr, settings.mini_batches) == (chosen.lr, chosen.mini_batches)
    assert _pos_weight(extra) == _pos_weight(study.METHODS[chosen.method][1])
    # every other setting too (prompts, responses, temperature, lengths, seed), at the quickstart's step count
    assert settings == study.run_settings(chosen, argparse.Namespace(steps=settings.steps))


def test_the_configuration_reaches_main_ppo_overrides():
    settings, extra = quickstart.run_config(quickstart.parse_args(["--lr", "1e-4", "--mini-batches", "2",
                                                                  "--pos-weight", "0.1"]))
    overrides = [*demo_overrides("/p", "/t.parquet", "/v.parquet", "/run", "resrl", settings), *extra]
    assert "actor_rollout_ref.actor.optim.lr=0.0001" in overrides
    assert "actor_rollout_ref.actor.ppo_mini_batch_size=8" in overrides  # 16 prompts / 2 mini-batches
    assert _pos_weight(overrides) == 0.1


def test_other_estimators_get_the_same_step_and_no_resrl_settings():
    resrl, _ = quickstart.run_config(quickstart.parse_args([]))
    grpo, extra = quickstart.run_config(quickstart.parse_args(["--estimator", "grpo"]))
    assert grpo == resrl and extra == []


@pytest.mark.parametrize("argv, message", [
    (["--pos-weight", "-1"], "resrl.pos_weight"),
    (["--mini-batches", "3"], "mini_batches"),
])
def test_bad_settings_fail_before_anything_is_built(argv, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        quickstart.main([*argv, "--out-dir", str(tmp_path)])
    assert not any(tmp_path.iterdir())
