"""selection.shuffle (thesis 4.1.1): the order of the labelled ids a real Trainer trains on, epoch by epoch.

``round`` (the default, the thesis' "shuffled after each accumulating selection step"):
one permutation per round, the same in every epoch; ``epoch``: a new one every epoch;
``none``: the labelled (selection) order.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from src.config.instantiate import build
from src.config.overrides import rewrite_renamed_keys
from src.data.datamodule import shuffle_mode
from src.errors import UserError
from src.experiment.build import build_model
from src.validate import validate

SEED = 3


class TrainedIds(pl.Callback):
    """The ids of every training batch, one list per epoch."""

    def __init__(self):
        self.epochs: list[list[int]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.epochs[-1] += batch[2].tolist()


@pytest.fixture(scope="module")
def fast_setup():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.conftest import CONF

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["debug=fast"])
    GlobalHydra.instance().clear()
    dm = build(cfg.dataset)
    dm.setup()
    return cfg, dm


def trained_orders(fast_setup, shuffle, steps_per_epoch=None, epochs=3) -> tuple[list[int], list[list[int]]]:
    cfg, dm = fast_setup
    labelled = dm.pool_ids[::-1][:24].tolist()  # not sorted, so "labelled order" is visible
    dm.set_labelled(labelled, shuffle=shuffle, seed=SEED, steps_per_epoch=steps_per_epoch)
    model, _ = build_model(cfg, dm)
    seen = TrainedIds()
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[seen],
    )
    trainer.fit(model, datamodule=dm)
    return labelled, seen.epochs


def test_round_keeps_one_permutation_for_every_epoch(fast_setup):
    labelled, epochs = trained_orders(fast_setup, "round")
    permutation = torch.randperm(len(labelled), generator=torch.Generator().manual_seed(SEED)).tolist()
    assert epochs == [[labelled[k] for k in permutation]] * 3


def test_epoch_reshuffles_every_epoch_from_the_same_first_order(fast_setup):
    labelled, epochs = trained_orders(fast_setup, "epoch")
    _, round_epochs = trained_orders(fast_setup, "round")
    assert all(sorted(e) == sorted(labelled) for e in epochs)
    assert epochs[0] == round_epochs[0]  # the same first draw
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


def test_none_trains_in_labelled_order(fast_setup):
    labelled, epochs = trained_orders(fast_setup, "none")
    assert epochs == [labelled] * 3


def test_round_with_fixed_steps_reads_on_through_its_permutation(fast_setup):
    # 2 steps of 16 = 32 items per epoch from 24 labelled: the permutation repeated, epochs consecutive
    labelled, epochs = trained_orders(fast_setup, "round", steps_per_epoch=2, epochs=2)
    permutation = torch.randperm(len(labelled), generator=torch.Generator().manual_seed(SEED)).tolist()
    stream = [labelled[k] for k in permutation] * 3
    assert epochs == [stream[:32], stream[32:64]]


def test_shuffle_values(compose_cfg, capsys):
    assert compose_cfg().selection.shuffle == "round"
    with pytest.raises(UserError, match="selection.shuffle='sometimes'; allowed: round"):
        validate(compose_cfg("debug=fast", "selection.shuffle=sometimes"))
    # the old spellings, on the command line: rewritten once, with a deprecation line
    assert rewrite_renamed_keys(["selection.shuffle=true,false", "selection.shuffle=round"]) == [
        "selection.shuffle=epoch,none",
        "selection.shuffle=round",
    ]
    err = capsys.readouterr().err
    assert err.count("deprecated") == 1 and "use selection.shuffle=epoch,none" in err
    validate(compose_cfg("debug=fast", "selection.shuffle=false"))  # a yaml's boolean still validates
    assert shuffle_mode(False) == "none" and shuffle_mode(True) == "epoch"
