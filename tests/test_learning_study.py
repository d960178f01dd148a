"""benchmarks/learning.py (the study's plan and selection) and benchmarks/learning_report.py (tables, bootstrap)."""

import random
from dataclasses import asdict, replace

import numpy as np
import pytest
from harness import load_benchmark, tiny_policy_config

study = load_benchmark("learning")
report = load_benchmark("learning_report")


def _evaluation(correct: list[int], n: int = 16) -> dict:
    from verl_resrl.evaluate import pass_at_k

    p = len(correct)
    return {"avg@16": sum(correct) / (n * p), **{f"pass@{j}": sum(pass_at_k(n, c, j) for c in correct) / p
                                                 for j in range(1, 17)},
            "distinct_answers": 2.0, "no_answer_rate": 0.0, "per_problem": [[n, c] for c in correct]}


def _finish(state, run, dev_avg: float, test_avg: float, rng):
    def correct(avg, p):
        return [min(16, max(0, round(16 * avg + rng.uniform(-2, 2)))) for _ in range(p)]

    state.records[run.name] = {**asdict(run), "name": run.name, "dev": _evaluation(correct(dev_avg, 8)),
                               "test": _evaluation(correct(test_avg, 12)),
                               "steps": {str(s): {"critic/score/mean": 0.1 * s, "actor/entropy": 1.0,
                                                  "response_length/mean": 20.0} for s in range(1, 4)}}


def test_the_study_plans_36_runs_in_four_stages_and_selects_on_dev_only():
    rng = random.Random(0)
    state = study.StudyState()
    assert {r.stage for r in study.plan(state)} == {"sweep"}  # nothing else before the sweep has finished
    while True:
        todo = [r for r in study.plan(state) if r.name not in state.records]
        if not todo:
            break
        run = todo[0]
        # dev prefers lr 3e-4 with 4 mini-batches; test prefers the opposite -- selection must follow dev
        good = run.lr == 3e-4 and run.mini_batches == 4
        _finish(state, run, dev_avg=0.7 if good else 0.3, test_avg=0.3 if good else 0.7, rng=rng)
    counts = {stage: sum(r["stage"] == stage for r in state.records.values()) for stage in study.STAGES}
    assert counts == {"sweep": 15, "regime": 5, "final": 10, "ablation": 6}
    for method in study.METHODS:
        chosen = study.selected_run(state, method)
        assert (chosen.lr, chosen.mini_batches, chosen.seed) == (3e-4, 4, 0)
        assert study.regime_run(state, method).mini_batches == 1
    groups = study.final_groups(state)
    assert set(groups) == {*study.METHODS, *(f"{study.selected_resrl(state).method}_{a}" for a in study.ABLATIONS)}
    assert all(len(recs) == 3 for recs in groups.values())
    assert {r["seed"] for r in groups["grpo"]} == {0, 1, 2}
    ablation = groups[f"{study.selected_resrl(state).method}_shuffled"][0]
    assert ablation["ablation"] == "shuffled" and ablation["method"] == study.selected_resrl(state).method
    assert study.Run("ablation", "resrl", 1e-4, 4, 2, "uniform").overrides() == ["+algorithm.resrl.min_weight=1.0"]
    assert study.Run("sweep", "resrl_pos1", 1e-4, 4, 0).overrides() == ["+algorithm.resrl.pos_weight=1.0"]


def test_two_invocations_with_disjoint_methods_share_the_study_without_overlap():
    def finish(state, run):  # the same scores for a run in both studies
        _finish(state, run, 0.5 + 0.1 * (run.lr == 1e-4), 0.5, random.Random(run.name))

    state = study.StudyState()
    lanes = (("grpo", "nsr", "w_reinforce"), study.RESRL_METHODS)
    ran: list[str] = []
    while todo := [r for lane in lanes for r in study.plan(state, methods=lane) if r.name not in state.records]:
        names = [r.name for r in todo]
        assert len(names) == len(set(names)), "a run planned by both invocations"
        finish(state, todo[0])
        ran.append(todo[0].name)
    full = study.StudyState()
    while todo := [r for r in study.plan(full) if r.name not in full.records]:
        finish(full, todo[0])
    assert sorted(ran) == sorted(full.records) and len(ran) == 36
    assert not [r for r in study.plan(state, methods=lanes[0]) if r.stage == "ablation"]


def test_extra_seeds_go_to_the_decisive_pairs_only_and_join_the_final_groups():
    rng = random.Random(1)
    state = study.StudyState()
    while todo := [r for r in study.plan(state) if r.name not in state.records]:
        _finish(state, todo[0], 0.5 + 0.1 * (todo[0].method == "resrl_pos1"), 0.5, rng)
    resrl = study.selected_resrl(state)
    assert resrl.method == "resrl_pos1"
    lanes = (("grpo", "nsr", "w_reinforce"), study.RESRL_METHODS)
    extra = [[r for r in study.plan(state, methods=lane, extra_seeds=(3, 4)) if r.name not in state.records]
             for lane in lanes]
    assert sorted(r.name for r in extra[0]) == sorted(replace(study.selected_run(state, "grpo"), seed=s).name
                                                      for s in (3, 4))
    assert sorted((r.method, r.ablation or "", r.seed) for r in extra[1]) == [
        ("resrl_pos1", "", 3), ("resrl_pos1", "", 4), ("resrl_pos1", "uniform", 3), ("resrl_pos1", "uniform", 4)]
    for run in (*extra[0], *extra[1]):
        _finish(state, run, 0.5, 0.5, rng)
    seeds = {label: [r["seed"] for r in recs] for label, recs in study.final_groups(state).items()}
    assert seeds["grpo"] == seeds["resrl_pos1"] == seeds["resrl_pos1_uniform"] == [0, 1, 2, 3, 4]
    assert seeds["nsr"] == seeds["resrl"] == seeds["resrl_pos1_shuffled"] == [0, 1, 2]


def test_the_study_keeps_its_starting_policy_and_refuses_another(tmp_path):
    from types import SimpleNamespace

    from verl_resrl.demo import policy

    small = tiny_policy_config()
    built = policy.build_policy(tmp_path / "built", small, log=lambda *_: None)
    sha = built["sha256"]["model.safetensors"]
    args = SimpleNamespace(out_dir=tmp_path / "study", work_dir=tmp_path / "work", policy_dir=tmp_path / "built")
    assert study.study_policy_sha({}, None) is None
    # a new study keeps a verified copy of its policy beside its results ...
    assert study.resolve_policy(args, None) == ((tmp_path / "built").resolve(), sha)
    assert policy.verify_policy(args.out_dir / "policy")["sha256"] == built["sha256"]
    # ... and later invocations start from that copy, with no build
    kept = SimpleNamespace(**{**vars(args), "policy_dir": None})
    assert study.resolve_policy(kept, sha) == (args.out_dir / "policy", sha)
    assert not (args.work_dir / "policy").exists()
    # runs from another policy: stop before training, naming both checksums
    records = {"a": {"policy_sha256": "f" * 64}, "b": {"policy_sha256": "f" * 64}}
    assert study.study_policy_sha(records, {"policy_sha256": "f" * 64}) == "f" * 64
    with pytest.raises(SystemExit, match=f"sha256 {sha}, but the runs in .* were trained from {'f' * 64}"):
        study.resolve_policy(args, study.study_policy_sha(records, None))
    # another --policy-dir than the policy the study kept: refused as well
    other = policy.build_policy(tmp_path / "other", replace(small, seed=1), log=lambda *_: None)
    assert other["sha256"]["model.safetensors"] != sha
    with pytest.raises(SystemExit, match=f"but the study's kept policy .* is {sha}"):
        study.resolve_policy(SimpleNamespace(**{**vars(args), "policy_dir": tmp_path / "other"}), None)
    with pytest.raises(SystemExit, match="2 different starting policies"):
        study.study_policy_sha({**records, "c": {"policy_sha256": "e" * 64}}, None)


def test_moving_average_is_trailing_and_shortens_at_the_start():
    assert report.moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert report.moving_average([2.0, 4.0], 5) == [2.0, 3.0]


def test_bootstrap_difference_interval():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.4, 0.6, size=(3, 200))
    same = report.bootstrap_difference(a, a, resamples=500)
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0] and not same["excludes_0"]
    shifted = report.bootstrap_difference(a + 0.05, a, resamples=500)
    assert shifted["diff"] == pytest.approx(0.05) and shifted["excludes_0"]
    noisy = report.bootstrap_difference(rng.uniform(0, 1, size=(3, 200)), rng.uniform(0, 1, size=(2, 200)), 500)
    assert noisy["ci95"][0] < noisy["diff"] < noisy["ci95"][1] and noisy["seeds"] == [3, 2]
    with pytest.raises(ValueError, match="different problem sets"):
        report.bootstrap_difference(a, a[:, :10])


def test_pooled_difference_averages_the_studies_and_resamples_their_seeds_separately():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.4, 0.6, size=(3, 200)), rng.uniform(0.4, 0.6, size=(4, 200))
    alone = report.bootstrap_difference(a + 0.05, a, resamples=300)
    assert report.pooled_difference([(a + 0.05, a)], resamples=300) == alone
    both = report.pooled_difference([(a + 0.06, a), (b + 0.02, b)], resamples=300)
    assert both["diff"] == pytest.approx(0.04) and both["excludes_0"] and both["seeds"] == [[3, 3], [4, 4]]
    assert both["ci95"][0] <= 0.04 <= both["ci95"][1]
    # one study's +0.1 cancelled by the other's -0.1 pools to 0, whatever the studies' seed counts
    cancel = report.pooled_difference([(a + 0.1, a), (b - 0.1, b[:2])], resamples=300)
    assert cancel["diff"] == pytest.approx(0.0, abs=0.02) and not cancel["excludes_0"]
    with pytest.raises(ValueError, match="different problem sets"):
        report.pooled_difference([(a, a), (b[:, :10], b[:, :10])])


def test_report_tables_and_plots(tmp_path):
    rng = random.Random(1)
    state = study.StudyState()
    while todo := [r for r in study.plan(state) if r.name not in state.records]:
        _finish(state, todo[0], 0.5, 0.5, rng)
    selection = {m: study.selected_run(state, m).name for m in study.METHODS}
    start = {"test": _evaluation([8] * 12)}
    out = report.write_report(tmp_path, state.records, start, study.final_groups(state), selection, "resrl",
                              {"command": "x"}, bootstrap=200)
    md = (tmp_path / "learning.md").read_text()
    assert "| start | - | - | 50.0 ± 0.0 |" in md
    assert "**" in md and "resrl minus each method" in md
    assert set(out["differences"]["vs"]) >= {"grpo", "nsr", "w_reinforce", "resrl_pos1"}
    assert out["training"]["grpo"]["critic/score/mean"] == pytest.approx(0.2)
    assert "pooled_differences" not in out
    # pooled with another study that has only some of the labels: only the shared ones are compared
    other = {label: recs for label, recs in study.final_groups(state).items() if label in ("resrl", "grpo")}
    pooled = report.write_report(tmp_path, state.records, start, study.final_groups(state), selection, "resrl",
                                 {"command": "x"}, bootstrap=200, pooled_with=other)["pooled_differences"]
    assert list(pooled["vs"]) == ["grpo"] and pooled["vs"]["grpo"]["avg@16"]["diff"] == pytest.approx(
        out["differences"]["vs"]["grpo"]["avg@16"]["diff"])
    assert "Both starting policies" in (tmp_path / "learning.md").read_text()
    assert (tmp_path / "pass_at_k.png").stat().st_size > 0 and (tmp_path / "training_curves.png").stat().st_size > 0


def test_mini_batches_set_the_actor_mini_batch():
    from verl_resrl.demo.rl import RLSettings, demo_overrides

    overrides = demo_overrides("p", "t", "v", "r", "grpo", RLSettings(prompts_per_step=16, n=8, mini_batches=4))
    assert "actor_rollout_ref.actor.ppo_mini_batch_size=4" in overrides
    assert "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=32" in overrides
    with pytest.raises(ValueError, match="mini_batches"):
        RLSettings(prompts_per_step=16, mini_batches=3)
