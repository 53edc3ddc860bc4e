"""How a fit ended (``stopped_by``) from real Lightning Trainers, and the report's fit-health view."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from torch.utils.data import DataLoader, TensorDataset

from src.analysis.report import fit_health
from src.loop.trainers import how_fit_ended
from src.records import RoundRecord


class ConstantValLoss(pl.LightningModule):
    """Trains a linear layer; its validation loss never improves after the first epoch."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(2, 1)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, _):
        self.log("val/loss", torch.tensor(1.0))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader():
    torch.manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(8, 2), torch.randn(8, 1)), batch_size=4)


def fit(max_epochs: int, early_stopping: bool, **trainer_kwargs) -> pl.Trainer:
    callbacks = [EarlyStopping(monitor="val/loss", patience=1)] if early_stopping else []
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(ConstantValLoss(), train_dataloaders=loader(), val_dataloaders=loader())
    return trainer


@pytest.mark.parametrize(
    "max_epochs,early_stopping,kwargs,ended,epochs",
    [
        # best at epoch 0, no improvement at epoch 1: patience 1 stops after 2 of 10 epochs
        (10, True, {}, "early_stopping", 2),
        # early stopping watches but patience is not used up within 1 epoch
        (1, True, {}, "epoch_cap", 1),
        # no early stopping: the length was set in advance
        (3, False, {}, "fixed_length", 3),
        # early stopping may not stop before min_epochs = max_epochs (fit.epochs): fixed in advance too
        (3, True, {"min_epochs": 3}, "fixed_length", 3),
        # 2 batches an epoch, 3 steps: the step cap ends the second epoch (Lightning counts it as run)
        (10, True, {"max_steps": 3}, "step_cap", 2),
    ],
)
def test_how_a_fit_ended(max_epochs, early_stopping, kwargs, ended, epochs):
    trainer = fit(max_epochs, early_stopping, **kwargs)
    assert how_fit_ended(trainer) == ended
    assert trainer.current_epoch == epochs


def record(stopped_by, epochs, best_epoch):
    return RoundRecord(
        round=0,
        n_labelled=1,
        n_selected=1,
        selection="base",
        selected_ids=[0],
        selected_scores=[],
        epochs=epochs,
        best_epoch=best_epoch,
        stopped_by=stopped_by,
    )


def test_fit_health_shares_by_hand():
    records = [
        record("early_stopping", 5, 1),
        record("epoch_cap", 20, 19),
        record("epoch_cap", 4, 0),
        record(None, 3, 0),
        record("fixed_length", 1, 0),
    ]
    health = fit_health(records)
    assert health["fits"] == 5
    assert health["early_stopping"] == 0.2 and health["epoch_cap"] == 0.4 and health["not_recorded"] == 0.2
    assert health["fixed_length"] == 0.2 and health["step_cap"] == 0.0
    # best epoch 0 of a fit that ran longer: the 4- and 3-epoch fits, not the 1-epoch one
    assert health["restored_epoch_0"] == 0.4
    assert health["median_epochs"] == 4.0
    assert math.isnan(fit_health([])["median_epochs"]) and fit_health([])["fits"] == 0


def test_stopped_by_round_trips_and_is_absent_when_not_recorded():
    assert record("epoch_cap", 3, 1).to_json()["stopped_by"] == "epoch_cap"
    assert list(record("epoch_cap", 3, 1).to_json())[8] == "stopped_by"  # right after best_epoch
    assert "stopped_by" not in record(None, 3, 1).to_json()
    assert RoundRecord.from_json(record("step_cap", 3, 1).to_json()).stopped_by == "step_cap"


@pytest.mark.slow
def test_the_report_warns_when_a_group_does_not_converge(tmp_path):
    """Two real runs with early stopping at patience 0: with a cap of 30 epochs it stops every
    fit early; with a cap of 2 every fit ends at the cap (it cannot stop before the second
    epoch's validation). Only the second group is named in the warning."""
    from tests.conftest import run_cli, run_module

    sweep = tmp_path / "sweep"
    run_cli(
        "--multirun",
        "debug=fast",
        "seed=1",
        "trainer.max_epochs=2,30",
        "callbacks.early_stopping.patience=0",
        f"hydra.sweep.dir={sweep}",
    )
    proc = run_module("src.report", str(sweep), "--no-grids", "--group-by", "trainer.max_epochs")
    warning = next(line for line in proc.stderr.splitlines() if "did not converge" in line)
    assert "max_epochs=2 (100% ended at the epoch cap)" in warning
    assert "max_epochs=30" not in warning
    rows = (sweep / "report" / "fit_health.csv").read_text().splitlines()
    assert rows[0].startswith("group,fits,early_stopping,epoch_cap")
