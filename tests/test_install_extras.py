"""The `gpu` and `flash-attn` extras install the GPU stack veRL 0.9.1 pins, through veRL's own extras."""

import ast
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
GPU_EXTRAS = ("gpu", "flash-attn")
NETWORK_ERRORS = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                  "Network is unreachable", "Connection refused", "Could not fetch URL", "ConnectTimeout",
                  "ReadTimeoutError", "ProxyError",
                  "No matching distribution found for verl")  # verl 0.9.1 is on PyPI: an index without it is not PyPI


def setup_keyword(name):
    """The literal value of one keyword argument of ``setup()`` in setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    return ast.literal_eval(next(k.value for k in call.keywords if k.arg == name))


def verl_extra_requirements(extra, seen=None):
    """Every requirement an install of ``verl[extra]`` adds, following veRL's extras of itself."""
    seen = set() if seen is None else seen
    if extra in seen:
        return []
    seen.add(extra)
    found = []
    for line in metadata.distribution("verl").requires or []:
        req = Requirement(line)
        if req.marker is None or not req.marker.evaluate({"extra": extra}):
            continue
        if req.name == "verl":
            for inner in req.extras:
                found += verl_extra_requirements(inner, seen)
        else:
            found.append(req)
    return found


def gpu_closure(extra):
    reqs = []
    for line in setup_keyword("extras_require")[extra]:
        req = Requirement(line)
        for verl_extra in req.extras:
            reqs += verl_extra_requirements(verl_extra)
    return {r.name: r for r in reqs}


def pinned_version(req):
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req} is not pinned"
    return spec.version


@pytest.mark.parametrize("extra", GPU_EXTRAS)
def test_gpu_extras_are_verl_extras_of_the_installed_verl(extra):
    installed = metadata.version("verl")
    provided = set(metadata.distribution("verl").metadata.get_all("Provides-Extra"))
    for line in setup_keyword("extras_require")[extra]:
        req = Requirement(line)
        assert req.name == "verl", f"{extra}: {line} should come through one of veRL's extras"
        assert pinned_version(req) == installed, f"{extra}: {line} pins another veRL than the installed {installed}"
        assert req.extras and req.extras <= provided, f"{extra}: {sorted(req.extras - provided)} not in veRL's extras"
    base = next(Requirement(r) for r in setup_keyword("install_requires") if Requirement(r).name == "verl")
    assert base.specifier.contains(installed)


def test_gpu_extra_pins_torch_transformers_vllm_and_builds_nothing():
    stack = gpu_closure("gpu")
    for name in ("torch", "transformers", "vllm"):
        assert name in stack, f"the gpu extra does not install {name}"
        pinned_version(stack[name])
    # flash-attn ships only a source package whose build imports torch: it has its own extra
    assert "flash-attn" not in stack


def test_flash_attn_extra_pins_flash_attn():
    pinned_version(gpu_closure("flash-attn")["flash-attn"])


def _pip_dry_run(args, timeout):
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", *args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.skip(f"the package registry did not answer `pip install --dry-run` within {timeout} s")
    if proc.returncode != 0 and any(marker in proc.stderr for marker in NETWORK_ERRORS):
        pytest.skip("the package registry is unreachable: " + proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.network
def test_gpu_stack_resolves_to_wheels(tmp_path):
    """The gpu extra's veRL and the pins of its extra exist on the index as wheels for this platform."""
    report = tmp_path / "report.json"
    pins = [f"{r.name}{r.specifier}" for r in gpu_closure("gpu").values()
            if any(spec.operator == "==" for spec in r.specifier)]
    _pip_dry_run(["--no-deps", "--report", str(report), *setup_keyword("extras_require")["gpu"], *pins], timeout=150)
    installs = json.loads(report.read_text())["install"]
    resolved = {i["metadata"]["name"].lower(): i["download_info"]["url"] for i in installs}
    for name in ("verl", "torch", "transformers", "vllm"):
        assert resolved[name].endswith(".whl"), f"{name} resolves to a source package: {resolved[name]}"


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("VERL_RESRL_RESOLVE_GPU") != "1",
                    reason="full resolution of .[gpu] takes about 7 minutes: set VERL_RESRL_RESOLVE_GPU=1")
def test_package_with_gpu_extra_resolves(tmp_path):
    """`pip install .[gpu]` resolves (every dependency, nothing installed)."""
    report = tmp_path / "report.json"
    _pip_dry_run(["--report", str(report), ".[gpu]"], timeout=1200)
    installs = json.loads(report.read_text())["install"]
    resolved = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in installs}
    stack = gpu_closure("gpu")
    for name in ("torch", "transformers", "vllm"):
        assert resolved[name] == pinned_version(stack[name])
