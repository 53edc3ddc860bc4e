"""The per-epoch history of a round's fit (RoundRecord.history) and the train top-1 it holds.

With the learning rate at 0 and no dropout the weights never move, so every epoch's
training loss and top-1 equal what numpy computes from the fixed network's logits on the
same batches; the validation values equal numpy's over the validation split.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import scipy.special
import torch

from src.config.instantiate import build
from src.experiment.build import build_model
from src.loop.callbacks import EpochHistory
from src.records import RoundRecord


def numpy_loss_and_top1(model, dm, ids: list[int], batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and top-1 over ``ids`` in batches of ``batch_size``, the network in train mode
    (batch-norm on batch statistics, as during training)."""
    model.train()
    losses, hits = [], []
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            rows = torch.as_tensor(ids[start : start + batch_size])
            logits = model(dm.data.images[rows]).double().numpy()
            labels = dm.data.labels[rows].numpy()
            log_p = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
            losses += list(-log_p[np.arange(len(labels)), labels])
            hits += list(logits.argmax(1) == labels)
    return float(np.mean(losses)), float(np.mean(hits))


def test_history_holds_each_epochs_train_and_val_metrics(compose_cfg):
    cfg = compose_cfg("debug=fast", "optim.lr=0.0", "model.module.net.dropout=0.0")
    dm = build(cfg.dataset)
    dm.setup()
    model, _ = build_model(cfg, dm)
    labelled = dm.pool_ids[:24].tolist()
    dm.set_labelled(labelled, shuffle="none", seed=0)
    history = EpochHistory()
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[history],
    )
    trainer.fit(model, datamodule=dm)
    columns = history.columns()
    assert columns["epoch"] == [0, 1, 2]
    assert set(columns) >= {"train/loss", "train/acc_top1", "val/loss", "val/acc_top1"}
    # validation of the last epoch: the batch-norm running statistics as training left them (the
    # train-mode pass below would move them again)
    model.eval()
    with torch.no_grad():
        val_ids = torch.as_tensor(dm.data.val_ids)
        logits = model(dm.data.images[val_ids]).numpy()
    assert columns["val/acc_top1"][-1] == pytest.approx(
        float(np.mean(logits.argmax(1) == dm.data.labels[val_ids].numpy()))
    )
    loss, top1 = numpy_loss_and_top1(model, dm, labelled, dm.batch_size)
    # the batch mean of 16 and 8 items weighted by size is the mean over all 24
    assert columns["train/loss"] == pytest.approx([loss] * 3, rel=1e-5)
    assert columns["train/acc_top1"] == pytest.approx([top1] * 3)


def test_history_round_trips_through_the_record_json():
    history = {"epoch": [0, 1], "train/loss": [2.0, 1.5], "val/loss": [None, 1.9]}
    record = RoundRecord(
        round=0,
        n_labelled=2,
        n_selected=2,
        selection="base",
        selected_ids=[1, 2],
        selected_scores=[],
        epochs=2,
        best_epoch=1,
        metrics={"test/loss": 1.0},
        history=history,
    )
    obj = record.to_json()
    assert list(obj)[-6:-4] == ["test/loss", "history"]  # after the metrics, before the timings
    assert RoundRecord.from_json(obj) == record
    without = RoundRecord(**{**record.__dict__, "history": None}).to_json()
    assert "history" not in without


@pytest.mark.slow
def test_epoch_curves_best_epoch_and_class_counts_reach_wandb(tmp_path):
    """Through the CLI: rounds.jsonl's history equals Lightning's own per-epoch CSV, and the offline
    W&B run holds it per round against fit/epoch, with best_epoch, class counts and the data figure."""
    import collections
    import csv

    from src.tracking.offline import media, read_offline_run, read_table, wait_until_finished
    from tests.conftest import read_jsonl, run_cli

    run_cli("debug=fast", "logger=wandb", f"hydra.run.dir={tmp_path}")
    records = read_jsonl(tmp_path / "rounds.jsonl")
    for r in records:
        history = r["history"]
        assert history["epoch"] == list(range(r["epochs"]))
        with open(tmp_path / "rounds" / f"round_{r['round']:03d}" / "metrics.csv") as fh:
            rows = list(csv.DictReader(fh))
        for key in ("train/loss", "train/acc_top1", "val/loss", "val/acc_top1"):
            logged = [float(row[key]) for row in rows if row[key]]
            assert history[key] == pytest.approx(logged[: len(history["epoch"])]), key

    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    assert wait_until_finished(run_dir)
    wb = read_offline_run(run_dir)
    assert wb.step_metrics.get("fit/*") == "fit/epoch"
    for r in records:
        key = f"fit/round_{r['round']:03d}/val/loss"
        rows = [h for h in wb.history if key in h]
        assert [h["fit/epoch"] for h in rows] == r["history"]["epoch"]
        assert [h[key] for h in rows] == pytest.approx(r["history"]["val/loss"])
        assert all(h["fit/round"] == r["round"] for h in rows)
    rounds = [h for h in wb.history if "al/n_labelled" in h]
    assert [h["al/best_epoch"] for h in rounds] == [r["best_epoch"] for r in records]
    for h in rounds:
        _, selection = read_table(run_dir, media(h, "al/selection"))
        _, counts = read_table(run_dir, media(h, "al/selected_classes"))
        assert {c: n for _, _, c, n in counts} == collections.Counter(row[5] for row in selection)
    assert sum("data/class_distribution" in k for h in wb.history for k in h) >= 1


def test_the_mismatch_view_reads_a_records_history():
    """Thesis 4.2.3 from rounds.jsonl alone: epoch 3 has no validation and is left out."""
    from src.analysis.mismatch import history_epoch_log, round_mismatch

    log = history_epoch_log(
        {
            "epoch": [0, 1, 2, 3],
            "train/loss": [2.0, 1.0, 0.5, 0.4],
            "val/loss": [0.9, 0.8, 0.85, None],
            "val/acc_top1": [0.3, 0.4, 0.5, None],
        }
    )
    m = round_mismatch(log, 0, 20)
    # by hand: lowest loss 0.8 at epoch 1, highest accuracy 0.5 at epoch 2, 0.1 given up
    assert (m.epochs, m.best_epoch_by_loss, m.best_epoch_by_accuracy, m.epoch_gap) == (3, 1, 2, 1)
    assert m.accuracy_given_up == pytest.approx(0.1) and m.accuracy_key == "val/acc_top1"
    assert history_epoch_log(None) is None and history_epoch_log({"epoch": [0], "train/loss": [1.0]}) is None


def test_train_metrics_of_a_round_are_the_tested_epochs():
    """Thesis figure 4.6 (training accuracy per round): the history's value at best_epoch."""
    history = {"epoch": [0, 1, 2], "train/acc_top1": [0.2, 0.6, 0.9], "val/loss": [1.0, 0.7, 0.8]}
    record = RoundRecord(
        round=0,
        n_labelled=20,
        n_selected=20,
        selection="base",
        selected_ids=[],
        selected_scores=[],
        epochs=3,
        best_epoch=1,
        metrics={},
        history=history,
    )
    assert record.value("train/acc_top1") == 0.6 and record.value("train/loss") is None
    assert RoundRecord(**{**record.__dict__, "best_epoch": 2}).value("train/acc_top1") == 0.9
    assert RoundRecord(**{**record.__dict__, "history": None}).value("train/acc_top1") is None
