"""Smoke check of the selection benchmark: ``python -m benchmarks.bench_selection --quick`` runs
and writes its JSON. Not a timing test: figures are only checked to be there and finite."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench_selection import METHODS

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_selection_quick_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench_selection.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_selection", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "1. Choosing 20 of 1,000 items" in proc.stdout and "2. BALD pool pass" in proc.stdout

    res = json.loads(out.read_text())
    assert res["meta"]["mode"] == "quick"
    expected = {(m, c) for m, _, counts, _ in METHODS for c in counts}
    assert {(r["method"], r["classes"]) for r in res["selection"]} == expected
    for row in res["selection"]:
        assert math.isfinite(row["seconds"]) and row["seconds"] > 0
        assert row["peak_total_mb"] > 0
    ratio = res["bald_pool_pass"]["ratio_to_T_plain_passes"]
    assert math.isfinite(ratio) and ratio > 0
