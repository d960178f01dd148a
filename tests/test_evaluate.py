"""verl_resrl.evaluate: unbiased pass@k against brute force; JSON, table and plot from a fixture."""

import itertools
import json

import pandas as pd
import pytest

from verl_resrl import evaluate


def _brute_force_pass_at_k(n, c, k):
    """Fraction of all k-subsets of n samples (c of them correct) that contain a correct sample."""
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert evaluate.pass_at_k(n, c, k) == pytest.approx(_brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_edges_and_k_values():
    assert evaluate.pass_at_k(16, 4, 1) == pytest.approx(4 / 16)  # pass@1 = mean accuracy
    assert evaluate.pass_at_k(128, 1, 128) == 1.0
    assert evaluate.pass_at_k(128, 0, 64) == 0.0
    with pytest.raises(ValueError):
        evaluate.pass_at_k(4, 5, 1)
    assert evaluate.k_values(16) == [1, 2, 4, 8, 16]
    assert evaluate.k_values(12) == [1, 2, 4, 8]


def _fixture_results(path, correct_pattern):
    """Two benchmarks x 2 prompts x 4 responses; ``correct_pattern[bench][prompt]`` = number correct."""
    rows = []
    truths = {"aime24": ["204", "\\frac{1}{2}"], "math500": ["8", "x^2+1"]}
    for bench, prompts in correct_pattern.items():
        for pid, n_correct in enumerate(prompts):
            truth = truths[bench][pid]
            responses = [f"... so \\boxed{{{truth}}}"] * n_correct + ["... \\boxed{999}"] * (4 - n_correct)
            rows.append({"data_source": bench, "reward_model": {"ground_truth": truth},
                         "extra_info": {"index": pid}, "responses": responses})
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_cli_writes_json_table_and_plot(tmp_path, capsys):
    grpo = _fixture_results(tmp_path / "grpo.parquet", {"aime24": [1, 0], "math500": [4, 2]})
    resrl = tmp_path / "resrl.jsonl"
    _fixture_results(tmp_path / "tmp.parquet", {"aime24": [2, 1], "math500": [4, 3]})
    frame = pd.read_parquet(tmp_path / "tmp.parquet")
    resrl.write_text("\n".join(json.dumps({**r, "responses": list(r["responses"])})
                               for r in frame.to_dict("records")))
    out = tmp_path / "report"
    evaluate.main([str(grpo), str(resrl), "--out-dir", str(out), "--names", "grpo,resrl"])

    metrics = json.loads((out / "metrics.json").read_text())
    aime = metrics["grpo"]["aime24"]
    assert aime["prompts"] == 2 and aime["n"] == 4
    assert aime["avg@4"] == pytest.approx(1 / 8)
    assert aime["pass@1"] == pytest.approx(1 / 8)
    assert aime["pass@2"] == pytest.approx((evaluate.pass_at_k(4, 1, 2) + 0.0) / 2)
    assert aime["pass@4"] == pytest.approx(0.5)
    assert metrics["resrl"]["math500"]["avg@4"] == pytest.approx(7 / 8)
    assert metrics["resrl"]["math500"]["per_prompt"] == {"0": [4, 4], "1": [4, 3]}

    table = (out / "metrics.md").read_text()
    assert "| run | benchmark | prompts | n | avg@n | pass@1 | pass@2 | pass@4 |" in table
    assert "| grpo | aime24 | 2 | 4 | 12.5 | 12.5 | 25.0 | 50.0 |" in table
    assert "| resrl | math500 | 2 | 4 | 87.5 | 87.5 | 100.0 | 100.0 |" in table
    assert table in capsys.readouterr().out
    png = (out / "pass_at_k.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_one_response_per_row_is_pooled_by_prompt(tmp_path):
    rows = [{"data_source": "amc23", "ground_truth": "3", "index": 7, "response": r}
            for r in ["\\boxed{3}", "\\boxed{4}", "Answer: 3"]]
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    benches = evaluate.evaluate_run(path, evaluate.load_compute_score())
    assert benches["amc23"].counts == {"7": (3, 2)}


def test_missing_columns_are_reported(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"data_source": "x", "responses": ["a"]}))
    with pytest.raises(ValueError, match="row 0 needs data_source, a ground truth"):
        evaluate.evaluate_run(path, evaluate.load_compute_score())
