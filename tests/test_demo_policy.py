"""The demo's starting policy: tokenizer, model, a 2-step warm-up, manifest + checksums, evaluation metrics."""

import dataclasses
import json

import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

from harness import load_script, tiny_policy_config  # noqa: E402
from verl_resrl.demo import policy, task  # noqa: E402
from verl_resrl.demo.evaluate_policy import prompt_ids, sample_completions, score_completions  # noqa: E402
from verl_resrl.evaluate import pass_at_k  # noqa: E402

SMALL = tiny_policy_config()


@pytest.fixture(scope="module")
def tokenizer():
    problems = task.generate(200, seed=0)
    return policy.build_tokenizer(policy.tokenizer_corpus(problems), 320)


def test_tokenizer_round_trip_and_digits(tokenizer):
    for p in task.generate(50, seed=9):
        for text in (p.prompt, p.solution, " Answer: 123 "):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert tokenizer.decode(ids) == text
    # digits are single tokens: no merged multi-digit numbers
    ids = tokenizer("12345", add_special_tokens=False)["input_ids"]
    assert len(ids) == 5
    assert len(tokenizer) <= 320


def test_chat_template_matches_training_prompt(tokenizer):
    p = task.generate(1, seed=0)[0]
    ids = prompt_ids(tokenizer, [p])[0]
    text = tokenizer.decode(ids)
    assert text == f"<|im_start|>user\n{p.prompt}<|im_end|>\n<|im_start|>assistant\n"
    examples = policy.encode_examples(tokenizer, [p])
    full, n_prompt = examples[0]
    assert full[:n_prompt] == ids and full[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(full[n_prompt:], skip_special_tokens=True) == p.solution


def test_model_builds_deterministically(tokenizer):
    a = policy.build_model(SMALL, tokenizer)
    b = policy.build_model(SMALL, tokenizer)
    assert a.config.vocab_size == len(tokenizer)
    assert all((x == y).all() for x, y in zip(a.parameters(), b.parameters()))
    default = policy.PolicyConfig()
    n = sum(p.numel() for p in policy.build_model(default, tokenizer).parameters())
    assert n < 5e6


def test_build_policy_writes_manifest_and_verifies(tmp_path):
    out = tmp_path / "policy"
    logs = []
    manifest = policy.build_policy(out, SMALL, log=logs.append)
    assert manifest["warmup_steps"] == 2 and len(manifest["trace"]) == 1
    assert "model.safetensors" in manifest["sha256"] and "tokenizer.json" in manifest["sha256"]
    assert manifest["platform"]["torch_cpu_capability"] and manifest["versions"]["torch"]  # what the weights depend on
    on_disk = json.loads((out / policy.MANIFEST).read_text())
    assert on_disk == manifest
    assert policy.verify_policy(out)["sha256"] == manifest["sha256"]
    # a second call reuses the verified build
    again = policy.build_policy(out, SMALL, log=logs.append)
    assert again == manifest and any("reusing" in line for line in logs)
    # tampering is detected
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ValueError, match="sha256"):
        policy.verify_policy(out)
    # the saved directory loads as an HF model and generates
    from verl_resrl.demo.evaluate_policy import load_model

    (out / policy.MANIFEST).unlink()
    policy.build_policy(out, SMALL, log=logs.append)
    model, tok = load_model(out)
    completions = sample_completions(model, tok, task.generate(2, seed=4), k=3, max_new_tokens=8)
    assert len(completions) == 2 and all(len(c) == 3 for c in completions)


def test_rebuild_is_bitwise_identical(tmp_path):
    a = policy.build_policy(tmp_path / "a", SMALL, log=lambda *_: None)
    b = policy.build_policy(tmp_path / "b", SMALL, log=lambda *_: None)
    assert a["sha256"] == b["sha256"]


def test_score_completions_uses_unbiased_pass_at_k():
    problems = task.generate(2, seed=1)
    right = [problems[0].solution, problems[1].solution]
    completions = [
        [right[0], "Answer: -1", "Answer: 99999", "garbage"],
        [right[1]] * 4,
    ]
    m = score_completions(problems, completions)
    assert m["k"] == 4 and m["avg@4"] == pytest.approx(5 / 8)
    for k in range(1, 5):
        assert m[f"pass@{k}"] == pytest.approx((pass_at_k(4, 1, k) + 1.0) / 2)
    assert m["distinct_answers"] == pytest.approx((3 + 1) / 2)
    assert m["no_answer_rate"] == pytest.approx(1 / 8)


def test_demo_rl_overrides_compose_for_every_estimator(tmp_path):
    """The demo's main_ppo overrides form a valid veRL config (Hydra compose + the CPU backend's checks)."""
    pytest.importorskip("verl")
    from verl_resrl.cpu.launch import check_command, cpu_main_ppo_command
    from verl_resrl.demo.rl import ESTIMATORS, RLSettings, demo_overrides, hf_checkpoint

    for estimator in ESTIMATORS:
        overrides = demo_overrides(tmp_path / "policy", "train.parquet", "test.parquet", tmp_path / "run", estimator,
                                   RLSettings(steps=3, seed=1))
        assert f"algorithm.adv_estimator={estimator}" in overrides
        assert "actor_rollout_ref.actor.checkpoint.save_contents=[model,hf_model]" in overrides
        assert ("+algorithm.resrl.seed=1" in overrides) == (estimator == "resrl")
        check_command(cpu_main_ppo_command(overrides))
    with pytest.raises(FileNotFoundError):
        hf_checkpoint(tmp_path / "run", 3)


def test_resrl_weights_diagnostics_shared_prefix():
    """benchmarks/resrl_weights_diagnostics.py: a wrong response's shared prefix with a correct one of its group."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "resrl_weights_diagnostics.py"
    diag = load_script(path, "weights_diag")
    samples = [([0], [5, 6, 7, 2], 1.0), ([0], [5, 6, 9, 2], 0.0), ([0], [8, 2], 0.0),  # group 0
               ([0], [5, 6, 7, 2], 0.0), ([0], [5, 6, 7, 2], 0.0)]  # group 1: no correct response
    assert diag.shared_prefix_lengths(samples, [0, 0, 0, 1, 1]) == [0, 2, 0, 0, 0]


# --- the packaged starting policy ---------------------------------------------------------------------------

def test_packaged_policy_verifies_and_is_the_default_build():
    path, manifest = policy.starting_policy()
    assert path == policy.STARTING_POLICY_DIR
    assert manifest["sha256"]["model.safetensors"] == policy.STARTING_POLICY_SHA256
    # what build_policy() writes with the default settings (so it reproduces it, on a CPU that sums alike)
    assert manifest["config"] == json.loads(json.dumps(dataclasses.asdict(policy.PolicyConfig())))
    assert manifest["version"] == policy.MANIFEST_VERSION and manifest["reached_target"]


def test_packaged_policy_is_package_data():
    import ast
    import fnmatch
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    call = next(n for n in ast.walk(ast.parse((root / "setup.py").read_text()))
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    globs = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "package_data"))["verl_resrl.demo"]
    demo = root / "verl_resrl" / "demo"
    shipped = [p.relative_to(demo).as_posix() for p in policy.STARTING_POLICY_DIR.iterdir()]
    assert shipped and all(any(fnmatch.fnmatch(name, g) for g in globs) for name in shipped)


def test_packaged_policy_copy_and_damage(tmp_path):
    import shutil

    path, manifest = policy.starting_policy(tmp_path / "copy")
    assert path == tmp_path / "copy" and policy.verify_policy(path)["sha256"] == manifest["sha256"]
    damaged = tmp_path / "damaged"
    shutil.copytree(policy.STARTING_POLICY_DIR, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(policy.StartingPolicyError, match="sha256.*reinstall the package"):
        policy.starting_policy(source=damaged)
    with pytest.raises(policy.StartingPolicyError, match="expected"):
        policy.starting_policy(source=policy.STARTING_POLICY_DIR, expected_sha256="0" * 64)
    (damaged / "manifest.json").unlink()
    with pytest.raises(policy.StartingPolicyError, match="missing"):
        policy.starting_policy(source=damaged)


def test_the_evaluation_does_not_import_the_policy_module():
    import subprocess
    import sys

    code = ("import sys, verl_resrl.demo.evaluate_policy, verl_resrl.demo.rl; "
            "sys.exit('verl_resrl.demo.policy' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
