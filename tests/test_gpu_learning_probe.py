"""benchmarks/gpu_learning_probe.py: the --smoke run (CI) and the pieces the GPU run relies on."""

import json
import math
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pytest
import torch
from harness import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_learning_probe.py"

# Runs the script with every `verl` import refused, as on the device machine (where veRL is not installed).
NO_VERL = """
import importlib.abc, runpy, sys
class NoVerl(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "verl" or name.startswith("verl."):
            raise ModuleNotFoundError(f"No module named {name!r} (refused by the test)")
sys.meta_path.insert(0, NoVerl())
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


probe = load_script(SCRIPT, "gpu_learning_probe_under_test")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "probe.json"
    proc = subprocess.run([sys.executable, "-c", NO_VERL, str(SCRIPT), "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_smoke_runs_both_methods_without_verl(smoke):
    result, stdout = smoke
    assert result["smoke"] and result["verl_modules_imported"] == []
    assert result["steps_done"] == 3 and result["stop_reason"] == "steps"
    assert set(result["history"]) == {"grpo", "resrl"} == set(result["after"])
    assert result["resrl_config"] == probe.ResRLConfig().to_dict()
    choice = result["task_choice"]
    assert set(choice["pass@8"]) == {"sum<=3", "sum<=9"}
    assert choice["level"] == probe.choose_level(choice["pass@8"]) and result["level_config"]
    for method, steps in result["history"].items():
        assert [s["step"] for s in steps] == [1, 2, 3]
        for s in steps:
            assert 0.0 <= s["reward_mean"] <= 1.0 and math.isfinite(s["loss_mean"]) and s["grad_norm_mean"] > 0
    # same initial weights, same prompts, same sampling seed: the first rollout is the same for both methods
    first = {m: (h[0]["reward_mean"], h[0]["response_length_mean"]) for m, h in result["history"].items()}
    assert first["grpo"] == first["resrl"]
    # ResRL's residual path ran: negative tokens of mixed groups got weights in [min_weight, 1), not all 1
    resrl = result["history"]["resrl"]
    assert sum(s["resrl_computed_groups"] for s in resrl) > 0
    assert all(s["resrl_coverage"] == 1.0 for s in resrl)
    weights = [s["resrl_neg_weight_mean"] for s in resrl if s["resrl_neg_weight_mean"] is not None]
    assert weights and all(0.1 <= w < 0.99 for w in weights)
    for name, metrics in [("before", result["before"])] + list(result["after"].items()):
        assert {"avg@4", "pass@1", "pass@2", "pass@4"} <= set(metrics), name
        assert 0.0 <= metrics["avg@4"] <= metrics["pass@4"] <= 1.0
        assert metrics["pass@1"] == pytest.approx(metrics["avg@4"])
    assert result["table"] in stdout and "| after resrl |" in result["table"]
    assert result["timing_s"]["total"] < 60


def test_budget_stops_both_methods_at_the_same_step(tmp_path):
    out = tmp_path / "probe.json"
    subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--steps", "20", "--budget-s", "1", "--out", str(out)],
                   cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.read_text())
    assert result["steps_done"] == 1 and result["stop_reason"].startswith("budget")
    assert [len(h) for h in result["history"].values()] == [1, 1]
    assert set(result["after"]) == {"grpo", "resrl"}


@pytest.mark.parametrize("text, oracle, expected", [
    ("57 + 87 = 144, 144 + 70 = 214.\nAnswer: 214", "214", 1.0),
    ("Answer: -103", "-103", 1.0),
    ("The answer is 1,000.", "1000", 1.0),
    ("Answer: 214.0", "214", 1.0),
    ("Answer: 21\nso 214 in total", "214", 0.0),  # the tagged answer wins over later numbers
    ("4 - 1 = 3, 3 - 7 = -4", "-4", 1.0),
    ("4 - 1 = 3, 3 - 7 = -4", "4", 0.0),
    ("I do not know.", "5", 0.0),
])
def test_score(text, oracle, expected):
    assert probe.score(text, oracle) == expected


def test_pass_at_k_is_the_unbiased_estimator():
    n = 6
    for c in range(n + 1):
        outcomes = [1] * c + [0] * (n - c)
        for k in (1, 2, 4, 6):
            brute = sum(any(outcomes[i] for i in subset) for subset in combinations(range(n), k))
            assert probe.pass_at_k(n, c, k) == pytest.approx(brute / math.comb(n, k))


def _tiny():
    model, tokenizer = probe.tiny_policy(seed=0)
    return model.eval(), tokenizer


def test_padded_batch_log_probs_and_states_match_unpadded_forwards():
    model, tokenizer = _tiny()
    pad = tokenizer.convert_tokens_to_ids(probe.PAD_TOKEN)
    prompts = probe.encode_prompts(tokenizer, ["1 + 2 =", "3 + 4 + 5 + 6 ="])
    responses = [[7, 8, 9, 10, 11], [12, 13]]
    batch = probe.batch_tensors(prompts, responses, pad)
    capture = probe.HiddenStateCapture(model, probe.ResRLConfig().hidden_layer)
    logp, states = probe.old_logprobs_and_states(model, batch, micro=2, capture=capture)
    assert logp.shape == states.shape[:2] == batch["response_mask"].shape == (2, 5)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        with torch.no_grad():
            out = model(torch.tensor([p + r]), output_hidden_states=True)
        expected = torch.log_softmax(out.logits[0, len(p) - 1:-1], -1).gather(-1, torch.tensor(r)[:, None])[:, 0]
        torch.testing.assert_close(logp[i, :len(r)], expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(states[i, :len(r)], out.hidden_states[-2][0, len(p) - 1:-1], atol=1e-5, rtol=1e-5)
    assert batch["response_mask"].tolist() == [[1] * 5, [1, 1, 0, 0, 0]]


def test_sample_cuts_each_response_after_its_first_eos():
    model, tokenizer = _tiny()
    eos, pad = (tokenizer.convert_tokens_to_ids(t) for t in (probe.EOS_TOKEN, probe.PAD_TOKEN))
    prompts = probe.encode_prompts(tokenizer, ["1 + 2 =", "5 ="])
    responses = probe.sample(model, prompts, 8, temperature=1.0, top_p=1.0, max_new_tokens=10, eos_id=eos,
                             pad_id=pad, batch_size=5, seed=0)
    assert len(responses) == 16
    for r in responses:
        assert 1 <= len(r) <= 10 and eos not in r[:-1]
        assert len(r) == 10 or r[-1] == eos
    again = probe.sample(model, prompts, 8, temperature=1.0, top_p=1.0, max_new_tokens=10, eos_id=eos, pad_id=pad,
                         batch_size=5, seed=0)
    assert again == responses


def test_ppo_loss_is_the_clipped_surrogate():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.0, 1.5, 0.5, 1.5]]))
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, clipped = probe.ppo_loss(logp, old, adv, mask, clip=0.2, denominator=3.0)
    # token 0: r=1 -> -1; token 1: r=1.5, A>0 -> clipped at 1.2 -> -1.2; token 2: r=0.5, A<0 -> clipped 0.8 -> 0.8
    assert float(loss) == pytest.approx((-1.0 - 1.2 + 0.8) / 3.0)
    assert int(clipped) == 2


def test_the_problem_file_has_every_level_with_disjoint_splits():
    levels = probe.load_levels(probe.DATA_FILE)
    assert set(levels) == set(probe.LEVELS)
    for name, level in levels.items():
        assert level["config"] == probe.LEVELS[name]
        assert len(level["heldout"]) == 128 and len(level["train"]) >= 30 * 32 + 64, name
        assert not {p["question"] for p in level["heldout"]} & {p["question"] for p in level["train"]}
        assert all(probe.score(f"Answer: {p['answer']}", p["answer"]) == 1.0 for p in level["heldout"])
        assert level["heldout"][0]["question"].startswith("State the final answer to the following arithmetic")


def test_choose_level_prefers_the_middle_of_the_range():
    assert probe.choose_level({"easy": 0.95, "mid": 0.62, "low": 0.35}) == "mid"
    assert probe.choose_level({"easy": 0.95, "hard": 0.05}) == "easy"  # none in range: closest to 55%
    assert probe.choose_level({"a": 0.3, "b": 0.85}) == "a"


def test_gguf_halves_are_checked_before_loading(tmp_path):
    with pytest.raises(FileNotFoundError, match="warm"):
        probe.assemble_gguf([str(tmp_path / "missing.part0"), str(tmp_path / "b.part1")], str(tmp_path / "cache"))
    parts = []
    for i, chunk in enumerate((b"GGUF", b"not the model")):
        parts.append(tmp_path / f"p{i}")
        parts[-1].write_bytes(chunk)
    assembled = probe.assemble_gguf([str(p) for p in parts], str(tmp_path / "cache"))
    assert assembled.read_bytes() == b"GGUFnot the model" and assembled.name == probe.GGUF_NAME
    with pytest.raises(ValueError, match=probe.GGUF_SHA256):
        probe.check_sha256(assembled)


def test_a_failing_step_still_writes_the_json_and_fails(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("residuals broke")

    monkeypatch.setattr(probe, "compute_residuals", broken)
    out = tmp_path / "probe.json"
    with pytest.raises(SystemExit, match="training failed after 0 step"):
        probe.main(["--smoke", "--steps", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["steps_done"] == 0 and "residuals broke" in result["stop_reason"]
    assert "RuntimeError" in result["error"] and set(result["after"]) == {"grpo", "resrl"}


def test_settings_are_checked_before_anything_runs():
    with pytest.raises(SystemExit):
        probe.parse_args(["--smoke", "--n", "1"])
    with pytest.raises(SystemExit):
        probe.parse_args(["--steps", "3"])  # no model given


def test_measure_keeps_the_levels_an_earlier_call_measured_with_the_same_settings(tmp_path):
    out = tmp_path / "choice.json"
    common = [sys.executable, str(SCRIPT), "measure", "--smoke", "--heldout", "2", "--eval-samples", "2",
              "--max-new-tokens", "4", "--out", str(out)]
    subprocess.run([*common, "t2d2"], cwd=ROOT, check=True, capture_output=True, timeout=300)
    first = json.loads(out.read_text())["levels"]["t2d2"]
    proc = subprocess.run([*common, "t2d2", "t3d2"], cwd=ROOT, check=True, capture_output=True, text=True,
                          timeout=300)
    levels = json.loads(out.read_text())["levels"]
    assert "kept t2d2" in proc.stdout and list(levels) == ["t2d2", "t3d2"] and levels["t2d2"] == first
    subprocess.run([*common[:-2], "--seed", "1", "--out", str(out), "t3d2"], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    assert list(json.loads(out.read_text())["levels"]) == ["t3d2"]  # other settings: measured afresh
