import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_check import CHECKS, cuda_linalg_dtype_rules  # noqa: E402

CRITERION_KEYS = {"name", "value", "goal", "ok"}


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert out.exists(), proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc


def test_smoke_report_structure(smoke_report):
    report, _ = smoke_report
    assert report["mode"] == "smoke"
    assert report["verl_modules_imported"] == []
    assert list(report["checks"]) == list(CHECKS)
    for name, entry in report["checks"].items():
        assert entry["status"] in {"PASS", "FAIL", "ERROR", "SKIPPED"}, name
        assert {"status", "error", "criteria", "metrics", "seconds"} <= set(entry), name
        for criterion in entry["criteria"]:
            assert set(criterion) == CRITERION_KEYS, (name, criterion)


def test_smoke_checks_pass(smoke_report):
    report, proc = smoke_report
    failed = {name: entry["error"] or [c["name"] for c in entry["criteria"] if c["ok"] is False]
              for name, entry in report["checks"].items() if entry["status"] != "PASS"}
    assert not failed, proc.stdout[-4000:]
    assert proc.returncode == 0
    # time and memory goals are reported but only judged on a GPU
    judged = {c["name"]: c["ok"] for entry in report["checks"].values() for c in entry["criteria"]}
    assert judged["time, median (ms)"] is None and judged["extra time (%)"] is None
    assert all(ok is True for name, ok in judged.items() if "time" not in name and "memory" not in name)
    # about 30 s on 2 idle cores; the bound leaves room for a machine shared with other jobs
    assert report["elapsed_s"] < 120


def test_budget_skips_the_remaining_checks(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--budget-s", "0", "--out", str(out)],
                   cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    checks = json.loads(out.read_text())["checks"]
    assert {entry["status"] for entry in checks.values()} == {"SKIPPED"}
    assert "--budget-s 0" in checks["capture"]["error"]


def test_linalg_refuses_half_precision_as_on_cuda():
    a = torch.randn(6, 4)
    originals = (torch.linalg.qr, torch.linalg.svd, torch.linalg.eigh)
    with cuda_linalg_dtype_rules():
        with pytest.raises(RuntimeError, match="bfloat16 input, which CUDA does not implement"):
            torch.linalg.qr(a.bfloat16())
        with pytest.raises(RuntimeError, match="float16"):
            torch.linalg.svd(a.half())
        torch.testing.assert_close(torch.linalg.qr(a).Q, torch.linalg.qr(a.double()).Q.float())
    assert (torch.linalg.qr, torch.linalg.svd, torch.linalg.eigh) == originals
