"""Smoke check of the detection benchmark: it runs and writes every figure (not a timing test)."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import bench_detection


@pytest.mark.slow
def test_bench_detection_quick_writes_its_figures(tmp_path, capsys):
    out = tmp_path / "bench_detection.json"
    bench_detection.main(["--quick", "--size", "96x54", "--out", str(out)])
    assert "goal >= 0.9" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["meta"]["mode"] == "quick" and res["meta"]["input"] == [96, 54]
    assert set(res["variants"]) == {
        "bare forward",
        "network only",
        "entropy",
        "margin",
        "least_confidence",
        "loss",
        "entropy + predictions",
    }
    for row in res["variants"].values():
        for key in ("seconds", "items_per_s", "ratio_to_bare", "cpu_seconds", "cpu_ratio_to_bare"):
            assert math.isfinite(row[key]) and row[key] > 0
    assert res["variants"]["bare forward"]["ratio_to_bare"] == 1.0


@pytest.mark.slow
def test_bench_detection_curve_quick_runs_the_cli_and_writes_the_curve(tmp_path, capsys):
    from benchmarks import bench_detection_curve

    out = tmp_path / "curve.json"
    res = bench_detection_curve.main(["--quick", "--scorers", "random", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    run = res["runs"]["random"]
    assert run["n_labelled"] == [4, 8] and len(run["test_map_50"]) == 2
    assert all(0.0 <= m <= 1.0 for m in run["test_map_50"])
    assert res["pretrain"]["cpu_s"] > 0 and res["runs"]["random"]["wall_s"] > 0
    assert res["first_default_run"]["wall_s"] == pytest.approx(
        res["pretrain"]["wall_s"] + run["wall_s"], abs=0.2
    )
    assert 0.0 <= res["start_map_50"]["untrained"] <= 1.0 and "goal >= 0.3" in capsys.readouterr().out
