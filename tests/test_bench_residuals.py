"""benchmarks/bench_residuals.py on tiny shapes, run as users run it: both paths agree, the JSON records what
was measured."""

import json
import math
import subprocess
import sys

from harness import REPO


def test_tiny_batch_cpu_clock(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_residuals.py"), "--groups", "3",
                    "--per-group", "4", "--length", "160", "--hidden", "96", "--repeats", "1", "--clock", "cpu",
                    "--out", str(out)], cwd=REPO, check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["clock"] == "cpu" and result["shape"]["groups"] == 3
    assert result["package_s"] > 0 and result["per_group_port_s"] > 0
    assert math.isfinite(result["package_peak_mb"]) and math.isfinite(result["per_group_port_peak_mb"])
    assert result["max_rel_residual_diff"] < 1e-3 and result["max_abs_advantage_diff"] < 1e-3
