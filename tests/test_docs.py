"""docs/ stays true to the code: every setting, metric and error message the package has is documented."""

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from verl_resrl.core.config import ResRLConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _rows(page: str) -> dict[str, list[str]]:
    """First-column key (inside backticks) -> the row's cells, for every table row of a docs page."""
    rows = {}
    for line in (DOCS / page).read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and (m := re.fullmatch(r"`([^`]+)`", cells[0])):
            rows.setdefault(m.group(1), cells)
    return rows


def _section(page: str, heading: str) -> str:
    text = (DOCS / page).read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end >= 0 else None]


def test_every_resrl_setting_has_a_row_with_its_default():
    section = _section("configuration.md", "## `algorithm.resrl.*`")
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and (m := re.fullmatch(r"`([^`]+)`", cells[0])):
            rows[m.group(1)] = cells
    fields = {f.name: f for f in dataclasses.fields(ResRLConfig)}
    assert set(rows) == set(fields), "docs/configuration.md and ResRLConfig list different keys"
    for name, field in fields.items():
        cells = rows[name]
        assert len(cells) == 6, f"{name}: expected key | type | default | range | effect | when"
        documented = ast.literal_eval(cells[2].strip("`"))
        assert documented == field.default and type(documented) is type(field.default), \
            f"{name}: documented default {cells[2]}, code {field.default!r}"
        assert name in (ResRLConfig.__doc__ or ""), f"{name} has no docstring entry in ResRLConfig"


def test_length_scale_settings_match_the_reward_manager():
    from verl_resrl.length_scaled_reward import LengthScale

    section = _section("configuration.md", "## Reward manager `length_scaled`")
    for field in dataclasses.fields(LengthScale):
        assert re.search(rf"\| `{field.name}` \| \w+ \| `{re.escape(repr(field.default))}` \|", section), field.name


def _metric_names() -> set[str]:
    names = set()
    for path in [*(ROOT / "verl_resrl").rglob("*.py"), *(ROOT / "reward_fns").rglob("*.py")]:
        if "demo" in path.parts or "diagnostics" in path.parts:
            continue  # the demo's progress lines and the probe's report read metrics, they do not log them
        names |= set(re.findall(r"[\"']((?:resrl|actor/resrl)[/_][a-z0-9_@]+)[\"']", path.read_text()))
    return {n for n in names if n.startswith("resrl/") or n.startswith("actor/resrl_")}


def test_every_logged_metric_is_documented():
    names = _metric_names()
    assert "resrl/coverage" in names and "actor/resrl_neg_token_frac" in names  # the scan finds them
    documented = set(_rows("metrics.md"))
    assert names <= documented, f"undocumented metrics: {sorted(names - documented)}"
    assert documented <= names, f"documented metrics the package does not log: {sorted(documented - names)}"


# --- errors ---------------------------------------------------------------------------------------------------

# Modules whose errors a user meets: the whole package (settings, refused set-ups, training, the CPU backend, the
# demo, the probe, model assets, the library functions), the reward functions and the data preparation scripts.
USER_FACING = ["verl_resrl", "reward_fns", "recipes"]
# Raised and caught inside their module, so a user never sees them as errors.
INTERNAL = {
    # parse errors of a response: the response scores 0
    "reward_fns/function_call_reward.py": ["a called name must be a dotted identifier", "is not a literal",
                                           "unterminated <tool_call> block", "not a Python call list",
                                           "every element must be a call", "arguments must be given by name",
                                           "invalid JSON in <tool_call>",
                                           'a <tool_call> must be {"name": str, "arguments": object}'],
    # evaluate_expression's errors: calculator_response catches them and answers the model "error: <reason>"
    "verl_resrl/demo/calculator_tool.py": ["expression must be a string, got", "expression longer than",
                                           "not a sum or difference of integers"],
    # _literal's errors: _assert_case catches them, and the HumanEval problem is left out (and counted)
    "recipes/prepare_code_data.py": ["not a constant expression", "power too large to fold"],
}


def _message_parts(node) -> list[str]:
    """The literal text pieces of an exception's message (a str, an f-string or implicit concatenations)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _message_parts(node.left) + _message_parts(node.right)
    return []


def raised_messages() -> list[tuple[str, int, str]]:
    """(file, line, the message's longest literal piece) for every ``raise X("...")`` in the user-facing modules."""
    out = []
    for entry in USER_FACING:
        target = ROOT / entry
        for path in sorted(target.rglob("*.py") if target.is_dir() else [target]):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args):
                    continue
                pieces = [" ".join(p.split()) for p in _message_parts(node.exc.args[0])]
                pieces = [p.strip(" :;,.(") for p in pieces]
                best = max(pieces, key=len, default="")
                if len(best) >= 12 and best not in INTERNAL.get(str(path.relative_to(ROOT)), ()):
                    out.append((str(path.relative_to(ROOT)), node.lineno, best))
    return out


def test_every_error_message_is_in_troubleshooting():
    text = " ".join((DOCS / "troubleshooting.md").read_text().split())
    messages = raised_messages()
    assert len(messages) > 150  # the scan finds the package's errors (182 when this floor was set)
    assert {f.split("/")[0] for f, _, _ in messages} == {"verl_resrl", "reward_fns", "recipes"}
    missing = [f"{f}:{line}: {m!r}" for f, line, m in messages if m not in text]
    assert not missing, "errors without an entry in docs/troubleshooting.md:\n" + "\n".join(missing)


def test_docs_links_resolve():
    pages = [ROOT / "README.md", *DOCS.glob("*.md")]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


@pytest.mark.parametrize("page", ["configuration.md", "metrics.md", "recipes.md", "gpu.md", "troubleshooting.md",
                                  "results.md"])
def test_readme_links_every_docs_page(page):
    assert (DOCS / page).is_file()
    assert f"docs/{page}" in (ROOT / "README.md").read_text()
