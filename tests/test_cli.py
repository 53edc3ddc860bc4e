"""End to end through the real CLI: `python -m src.run` in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

from src.tracking.offline import read_offline_run, wait_until_finished
from tests.conftest import REPO, cli_env, read_jsonl, run_cli, without_timings

pytestmark = pytest.mark.slow
TINY = ["debug=fast"]


def test_single_run_writes_records_summary_and_an_offline_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        *TINY, "logger=wandb", "selection.rounds=3", "scorer=margin", "seed=5", f"hydra.run.dir={run_dir}"
    )
    records = read_jsonl(run_dir / "rounds.jsonl")
    assert [r["n_labelled"] for r in records] == [20, 40, 60]
    assert "per-round results" in proc.stdout + proc.stderr and "top-1" in proc.stdout + proc.stderr
    assert (run_dir / ".hydra" / "config.yaml").exists()
    saved = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert saved["scorer"]["name"] == "margin" and saved["seed"] == 5
    summary = json.loads((run_dir / "summary.json").read_text())

    # read the W&B run back from its own files with the SDK's record format
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    assert wait_until_finished(offline[0])  # the SDK's service writes the log's tail after exit
    wb = read_offline_run(offline[0])
    assert wb.name == "margin-p0-b20-base0-s5" and wb.job_type == "margin" and wb.group == "al"
    assert wb.config["selection"]["budget"] == 20 and wb.config["scorer"]["name"] == "margin"
    assert wb.step_metrics.get("test/*") == "al/n_labelled"
    rows = [h for h in wb.history if "al/n_labelled" in h]
    assert [h["al/n_labelled"] for h in rows] == [20, 40, 60]
    assert [h["test/acc_top1"] for h in rows] == pytest.approx([r["test/acc_top1"] for r in records])
    assert [h["al/epochs"] for h in rows] == [r["epochs"] for r in records]
    # AUC by hand: trapezoid over x = 20, 40, 60 divided by the range 40
    y = [r["test/acc_top1"] for r in records]
    auc = (20 * (y[0] + y[1]) / 2 + 20 * (y[1] + y[2]) / 2) / 40
    assert wb.summary["auc/test/acc_top1"] == pytest.approx(auc)
    assert summary["auc/test/acc_top1"] == pytest.approx(auc)


def test_csv_logger_writes_the_curve_and_epoch_logs(tmp_path):
    run_dir = tmp_path / "run"
    run_cli(*TINY, "logger=csv", f"hydra.run.dir={run_dir}")
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert "al/n_labelled" in header and "test/acc_top1" in header and len(lines) == 3
    epochs = (run_dir / "rounds" / "round_001" / "metrics.csv").read_text().splitlines()
    assert "val/loss" in epochs[0] and len(epochs) > 1
    assert not (run_dir / "wandb").exists()


def test_multirun_writes_one_complete_run_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("--multirun", *TINY, "logger=wandb", "selection.pivot=0,1", f"hydra.sweep.dir={sweep}")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "rounds.jsonl").exists())
    assert [p.name for p in jobs] == ["0_entropy-p0-b20-base0-s1", "1_entropy-p1-b20-base0-s1"]
    selections = []
    for job in jobs:
        records = read_jsonl(job / "rounds.jsonl")
        assert len(records) == 2 and (job / "summary.json").exists()
        selections.append(records[0]["selected_ids"])
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1  # each job its own W&B run
        assert wait_until_finished(runs[0])
        wb = read_offline_run(runs[0])
        assert wb.group.startswith("al/") and len([h for h in wb.history if "al/n_labelled" in h]) == 2
    assert selections[0] != selections[1]  # hardest vs easiest


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    args = [
        *TINY,
        "selection.rounds=4",
        "selection.budget=15",
        "trainer.max_epochs=6",
        "callbacks=none",
        "dataset.sizes.pool=300",
        f"paths.output_dir={tmp_path / 'outputs'}",
    ]
    full_dir = tmp_path / "full"
    run_cli(*args, f"hydra.run.dir={full_dir}")

    # the user's command, with the default timestamped run directory, killed after its first round
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.run", *args],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parent = tmp_path / "outputs" / "al" / "entropy-p0-b15-base0-s1"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        found = list(parent.glob("*/rounds.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    (killed_dir,) = [p.parent for p in parent.glob("*/rounds.jsonl")]
    done = len(read_jsonl(killed_dir / "rounds.jsonl"))
    assert 1 <= done < 4, f"the run was not interrupted mid-way ({done} rounds done)"

    # pointing a new run at that directory without resume=true is refused: nothing is overwritten
    refused = run_cli(*args, f"hydra.run.dir={killed_dir}", check=False)
    assert refused.returncode == 2 and "pass resume=true" in refused.stderr
    # the same command plus resume=true continues the unfinished run in its own directory
    time.sleep(1.1)  # a new run would get a new timestamped directory
    run_cli(*args, "resume=true")
    assert [p.parent for p in parent.glob("*/rounds.jsonl")] == [killed_dir]
    resumed = read_jsonl(killed_dir / "rounds.jsonl")
    assert without_timings(resumed) == without_timings(read_jsonl(full_dir / "rounds.jsonl"))
    assert (killed_dir / "summary.json").exists()
