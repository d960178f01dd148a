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


def _stop_before_training(monkeypatch, tmp_path):
    """quickstart.main up to the RL run: the evaluation is faked and main_ppo 'fails' at once."""
    import types

    evaluated = []

    def fake_evaluate(model_dir, **kwargs):
        evaluated.append((model_dir, kwargs))
        return {"k": kwargs["k"], "problems": kwargs["n_test"], "seed": kwargs["seed"]}

    log = tmp_path / "train.log"
    log.write_text("stopped\n")
    monkeypatch.setattr(quickstart, "evaluate_model_dir", fake_evaluate)
    monkeypatch.setattr(quickstart, "write_data", lambda *a, **k: ("/t.parquet", "/v.parquet"))
    monkeypatch.setattr(quickstart, "train", lambda *a, **k: types.SimpleNamespace(returncode=1, log_path=log))
    return evaluated


def test_the_quickstart_starts_from_the_packaged_policy(monkeypatch, tmp_path):
    import json

    from verl_resrl.demo import policy

    evaluated = _stop_before_training(monkeypatch, tmp_path)
    monkeypatch.setattr(quickstart, "build_policy", lambda *a, **k: pytest.fail("the quickstart built a policy"))
    out = tmp_path / "out"
    assert quickstart.main(["--out-dir", str(out), "--seed", "3"]) == 1
    assert policy.verify_policy(out / "policy")["sha256"]["model.safetensors"] == policy.STARTING_POLICY_SHA256
    before = json.loads((out / "before.json").read_text())
    assert before["policy_sha256"] == policy.STARTING_POLICY_SHA256
    assert evaluated[0][1]["seed"] == 0  # the RL seed does not change the evaluation's samples
    # another RL seed in the same directory reuses the "before" evaluation
    assert quickstart.main(["--out-dir", str(out), "--seed", "4"]) == 1
    assert len(evaluated) == 1


def test_build_policy_builds_on_this_machine(monkeypatch, tmp_path):
    from verl_resrl.demo import policy

    _stop_before_training(monkeypatch, tmp_path)
    built = []

    def fake_build(out_dir, config, log=print):
        built.append(out_dir)
        out_dir.mkdir(parents=True)
        return {"sha256": {"model.safetensors": "f" * 64}}

    monkeypatch.setattr(quickstart, "build_policy", fake_build)
    monkeypatch.setattr(quickstart, "starting_policy", lambda *a, **k: pytest.fail("used the packaged policy"))
    assert quickstart.main(["--out-dir", str(tmp_path / "out"), "--build-policy"]) == 1
    assert built == [(tmp_path / "out").resolve() / "policy"] and policy.PolicyConfig() is not None
