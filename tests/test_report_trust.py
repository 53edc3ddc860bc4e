"""The report on run directories received from others: nothing in them is executed.

A run directory's ``.hydra/config.yaml`` is data, not code: the report instantiates only
the project's own data classes, evaluates only the project's own resolvers, reads only
files inside the run directory, and says in one line (exit status 2) when a directory
asks for anything else.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from PIL import Image

from src.report import main


def _run_dir(root: Path, cfg: dict) -> Path:
    """A minimal run directory with one completed round, as `python -m src.run` writes it."""
    run = root / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    record = {
        "round": 0,
        "n_labelled": 2,
        "n_selected": 2,
        "selection": "entropy",
        "selected_ids": [0, 1],
        "selected_scores": [0.9, 0.1],
        "epochs": 1,
        "best_epoch": 0,
        "test/acc_top1": 0.5,
    }
    (run / "rounds.jsonl").write_text(json.dumps(record) + "\n")
    return run


def test_a_foreign_target_in_the_dataset_config_is_never_instantiated(tmp_path, compose_cfg, capsys):
    victim = tmp_path / "written_by_the_report.txt"
    source = tmp_path / "source.txt"
    source.write_text("anything")
    cfg = OmegaConf.to_container(compose_cfg("debug=fast"), resolve=True)
    cfg["dataset"] = {"_target_": "shutil.copyfile", "_args_": [str(source), str(victim)]}
    run = _run_dir(tmp_path / "received", cfg)

    rc = main([str(run), "--out", str(tmp_path / "report")])
    assert not victim.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "shutil.copyfile" in err[0] and "config.yaml" in err[0] and "--no-grids" in err[0]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_nothing_to_report_is_one_line_and_status_2_missing_or_empty(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "no such run or multirun directory" in _one_error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    line = _one_error_line(capsys)
    assert "no runs to report" in line and str(tmp_path / "empty") in line
    assert not (tmp_path / "empty" / "report").exists()


@pytest.mark.parametrize(
    "value, resolver",
    [
        ("${oc.env:AL_SELECT_TEST_SECRET}", "oc.env"),
        ("x-${oc.select:nope,${oc.env:AL_SELECT_TEST_SECRET}}", "oc.env"),
        ("${run_dir:/,true}", "run_dir"),
    ],
)
def test_a_resolver_that_reads_this_machine_is_refused(
    tmp_path, compose_cfg, capsys, monkeypatch, value, resolver
):
    monkeypatch.setenv("AL_SELECT_TEST_SECRET", "s3cr3t-value")
    cfg = OmegaConf.to_container(compose_cfg("debug=fast"), resolve=True)
    cfg["dataset"]["name"] = value  # would become a group label, on the page and on W&B
    run = _run_dir(tmp_path, cfg)
    assert main([str(run), "--out", str(tmp_path / "report"), "--no-grids"]) == 2
    line = _one_error_line(capsys)
    assert f"resolver '{resolver}'" in line and "dataset.name" in line and "s3cr3t" not in line
    assert not (tmp_path / "report").exists()


def test_files_that_lead_out_of_the_run_directory_are_refused(tmp_path, compose_cfg, capsys):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "rounds.jsonl").write_text(
        json.dumps({"round": 0, "n_labelled": 1, "test/acc_top1": 0.1}) + "\n"
    )
    run = _run_dir(tmp_path / "sweep", OmegaConf.to_container(compose_cfg("debug=fast"), resolve=True))
    (run / "rounds.jsonl").unlink()
    (run / "rounds.jsonl").symlink_to(outside / "rounds.jsonl")
    assert main([str(run), "--no-grids", "--out", str(tmp_path / "r1")]) == 2
    assert "leads outside the run directory" in _one_error_line(capsys)
    # a whole run directory linked into a sweep from elsewhere is not followed: nothing of it is read
    (tmp_path / "sweep2").mkdir()
    (tmp_path / "sweep2" / "job").symlink_to(outside, target_is_directory=True)
    assert main([str(tmp_path / "sweep2"), "--no-grids", "--out", str(tmp_path / "r2")]) == 2
    assert "no runs to report" in _one_error_line(capsys)


def test_a_dataset_name_that_is_a_path_is_refused(tmp_path, compose_cfg, capsys):
    cfg = OmegaConf.to_container(compose_cfg("debug=fast"), resolve=True)
    cfg["dataset"]["name"] = "../../somewhere"  # becomes a cache folder name of file datasets
    run = _run_dir(tmp_path, cfg)
    assert main([str(run), "--out", str(tmp_path / "report")]) == 2
    assert "dataset.name='../../somewhere' is not a plain name" in _one_error_line(capsys)
    # without grids nothing is rebuilt, so the run is reported
    assert main([str(run), "--out", str(tmp_path / "report"), "--no-grids"]) == 0


def test_the_image_cache_goes_where_this_machine_says_not_where_the_config_says(tmp_path, compose_cfg):
    """A folder dataset's decoded-image cache: --data-cache, never the received config's cache_dir."""
    images = tmp_path / "images"
    for c, cls in enumerate(("cat", "dog")):
        (images / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((12, 12, 3), 10 * i + 120 * c, dtype=np.uint8)).save(
                images / cls / f"{i}.png"
            )
    named_by_config, mine = tmp_path / "config_cache", tmp_path / "my_cache"
    cfg = compose_cfg(
        "debug=fast",
        "dataset=folder",
        f"dataset.root={images}",
        f"dataset.cache_dir={named_by_config}",
        "dataset.sizes.pool=null",
        "dataset.sizes.val=null",
        "dataset.sizes.test=null",
        "dataset.image_size=8",
    )
    run = _run_dir(tmp_path / "received", OmegaConf.to_container(cfg, resolve=True))
    assert main([str(run), "--out", str(tmp_path / "report"), "--data-cache", str(mine)]) == 0
    assert not named_by_config.exists()
    assert any(mine.glob("*/images.u8"))
    assert (tmp_path / "report" / "figures" / "audit_00.png").is_file()
