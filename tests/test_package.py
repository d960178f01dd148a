import importlib.metadata
import json
import logging
import subprocess
import sys

import verl_resrl.plugin as plugin

CORE = ["verl_resrl", *(f"verl_resrl.core.{m}" for m in ("config", "groups", "subspace", "residual", "weights",
        "advantage", "streaming", "partition", "capture"))]


def _imported_after(code: str, env=None) -> dict:
    probe = (
        f"{code}\nimport sys, json, torch\n"
        "print(json.dumps({'modules': sorted(m for m in sys.modules if m == 'verl' or m.startswith('verl.')),"
        " 'cuda': torch.cuda.is_initialized()}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_package_imports_no_verl_and_no_cuda():
    seen = _imported_after("import " + ", ".join(CORE))
    assert seen == {"modules": [], "cuda": False}


def test_public_api():
    import verl_resrl

    for name in ("ResRLConfig", "compute_residuals", "negative_token_weights", "resrl_advantages"):
        assert callable(getattr(verl_resrl, name))


def test_entry_point_is_registered_for_verl():
    points = [e for e in importlib.metadata.entry_points(group="verl.plugins") if e.name == "resrl"]
    assert [e.value for e in points] == ["verl_resrl.plugin"]


def test_plugin_import_is_cheap_without_cpu_platform():
    import os

    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    seen = _imported_after("import verl_resrl.plugin as p; assert p.FAILED == []", env=env)
    assert not any(m.startswith("verl.trainer") or m.startswith("verl.workers") for m in seen["modules"])
    assert seen["cuda"] is False


def test_plugin_reports_a_failing_component_at_warning(monkeypatch, caplog, tmp_path):
    bad = tmp_path / "resrl_broken_component.py"
    bad.write_text("def register():\n    raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugin, "_components", lambda: ["resrl_broken_component"])
    with caplog.at_level(logging.WARNING, logger="verl_resrl"):
        assert plugin.load() == ["resrl_broken_component"]
    assert "registering resrl_broken_component failed" in caplog.text and "boom" in caplog.text
