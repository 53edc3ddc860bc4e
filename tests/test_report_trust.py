"""The report on run directories received from others: nothing in them is executed.

A run directory's ``.hydra/config.yaml`` is data, not code: the report instantiates only
the project's own data classes, evaluates only the project's own resolvers, reads only
files inside the run directory, and says in one line (exit status 2) when a directory
asks for anything else.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from src.report import main


def _run_dir(root: Path, cfg: dict) -> Path:
    """A minimal run directory with one completed round, as `python -m src.run` writes it."""
    run = root / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    record = {"round": 0, "n_labelled": 2, "n_selected": 2, "selection": "entropy", "selected_ids": [0, 1],
              "selected_scores": [0.9, 0.1], "epochs": 1, "best_epoch": 0, "test/acc_top1": 0.5}
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
