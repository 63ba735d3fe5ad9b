"""benchmarks/throughput.py --quick runs the real code paths and prints the promised JSON object
(speeds are measured by the benchmark itself, never asserted here)."""

import json
import subprocess
import sys

from workflow_helpers import REPO


def test_throughput_quick_prints_one_json_object():
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--quick", "--threads", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    for key in ("train", "act_train", "eval"):
        assert out[f"{key}_coord_steps_per_s"] > 0
        assert out[f"reference_{key}_coord_steps_per_s"] > 0
        ratio = out[f"{key}_coord_steps_per_s"] / out[f"reference_{key}_coord_steps_per_s"]
        assert abs(out[f"{key}_speedup"] - ratio) < 1e-9
    assert out["threads"] == 1
