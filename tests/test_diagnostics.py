"""verl_resrl.diagnostics: exact interference against autograd, the statistics, and the probe CLI (--smoke)."""

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from verl_resrl.diagnostics import full_model_interference, head_interference
from verl_resrl.diagnostics import probe
from verl_resrl.diagnostics.interference import sgd_step_change, token_logprobs
from verl_resrl.diagnostics.stats import average_ranks, bootstrap_median, spearman
from verl_resrl.diagnostics.tasks import load_task, score_number

ROOT = Path(__file__).resolve().parents[1]

# Runs the CLI with every `verl` import refused: the diagnostics need torch + transformers only.
NO_VERL = """
import importlib.abc, runpy, sys
class NoVerl(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "verl" or name.startswith("verl."):
            raise ModuleNotFoundError(f"No module named {name!r} (refused by the test)")
sys.meta_path.insert(0, NoVerl())
sys.argv = ["verl_resrl.diagnostics", *sys.argv[1:]]
runpy.run_module("verl_resrl.diagnostics", run_name="__main__")
"""


def tiny_llama(tied=True, dtype=torch.float64, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied,
                         attn_implementation="eager")
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).to(dtype).eval()


def per_token_head_gradient(h, w, y):
    w = w.clone().requires_grad_(True)
    return torch.autograd.grad(torch.log_softmax(w @ h, dim=-1)[y], w)[0]


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_head_interference_equals_the_inner_product_of_explicit_gradients(chunk):
    torch.manual_seed(0)
    n, hidden, vocab = 24, 12, 30
    h, w = torch.randn(n, hidden, dtype=torch.float64), torch.randn(vocab, hidden, dtype=torch.float64)
    labels = torch.randint(0, vocab, (n,))
    labels[3] = labels[0]  # a negative token sharing a positive's label
    positive = torch.zeros(n, dtype=torch.bool)
    positive[[0, 5, 9, 17]] = True
    grads = [per_token_head_gradient(h[t], w, labels[t]) for t in range(n)]
    mean_positive = sum(grads[i] for i in range(n) if positive[i]) / positive.sum()
    expected = torch.stack([(g * mean_positive).sum() for g in grads])
    out = head_interference(h, w, labels, positive, vocab_chunk=chunk)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_head_interference_rejects_bad_input():
    h, w = torch.randn(4, 3), torch.randn(5, 3)
    labels, positive = torch.tensor([0, 1, 2, 3]), torch.tensor([True, False, False, False])
    with pytest.raises(ValueError, match="at least one positive"):
        head_interference(h, w, labels, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"hidden \[N, H\]"):
        head_interference(h, torch.randn(5, 4), labels, positive)
    with pytest.raises(ValueError, match="labels must lie"):
        head_interference(h, w, torch.tensor([0, 1, 2, 9]), positive)


def test_full_model_interference_equals_explicit_gradient_inner_products():
    model = tiny_llama()
    torch.manual_seed(1)
    ids = torch.randint(0, 40, (3, 11))
    attention = torch.ones_like(ids)
    attention[2, 8:] = 0  # a shorter response, right-padded
    start = 5
    mask = attention[:, start:].bool()
    coefficients = torch.zeros(mask.shape, dtype=torch.float64)
    coefficients[0] = 1.0 / mask[0].sum()
    out = full_model_interference(model, ids, attention, start, mask, {"pos": coefficients})["pos"]

    params = list(model.parameters())
    logp = token_logprobs(model, ids, attention, start)
    direction = torch.autograd.grad((logp * coefficients * mask).sum(), params, retain_graph=True)
    expected = torch.zeros(mask.shape, dtype=torch.float64)
    for b, t in mask.nonzero().tolist():
        grads = torch.autograd.grad(logp[b, t], params, retain_graph=True)
        expected[b, t] = sum((g * d).sum() for g, d in zip(grads, direction))
    assert out.dtype == torch.float64
    # Llama's RMSNorm computes in float32 even in a float64 model, so forward- and reverse-mode AD agree to float32
    # rounding, not float64.
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-8)
    assert (out[~mask] == 0).all()


@pytest.mark.parametrize("row_chunk", [1, 2])
def test_full_model_interference_by_row_chunks_equals_all_rows_at_once(row_chunk):
    model = tiny_llama(dtype=torch.float32)
    torch.manual_seed(2)
    ids = torch.randint(0, 40, (5, 12))
    attention = torch.ones_like(ids)
    attention[1, 7:] = 0
    attention[3, 9:] = 0
    attention[4, 6:] = 0  # a one-token response
    start = 5
    mask = attention[:, start:].bool()
    positive = torch.tensor([True, False, True, False, False])
    directions = {"pos": (mask & positive[:, None]).float() / (mask & positive[:, None]).sum(),
                  "neg": (mask & ~positive[:, None]).float() / (mask & ~positive[:, None]).sum()}
    whole = full_model_interference(model, ids, attention, start, mask, directions)
    chunked = full_model_interference(model, ids, attention, start, mask, directions, rows=~positive,
                                      row_chunk=row_chunk)
    for key in directions:
        torch.testing.assert_close(chunked[key][~positive], whole[key][~positive], rtol=1e-4, atol=1e-6)
        assert (chunked[key][positive] == 0).all()  # rows not asked for are not run
    torch.testing.assert_close(token_logprobs(model, ids, attention, start, row_chunk),
                               token_logprobs(model, ids, attention, start) * mask, rtol=1e-5, atol=1e-6)


def test_sgd_step_change_sums_the_gradients_of_a_loss_given_in_parts():
    model = tiny_llama()
    ids = torch.randint(0, 40, (4, 9))
    attention = torch.ones_like(ids)
    start = 4

    def measure():
        return token_logprobs(model, ids, attention, start)

    whole = sgd_step_change(model, lambda: -token_logprobs(model, ids, attention, start).sum(), measure, 1e-3)
    parts = sgd_step_change(model, lambda: (-token_logprobs(model, ids[r], attention[r], start).sum()
                                            for r in torch.arange(4).split(3)), measure, 1e-3)
    torch.testing.assert_close(parts, whole, rtol=1e-6, atol=1e-9)


def test_first_order_change_predicts_a_small_sgd_step():
    model = tiny_llama()
    ids = torch.randint(0, 40, (2, 9))
    attention = torch.ones_like(ids)
    start, mask = 4, torch.ones(2, 5, dtype=torch.bool)
    c = torch.tensor([[0.2] * 5, [0.0] * 5], dtype=torch.float64)
    derivative = full_model_interference(model, ids, attention, start, mask, {"d": c})["d"]
    before = [p.detach().clone() for p in model.parameters()]
    lr = 1e-4
    change = sgd_step_change(model, lambda: -(token_logprobs(model, ids, attention, start) * c).sum(),
                             lambda: token_logprobs(model, ids, attention, start), lr)
    # first order up to O(lr^2) and the float32 rounding of Llama's RMSNorm
    assert float((change - lr * derivative).norm() / (lr * derivative).norm()) < 1e-2
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # weights restored


def test_spearman_and_ranks():
    assert average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [2.5, 0.0, 2.5, 1.0]
    x = torch.arange(10.0)
    assert spearman(x, x ** 3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(x, torch.ones(10)) is None and spearman(x[:2], x[:2]) is None
    # with ties: the Pearson correlation of average ranks
    a, b = torch.tensor([1.0, 1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0, 3.0])
    ra, rb = average_ranks(a) - 1.5, average_ranks(b) - 1.5  # ranks [0.5, 0.5, 2, 3] and [0, 1, 2.5, 2.5]
    assert spearman(a, b) == pytest.approx(float((ra * rb).sum() / (ra.norm() * rb.norm())))


def test_bootstrap_median_interval():
    values = [float(v) for v in range(101)]
    out = bootstrap_median(values, seed=0)
    assert out["median"] == 50.0 and out["n"] == 101
    assert out["ci"][0] < 50.0 < out["ci"][1] and 35 < out["ci"][0] and out["ci"][1] < 65
    assert bootstrap_median([]) == {"median": None, "ci": [None, None], "n": 0}


def test_weightings_share_a_total_and_the_oracle_gives_the_most_interfering_token_the_least():
    w = torch.tensor([0.1, 0.55, 1.0, 0.3])
    full = torch.tensor([5.0, -1.0, 0.0, 2.0])
    out = probe.weightings(w, full, probe.ResRLConfig(), torch.Generator().manual_seed(0))
    assert set(out) == set(probe.WEIGHTINGS)
    for v in out.values():
        assert float(v.sum()) == pytest.approx(4.0)
    assert int(out["oracle"].argmin()) == 0 and int(out["oracle"].argmax()) == 1
    torch.testing.assert_close(out["inverse"] / out["inverse"].sum(), (1.1 - w) / (1.1 - w).sum())


def test_chain_sum_task_and_scorer():
    task = load_task("chain_sum", level="t2d2")
    assert task.name == "chain_sum/t2d2" and len(task.questions) == len(task.answers) > 1000
    assert "=" in task.questions[0]
    assert score_number("so 3 + 4 = 7\nAnswer: 7", "7") == 1.0
    assert score_number("Answer: 1,000", "1000") == 1.0 and score_number("Answer: 8", "7") == 0.0
    with pytest.raises(ValueError, match="--level"):
        load_task("chain_sum", level="nope")
    with pytest.raises(ValueError, match="unknown --task"):
        load_task("poetry")


def test_model_without_a_usable_lm_head_is_refused():
    model = tiny_llama()
    model.lm_head = None
    model.get_output_embeddings = lambda: None
    with pytest.raises(probe.ProbeError, match="no separate LM head weight"):
        probe.lm_head_weight(model)
    with pytest.raises(probe.ProbeError, match="--layers=9 is out of range"):
        probe.probe_layers(tiny_llama(), [9])
    assert probe.probe_layers(tiny_llama(), None) == [-1, -2, 1]


def run_cli(*argv, timeout=120):
    return subprocess.run([sys.executable, "-c", NO_VERL, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    proc = run_cli("probe", "--smoke", "--out", str(out), "--mixed-groups", "12", "--max-new-tokens", "16")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def test_smoke_probe_reports_every_layer_without_nan(smoke):
    out, proc = smoke
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["resrl_config"] == probe.ResRLConfig().to_dict()
    assert [row["layer"] for row in summary["rows"]] == [-1, -2, 2]
    for row in summary["rows"]:
        assert row["mixed_groups"] == 12
        for key in ("spearman_weight_head", "spearman_weight_full"):
            assert -1 <= row[key]["median"] <= 1 and row[key]["ci"][0] <= row[key]["ci"][1]
        assert set(row["damage_per_push"]) == set(probe.WEIGHTINGS)
        assert all(math.isfinite(v["median"]) for v in row["damage_per_push"].values())
    assert summary["sgd_check"]["groups"] == 3 and summary["sgd_check"]["max_relative_error"] < 0.2
    assert (out / "deciles.png").stat().st_size > 0 and "Damage per push" in (out / "report.md").read_text()
    assert "[sample]" in proc.stdout and "ETA" in proc.stdout


def test_smoke_probe_resumes_from_its_cache(smoke):
    out, _ = smoke
    samples, groups = (out / "samples.jsonl").read_text(), (out / "groups.jsonl").read_text()
    proc = run_cli("probe", "--smoke", "--out", str(out), "--mixed-groups", "12", "--max-new-tokens", "16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[sample]" not in proc.stdout and "[measure]" not in proc.stdout
    assert (out / "samples.jsonl").read_text() == samples and (out / "groups.jsonl").read_text() == groups
    other = run_cli("probe", "--smoke", "--out", str(out), "--n", "4", "--max-new-tokens", "16")
    assert other.returncode == 2 and "other settings (n)" in other.stderr


def test_bad_input_gets_a_clear_message(tmp_path, monkeypatch):
    proc = run_cli("probe", "--smoke", "--out", str(tmp_path / "a"), "--layers", "7")
    assert proc.returncode == 2 and "--layers=7 is out of range" in proc.stderr and "Traceback" not in proc.stderr

    from verl_resrl.diagnostics import __main__ as cli

    all_wrong = [{"index": 0, "prompt_ids": [1, 2], "responses": [[3], [4]], "rewards": [0.0, 0.0]}]
    monkeypatch.setattr(cli.probe, "sample", lambda *a, **k: all_wrong)
    args = cli.parse_args(["probe", "--smoke", "--out", str(tmp_path / "b")])
    with pytest.raises(probe.ProbeError, match="no mixed groups among 1 prompts"):
        cli.run(args, log=lambda *a, **k: None)
    assert not (tmp_path / "b" / "summary.json").exists()


def test_task_loader_errors_print_as_errors(tmp_path):
    missing = run_cli("probe", "--smoke", "--task", "chain_sum", "--data", str(tmp_path / "none.json"),
                      "--out", str(tmp_path / "c"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "error: --task chain_sum reads its problems from --data" in missing.stderr
    unknown = run_cli("probe", "--smoke", "--task", "sudoku", "--out", str(tmp_path / "d"))
    assert unknown.returncode == 2 and "error: unknown --task 'sudoku'" in unknown.stderr
