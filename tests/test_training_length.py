"""Training length (thesis 4.1.2) as ordinary config keys: ``fit.epochs`` and ``fit.steps_per_epoch``.

The regression: ``+training=epochs +fixed_epochs=3`` was read through ``oc.select`` with a
fallback, so a value that did not reach it trained silently for the fallback's 10 epochs.
The epochs and steps that actually ran are read from the Trainer's own per-epoch log.
"""

from __future__ import annotations

import csv
import math

import pytest

from src.config.overrides import rewrite_renamed_keys
from src.errors import UserError
from src.selection.schedule import steps_per_epoch
from src.validate import validate
from tests.conftest import read_jsonl, run_cli


def test_half_pool_is_half_the_selection_pool_in_batches():
    assert steps_per_epoch("half_pool", 6000, 20) == 150  # the thesis' scale: 6000 / 2 / 20
    assert steps_per_epoch("half_pool", 600, 20) == 15  # scale=cpu
    assert steps_per_epoch("half_pool", 120, 16) == 4  # 60 / 16 = 3.75, rounded up
    assert steps_per_epoch(7, 6000, 20) == 7 and steps_per_epoch(None, 6000, 20) is None


def test_training_keys_are_always_present(compose_cfg):
    cfg = compose_cfg()
    assert cfg.fit.epochs is None and cfg.fit.steps_per_epoch is None
    fixed = compose_cfg("training=fixed_steps", "scale=cpu")
    assert fixed.fit.epochs == 10 and fixed.fit.steps_per_epoch == "half_pool"
    assert fixed.callbacks.early_stopping is None and fixed.callbacks.restore_best is None
    assert compose_cfg("training=epochs", "fit.epochs=3").fit.epochs == 3  # no '+' needed


def test_old_spellings_still_work(compose_cfg, capsys):
    argv = rewrite_renamed_keys(["+training=epochs", "+fixed_epochs=3", "fixed_steps_per_epoch=5"])
    assert argv == ["training=epochs", "fit.epochs=3", "fit.steps_per_epoch=5"]
    err = capsys.readouterr().err
    assert "fixed_epochs is deprecated" in err and "use fit.epochs" in err and "use training=" in err
    cfg = compose_cfg(*argv)
    assert cfg.fit.epochs == 3 and cfg.fit.steps_per_epoch == 5


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("fit.epochs", 0, "fit.epochs=0 must be a positive integer or null"),
        ("fit.steps_per_epoch", "half", "fit.steps_per_epoch='half'; allowed: a positive integer, half_pool"),
    ],
)
def test_bad_training_length_is_one_line(compose_cfg, key, value, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        validate(compose_cfg("debug=fast", f"{key}={value}"))


@pytest.mark.slow
def test_the_epochs_and_steps_actually_trained(tmp_path):
    """fit.epochs above trainer.max_epochs (debug=fast: 3) is what trains; half_pool steps per epoch."""
    run_cli("debug=fast", "logger=csv", "training=fixed_steps", "fit.epochs=4", f"hydra.run.dir={tmp_path}")
    assert [r["epochs"] for r in read_jsonl(tmp_path / "rounds.jsonl")] == [4, 4]
    steps = math.ceil(120 / 2 / 16)  # debug=fast: pool 120, batch 16
    for round_dir in ("round_000", "round_001"):
        with open(tmp_path / "rounds" / round_dir / "metrics.csv") as fh:
            train_rows = [row for row in csv.DictReader(fh) if row["train/loss"]]
        assert [int(row["epoch"]) for row in train_rows] == [0, 1, 2, 3]
        # Lightning logs an epoch's end at its last (0-based) global step
        assert [int(row["step"]) for row in train_rows] == [steps * (e + 1) - 1 for e in range(4)]
