"""benchmarks/learning_replication.py: the study's selected configurations, replicated in seed rounds."""

import random
from types import SimpleNamespace

import pytest
from harness import load_benchmark, tiny_policy_config
from test_learning_study import _finish

study = load_benchmark("learning")
replication = load_benchmark("learning_replication")


def _finished_study(best_resrl: str) -> "study.StudyState":
    rng = random.Random(2)
    state = study.StudyState()
    while todo := [r for r in study.plan(state) if r.name not in state.records]:
        run = todo[0]
        _finish(state, run, 0.5 + 0.1 * (run.method == best_resrl) + 0.05 * (run.lr == 3e-5), 0.5, rng)
    return state


def test_configurations_are_the_studys_selection_decisive_pairs_first():
    state = _finished_study("resrl_pos1")
    configs = replication.replication_configs(state)
    assert list(configs) == ["resrl_pos1", "grpo", "resrl_pos1_uniform", "resrl_pos1_shuffled", "resrl", "nsr",
                             "w_reinforce"]
    assert configs["w_reinforce"].config == study.selected_run(state, "w_reinforce").config
    assert configs["grpo"].config == study.selected_run(state, "grpo").config
    assert configs["resrl_pos1_shuffled"].overrides() == ["+algorithm.resrl.pos_weight=1.0",
                                                          "+algorithm.resrl.weights=shuffled"]
    assert {run.seed for run in configs.values()} == {0} and {run.stage for run in configs.values()} == {"replication"}
    # with the paper's lambda selected, it is not listed twice
    assert list(replication.replication_configs(_finished_study("resrl"))) == [
        "resrl", "grpo", "resrl_uniform", "resrl_shuffled", "nsr", "w_reinforce"]
    with pytest.raises(SystemExit, match="not selected"):
        replication.replication_configs(study.StudyState())


def test_plan_goes_in_seed_rounds_and_groups_collect_finished_seeds():
    configs = replication.replication_configs(_finished_study("resrl_pos1"))
    runs = replication.replication_plan(configs, (0, 1, 2))
    assert [r.seed for r in runs] == [0] * 7 + [1] * 7 + [2] * 7
    assert len({r.name for r in runs}) == 21
    rng = random.Random(3)
    state = study.StudyState()
    for run in runs[:9]:  # round 0 and two runs of round 1
        _finish(state, run, 0.5, 0.5, rng)
    groups = replication.replication_groups(configs, state.records)
    assert {label: [r["seed"] for r in recs] for label, recs in groups.items()} == {
        "resrl_pos1": [0, 1], "grpo": [0, 1], "resrl_pos1_uniform": [0], "resrl_pos1_shuffled": [0], "resrl": [0],
        "nsr": [0], "w_reinforce": [0]}


def test_the_studys_own_policy_is_refused(tmp_path):
    from verl_resrl.demo import policy

    small = tiny_policy_config()
    sha = policy.build_policy(tmp_path / "p", small, log=lambda *_: None)["sha256"]["model.safetensors"]
    args = SimpleNamespace(out_dir=tmp_path / "rep", work_dir=tmp_path / "work", policy_dir=tmp_path / "p")
    with pytest.raises(SystemExit, match=f"{sha} is the study's own"):
        study.resolve_policy(args, None, other_than=(sha, "the study's own starting policy"))
    assert not (args.out_dir / "policy").exists()  # nothing kept
    assert study.resolve_policy(args, None, other_than=("0" * 64, "the study's"))[1] == sha
