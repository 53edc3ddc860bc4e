"""Smoke check of the benchmark: ``python -m benchmarks.bench --quick`` runs and writes its JSON.

Not a timing test: no figure is compared with a goal, only checked to be there.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _number(value) -> float:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), value
    assert math.isfinite(value), value
    return float(value)


@pytest.mark.slow
def test_bench_quick_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for heading in ("1. Pool scoring", "2. One round", "3. Peak memory"):
        assert heading in proc.stdout

    res = json.loads(out.read_text())
    assert res["meta"]["mode"] == "quick"

    scoring = res["scoring"]
    assert set(scoring["variants"]) == {
        "bare forward",
        "entropy",
        "margin",
        "least_confidence",
        "loss",
        "entropy + predictions",
    }
    for row in scoring["variants"].values():
        for key in ("seconds", "items_per_s", "ratio_to_bare"):
            assert _number(row[key]) > 0
    assert _number(scoring["min_ratio"]) > 0

    rnd = res["round"]
    assert set(rnd["phases"]) == {"select", "reset", "fit", "test"}
    for phase in rnd["phases"].values():
        assert _number(phase["seconds"]) > 0
        assert _number(phase["bare_seconds"]) >= 0
        _number(phase["overhead_share_of_round"])
    assert _number(rnd["total_seconds"]) > 0 and _number(rnd["bare_compute_seconds"]) > 0
    assert _number(rnd["overhead_share"]) < 1
    assert rnd["labelled"] > 0 and rnd["train_steps"] > 0

    memory = res["memory"]
    for approach in ("score_pool", "naive_full_matrix"):
        row = memory[approach]
        assert _number(row["peak_extra_mb_c10"]) >= 0  # can be ~0 where the peak cannot be reset
        assert _number(row["peak_extra_mb_c1000"]) > 0
        assert _number(row["ratio_c1000_to_c10"]) > 0
    assert _number(memory["full_matrix_mb_c1000"]) > 0
