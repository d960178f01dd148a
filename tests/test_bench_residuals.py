"""benchmarks/bench_residuals.py on tiny shapes: both paths agree, the JSON records what was measured."""

import json
import math

from harness import REPO, load_script

bench = load_script(REPO / "benchmarks" / "bench_residuals.py", "bench_residuals_under_test")


def test_tiny_batch_both_clocks(tmp_path):
    for clock in ("wall", "cpu"):
        out = tmp_path / f"{clock}.json"
        bench.main(["--groups", "3", "--per-group", "4", "--length", "160", "--hidden", "96", "--repeats", "1",
                    "--clock", clock, "--out", str(out)])
        result = json.loads(out.read_text())
        assert result["clock"] == clock and result["shape"]["groups"] == 3
        assert result["package_s"] > 0 and result["per_group_port_s"] > 0
        assert math.isfinite(result["package_peak_mb"]) and math.isfinite(result["per_group_port_peak_mb"])
        assert result["max_rel_residual_diff"] < 1e-3 and result["max_abs_advantage_diff"] < 1e-3
