"""reward_fns/function_call_reward.py: both call syntaxes, BFCL's checker on the leaderboard's own answers,
order-insensitivity, types, and hostile responses (score 0 quickly, nothing evaluated)."""

import importlib.util
import json
import random
import sys
import time
from pathlib import Path

import pytest
from harness import REPO, load_script

if importlib.util.find_spec("bfcl_eval") is None:
    pytest.skip("needs BFCL's data and checker: pip install --no-deps bfcl-eval==2026.3.23", allow_module_level=True)


fc = load_script(REPO / "reward_fns" / "function_call_reward.py", "resrl_fc_reward_under_test")

AREA = {"name": "area", "parameters": {"type": "dict", "required": ["base", "height"], "properties": {
    "base": {"type": "integer"}, "height": {"type": "float"}, "unit": {"type": "string"}}}}
WEATHER = {"name": "weather.get", "parameters": {"type": "dict", "required": ["city"], "properties": {
    "city": {"type": "string"}, "days": {"type": "array", "items": {"type": "integer"}}}}}
GOLD = json.dumps([{"area": {"base": [10], "height": [5.0], "unit": ["units", ""]}},
                   {"weather.get": {"city": ["San Francisco", "SF"], "days": [[1, 2], ""]}}])
INFO = {"functions": json.dumps([AREA, WEATHER]), "index": 0}


def tool_call(name, arguments):
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def score(response, gold=GOLD, info=INFO, **kwargs):
    return fc.compute_score("bfcl_parallel", response, gold, info, **kwargs)


# --- parsing ---------------------------------------------------------------------------------------------------

def test_parse_both_syntaxes():
    hermes = "<think>plan</think>" + tool_call("area", {"base": 1}) + "\n" + tool_call("f", {"x": [1, {"a": None}]})
    assert fc.parse_calls(hermes) == [{"area": {"base": 1}}, {"f": {"x": [1, {"a": None}]}}]
    string_arguments = '<tool_call>{"name": "f", "arguments": "{\\"x\\": 2}"}</tool_call>'
    assert fc.parse_calls(string_arguments) == [{"f": {"x": 2}}]
    python = "[area(base=10, height=-2.5), weather.get(city='SF', days=[1, 2], extra={'k': (1, 2)})]"
    assert fc.parse_calls(python) == [{"area": {"base": 10, "height": -2.5}},
                                      {"weather.get": {"city": "SF", "days": [1, 2], "extra": {"k": (1, 2)}}}]
    assert fc.parse_calls("```python\narea(base=1)\n```") == [{"area": {"base": 1}}]


@pytest.mark.parametrize("response", [
    "<tool_call>{\"name\": \"area\", \"arguments\": {\"base\": 1}",  # truncated
    "<tool_call>{\"name\": \"area\", \"arguments\": {\"base\": 1</tool_call>",  # malformed JSON
    "<tool_call>[1, 2]</tool_call>", "<tool_call>{\"arguments\": {}}</tool_call>",
    "<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>",
    "[area(10, 5)]", "[area(**kw)]", "[area(base=x)]", "[area(base=1 + 2)]", "[area(base=__import__('os'))]",
    "[(lambda: 1)(base=1)]", "[area(base=1), 3]", "I would call area.", "", "[" * 5000, "[area(base=" + "[" * 3000,
    "<tool_call>" + "[" * 100000 + "</tool_call>",
])
def test_unparseable_responses_raise(response):
    with pytest.raises(fc.UnparseableCalls):
        fc.parse_calls(response)


def test_nothing_in_a_python_call_is_evaluated(tmp_path):
    marker = tmp_path / "evaluated"
    payloads = [f"[area(base=__import__('pathlib').Path({str(marker)!r}).touch() or 1)]",
                f"[area(base=1 + __import__('pathlib').Path({str(marker)!r}).touch())]",
                f"[area(base=(lambda: __import__('pathlib').Path({str(marker)!r}).touch())())]"]
    for payload in payloads:
        assert score(payload)["score"] == 0.0
    assert not marker.exists()


# --- scores ----------------------------------------------------------------------------------------------------

def test_matching_calls_in_any_order_and_syntax():
    a, w = tool_call("area", {"base": 10, "height": 5}), tool_call("weather.get", {"city": "sf", "days": [1, 2]})
    assert score(a + w) == {"score": 1.0, "acc": 1.0, "parsed": 1.0}
    assert score(w + "\nsome text\n" + a)["acc"] == 1.0  # order-insensitive; int accepted for float
    assert score("[weather.get(city='San Francisco'), area(base=10, height=5.0, unit='units')]")["acc"] == 1.0


@pytest.mark.parametrize("response", [
    "[area(base=10, height=5.0)]",  # a call missing
    "[area(base=10, height=5.0), weather.get(city='SF'), weather.get(city='SF')]",  # one too many
    "[area(base=10, height=5.0), weather.get(city='Paris')]",  # wrong value
    "[area(base='10', height=5.0), weather.get(city='SF')]",  # wrong type: str for int
    "[area(base=10.0, height=5.0), weather.get(city='SF')]",  # wrong type: float for int
    "[area(base=10, height=5.0), weather.get(city='SF', days=['1', '2'])]",  # wrong item type
    "[area(height=5.0), weather.get(city='SF')]",  # required argument missing
    "[area(base=10, height=5.0, colour='red'), weather.get(city='SF')]",  # unknown argument
    "[area(base=10, height=5.0), forecast(city='SF')]",  # unknown function
    "[area(base=10, height=5.0), weather(city='SF')]",
])
def test_mismatches_score_zero(response):
    assert score(response) == {"score": 0.0, "acc": 0.0, "parsed": 1.0}


def test_reward_styles_and_bad_settings():
    assert score("no call", reward_style="signed") == {"score": -1.0, "acc": 0.0, "parsed": 0.0}
    with pytest.raises(ValueError, match="reward_style"):
        score("x", reward_style="ternary")


@pytest.mark.parametrize("gold", ["not json", "[]", "{}", json.dumps([{"f": {"x": 1}}]), json.dumps([{"f": 1}]),
                                  json.dumps([{"f": {}, "g": {}}]), json.dumps([{"unknown": {"x": [1]}}])])
def test_malformed_ground_truth_raises_naming_the_sample(gold):
    with pytest.raises(ValueError, match="bfcl_parallel#0"):
        score("[area(base=1)]", gold=gold)


def test_schema_inferred_without_function_docs():
    gold = json.dumps([{"f": {"n": [3], "xs": [[1.5]], "opt": ["", "a"]}}])
    assert fc.compute_score("x", "[f(n=3, xs=[1.5])]", gold)["acc"] == 1.0
    assert fc.compute_score("x", "[f(n='3', xs=[1.5])]", gold)["acc"] == 0.0
    assert fc.compute_score("x", "[f(xs=[1.5])]", gold)["acc"] == 0.0


# --- the leaderboard's own possible answers --------------------------------------------------------------------

def _bfcl(category):
    data = Path(importlib.util.find_spec("bfcl_eval").submodule_search_locations[0]) / "data"
    load = lambda p: [json.loads(line) for line in p.read_text().splitlines() if line.strip()]  # noqa: E731
    questions = {q["id"]: q for q in load(data / f"BFCL_v4_{category}.json")}
    answers = load(data / "possible_answer" / f"BFCL_v4_{category}.json")
    return [(questions[a["id"]], a["ground_truth"]) for a in answers]


def _first_allowed(value):
    """A model-side value from a possible answer: the first allowed value, nested dicts resolved."""
    if isinstance(value, dict):
        return {k: _first_allowed(v[0]) for k, v in value.items() if isinstance(v, list) and v and v[0] != ""}
    if isinstance(value, list):
        return [_first_allowed(v) for v in value]
    return value


def _calls(gold):
    return [(name, {k: _first_allowed(v[0]) for k, v in args.items() if v and v[0] != ""})
            for call in gold for name, args in call.items()]


@pytest.mark.parametrize("category", ["simple_python", "multiple", "parallel", "parallel_multiple", "live_simple",
                                      "live_multiple", "live_parallel", "live_parallel_multiple"])
def test_bfcl_possible_answers_score_one_in_both_syntaxes_and_perturbed_ones_zero(category):
    rng = random.Random(0)
    items = _bfcl(category)
    python_ok = hermes_ok = perturbed_ok = 0
    for question, gold in items:
        info = {"functions": json.dumps(question["function"]), "index": question["id"]}
        calls = _calls(gold)
        rng.shuffle(calls)
        python = "[" + ", ".join(f"{n}(" + ", ".join(f"{k}={v!r}" for k, v in a.items()) + ")" for n, a in calls) + "]"
        hermes = "\n".join(tool_call(n, a) for n, a in calls)
        python_score = fc.compute_score(category, python, json.dumps(gold), info)["acc"]
        python_ok += python_score
        hermes_ok += fc.compute_score(category, hermes, json.dumps(gold), info)["acc"]
        if python_score:  # dropping a call, or renaming one, must fail
            dropped = "\n".join(tool_call(n, a) for n, a in calls[1:]) or "no call"
            renamed = "\n".join(tool_call(n + "_x" if i == 0 else n, a) for i, (n, a) in enumerate(calls))
            perturbed_ok += fc.compute_score(category, dropped, json.dumps(gold), info)["acc"]
            perturbed_ok += fc.compute_score(category, renamed, json.dumps(gold), info)["acc"]
    # A few possible answers cannot be met by their first allowed values (BFCL data quirks, e.g. a required
    # argument whose only allowed value is "optional"); everything else must pass, in both syntaxes.
    assert python_ok >= 0.98 * len(items), (python_ok, len(items))
    assert hermes_ok >= python_ok - 1
    assert perturbed_ok == 0


# --- hostile responses -----------------------------------------------------------------------------------------

HOSTILE = {
    "truncated_json": tool_call("area", {"base": 10, "height": 5})[:-15],
    "unknown_function": tool_call("rm_rf", {"path": "/"}) + tool_call("area", {"base": 10, "height": 5}),
    "wrong_types": tool_call("area", {"base": "ten", "height": [5]}) + tool_call("weather.get", {"city": 7}),
    "hundreds_of_calls": "\n".join(tool_call("area", {"base": 10, "height": 5}) for _ in range(500)),
    "hundreds_of_python_calls": "[" + ", ".join(["area(base=10, height=5.0)"] * 500) + "]",
    "deep_json": ("<tool_call>{\"name\": \"area\", \"arguments\": " + "{\"a\": " * 50000 + "1" + "}" * 50000
                  + "}</tool_call>"),
    "deep_python": "[area(base=" + "[" * 50000 + "1" + "]" * 50000 + ")]",
    "huge_int": "[area(base=" + "9" * 40000 + ", height=5.0)]",
    "huge_response": tool_call("area", {"base": 10, "height": 5}) + " " * 100_000,
    "binary": "\x00\udcff<tool_call>\x00</tool_call>",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_responses_score_zero_quickly(name):
    start = time.monotonic()
    out = score(HOSTILE[name])
    assert out["score"] == 0.0
    assert time.monotonic() - start < 2.0


def test_checker_loads_without_bfcls_model_handlers():
    checker = fc.bfcl_checker()
    assert callable(checker.parallel_function_checker_no_order)
    assert "bfcl_eval.constants.model_config" not in sys.modules  # the stand-in does not leak
    assert "bfcl_eval.model_handler" not in sys.modules
