"""Smoke check of the fast-paths benchmark: it runs (small CNN, no compile) and writes its JSON.

Not a timing test: the figures are only checked to be there and finite, and the ratio of
the baseline against itself to be exactly 1.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_fastpaths_quick_runs_and_writes_json(tmp_path):
    out = tmp_path / "fast.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_fastpaths",
            "--quick",
            "--models",
            "small_cnn",
            "--no-compile",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())["models"]["small_cnn"]
    assert set(res["variants"]) == {"fp32", "bf16-mixed", "channels_last", "float64"}
    assert res["variants"]["fp32"]["train_ratio"] == 1.0 and res["variants"]["fp32"]["infer_ratio"] == 1.0
    for row in res["variants"].values():
        assert all(
            math.isfinite(row[k]) and row[k] > 0 for k in ("train_step_s", "train_ratio", "infer_ratio")
        )
    assert set(res["eval_batches"]) == {"32", "256", "1024"}
    assert "| bf16-mixed |" in proc.stdout
