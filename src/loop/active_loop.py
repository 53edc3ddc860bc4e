"""The outer active-learning loop: select, reset, fit, test, persist; round after round.

Thin by design. Each round gets a fresh Trainer and fresh callbacks (a second
``fit`` on one Trainer trains nothing and EarlyStopping keeps its state), the model
is reset in place to the in-memory baseline, and the selection for the next round
happens in ``SelectionCallback`` at the end of the round's test. After every round
the record and the state are committed (``records.RunStore``), so a killed run
resumes after its last completed round with identical results.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
import torch

from src.analysis.curves import normalised_auc
from src.data.datamodule import ActiveDataModule
from src.loop.callbacks import RestoreBestWeights, SelectionCallback
from src.loop.pool import score_pool
from src.loop.records import RunStore
from src.models.baseline import Baseline
from src.selection import ranking
from src.selection.schedule import (STREAM_BASE, STREAM_RANDOM_SCORES, STREAM_SHUFFLE, STREAM_TRAIN,
                                    derive_seed, plan_budgets)
from src.selection.scorers import get_scorer, random_scores
from src.tracking import Tracker

log = logging.getLogger(__name__)



@dataclass
class SelectionSettings:
    """The ``selection`` config group, typed."""

    budget: int | list[int] = 100
    rounds: int | None = None
    base_size: int = 0
    pivot: float = 0.0
    mode: str = "accumulate"               # accumulate | reselect
    shuffle: bool = True                   # reshuffle the labelled set every epoch (thesis 4.1.1)
    diversity: dict = field(default_factory=lambda: {"enabled": False, "k": None, "labels": "predicted"})


class ActiveLearningLoop:
    def __init__(self, *, datamodule: ActiveDataModule, model: pl.LightningModule, baseline: Baseline,
                 scorer_name: str, selection: SelectionSettings, trainer_cfg, callbacks_cfg, seed: int,
                 run_dir: str | Path, tracker: Tracker, steps_per_epoch: int | None = None,
                 progress: bool = True, epoch_logs: bool = True, fingerprint: dict | None = None,
                 scorer_options: dict | None = None):
        self.dm, self.model, self.baseline = datamodule, model, baseline
        self.scorer = get_scorer(scorer_name)
        self.scorer_options = dict(scorer_options or {})   # task-specific knobs, passed to model.score_batch
        self.sel = selection
        self.trainer_cfg, self.callbacks_cfg = trainer_cfg, callbacks_cfg
        self.seed = int(seed)
        self.run_dir = Path(run_dir)
        self.store = RunStore(self.run_dir)
        self.tracker = tracker
        self.steps_per_epoch = steps_per_epoch
        self.progress = progress
        self.epoch_logs = epoch_logs
        self.fingerprint = fingerprint or {}
        self.dm.setup()
        self.pool_ids = np.sort(self.dm.pool_ids)
        self.budgets = plan_budgets(len(self.pool_ids), self.sel.base_size, self.sel.budget, self.sel.rounds)
        self.has_base = self.sel.base_size > 0
        self.n_rounds = len(self.budgets) + int(self.has_base)

    # -- selection ------------------------------------------------------------------------
    def draw_base(self) -> np.ndarray:
        rng = np.random.default_rng(derive_seed(self.seed, 0, STREAM_BASE))
        return np.sort(rng.choice(self.pool_ids, size=self.sel.base_size, replace=False))

    def selection_index(self, round_index: int) -> int:
        """Which entry of the budget plan round ``round_index`` uses."""
        return round_index - int(self.has_base)

    def select_for_round(self, model: torch.nn.Module, round_index: int, labelled: np.ndarray,
                         base: np.ndarray) -> dict:
        j = self.selection_index(round_index)
        if self.sel.mode == "reselect":
            candidates = np.setdiff1d(self.pool_ids, base)
            budget = sum(self.budgets[: j + 1])
        else:
            candidates = np.setdiff1d(self.pool_ids, labelled)
            budget = self.budgets[j]
        diversity = self.sel.diversity or {}
        diverse = bool(diversity.get("enabled"))
        predicted = diverse and diversity.get("labels", "predicted") == "predicted"
        predictions = None
        if self.scorer.needs_model or predicted:
            ids, scores, predictions = score_pool(model, self.dm.pool_dataloader(candidates), self.scorer,
                                                  want_predictions=predicted, progress=self.progress,
                                                  desc=f"scoring pool for round {round_index}",
                                                  **self.scorer_options)
            assert np.array_equal(ids, candidates)
        if not self.scorer.needs_model:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, round_index, STREAM_RANDOM_SCORES))
            scores = random_scores(len(candidates), gen).numpy()
        classes = None
        if diverse:
            classes = predictions if predicted else self.dm.labels_of(candidates)
        chosen = ranking.select(candidates, scores, budget, pivot=self.sel.pivot, classes=classes,
                                diversity_k=diversity.get("k"))
        return {"round": round_index, "ids": chosen.ids.tolist(), "scores": chosen.scores.tolist(),
                "n_scored": int(len(candidates))}

    def select_with_baseline(self, base: np.ndarray) -> dict:
        """Round 0's selection by the baseline model, on the device the Trainer would use.

        Later selections run inside the round's Trainer (the model is already on its
        device then); this one happens before any Trainer, so the model is moved by hand.
        """
        device = hydra.utils.instantiate(self.trainer_cfg, logger=False, enable_progress_bar=False,
                                         enable_model_summary=False).strategy.root_device
        self.model.to(device)
        try:
            return self.select_for_round(self.model, 0, np.zeros(0, np.int64), base)
        finally:
            self.model.cpu()

    # -- one round --------------------------------------------------------------------------
    def make_trainer(self, round_index: int, extra_callbacks: list) -> tuple[pl.Trainer, RestoreBestWeights | None]:
        """A fresh Trainer with fresh callbacks (EarlyStopping keeps state across fits)."""
        callbacks = [hydra.utils.instantiate(node) for key, node in self.callbacks_cfg.items()
                     if hasattr(node, "keys") and "_target_" in node]
        restore = next((c for c in callbacks if isinstance(c, RestoreBestWeights)), None)
        callbacks += extra_callbacks
        logger = False
        if self.epoch_logs:
            from pytorch_lightning.loggers import CSVLogger

            logger = CSVLogger(save_dir=str(self.run_dir), name="rounds", version=f"round_{round_index:03d}")
        trainer = hydra.utils.instantiate(self.trainer_cfg, callbacks=callbacks, logger=logger,
                                          default_root_dir=str(self.run_dir), enable_checkpointing=False,
                                          enable_progress_bar=self.progress, enable_model_summary=False)
        return trainer, restore

    def run(self) -> list[dict]:
        records, state = self.store.recover()
        if state is None:
            base = self.draw_base() if self.has_base else np.zeros(0, dtype=np.int64)
            state = {"completed_rounds": 0, "base_ids": base.tolist(), "labelled_ids": [],
                     "pending": None, "fingerprint": self.fingerprint}
            if not self.has_base:
                started = time.perf_counter()
                pending = self.select_with_baseline(base)
                pending["seconds"] = time.perf_counter() - started
                state["pending"] = pending
        else:
            self.check_fingerprint(state)
            log.info("resuming %s after round %d of %d", self.run_dir, state["completed_rounds"] - 1, self.n_rounds)

        for r in range(int(state["completed_rounds"]), self.n_rounds):
            record, state = self.run_round(r, state)
            self.store.commit(record, state)
            records.append(record)
            self.tracker.log_round(record)
            log.info(format_round_line(record, self.n_rounds))
        return records

    def run_round(self, r: int, state: dict) -> tuple[dict, dict]:
        base = np.asarray(state["base_ids"], dtype=np.int64)
        pending = state["pending"]
        if pending is None:            # round 0 trains on the base set alone
            selected, scores, select_seconds = base.tolist(), [], 0.0
            labelled = base
        else:
            assert pending["round"] == r, (pending["round"], r)
            selected, scores, select_seconds = pending["ids"], pending["scores"], pending["seconds"]
            prior = np.asarray(state["labelled_ids"] if self.sel.mode == "accumulate" else base, dtype=np.int64)
            labelled = np.concatenate([prior, np.asarray(selected, dtype=np.int64)])

        t0 = time.perf_counter()
        self.baseline.reset(self.model)
        pl.seed_everything(derive_seed(self.seed, r, STREAM_TRAIN), workers=True, verbose=False)
        self.dm.set_labelled(labelled, shuffle=self.sel.shuffle, seed=derive_seed(self.seed, r, STREAM_SHUFFLE),
                             steps_per_epoch=self.steps_per_epoch)
        t1 = time.perf_counter()

        selector = None
        if r + 1 < self.n_rounds:
            selector = SelectionCallback(lambda model: self.select_for_round(model, r + 1, labelled, base))
        trainer, restore = self.make_trainer(r, [selector] if selector else [])
        trainer.fit(self.model, datamodule=self.dm)
        t2 = time.perf_counter()
        test_metrics = trainer.test(self.model, datamodule=self.dm, verbose=False)[0]
        t3 = time.perf_counter()
        next_pending = selector.result if selector else None
        val_metrics = restore.best_metrics if restore else {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        test_seconds = (t3 - t2) - (next_pending["seconds"] if next_pending else 0.0)

        record = {
            "round": r,
            "n_labelled": int(len(labelled)),
            "n_selected": len(selected),
            "selection": "base" if pending is None else self.scorer.name,
            "selected_ids": [int(i) for i in selected],
            "selected_scores": [float(s) for s in scores],
            "epochs": int(trainer.current_epoch),
            "best_epoch": restore.best_epoch if restore else int(trainer.current_epoch) - 1,
            **{k: float(v) for k, v in sorted(val_metrics.items())},
            **{k: float(v) for k, v in sorted(test_metrics.items())},
            "select_seconds": float(select_seconds),
            "reset_seconds": t1 - t0,
            "fit_seconds": t2 - t1,
            "test_seconds": test_seconds,
        }
        new_state = {**state, "completed_rounds": r + 1, "labelled_ids": labelled.tolist(), "pending": next_pending}
        return record, new_state

    def check_fingerprint(self, state: dict) -> None:
        saved = state.get("fingerprint", {})
        changed = sorted(k for k in set(saved) | set(self.fingerprint) if saved.get(k) != self.fingerprint.get(k))
        if changed:
            shown = ", ".join(f"{k}: {saved.get(k)!r} -> {self.fingerprint.get(k)!r}" for k in changed[:4])
            raise ValueError(f"resume=true: the config differs from the run in {self.run_dir} ({shown}); "
                             "resume with the original settings or start a new run")


def format_round_line(record: dict, n_rounds: int) -> str:
    parts = [f"round {record['round'] + 1}/{n_rounds}", f"labelled {record['n_labelled']}",
             f"epochs {record['epochs']}"]
    shown = ("test/loss", "test/acc_top1", "test/acc_top5", "test/map", "test/map_50")
    parts += [f"{k} {record[k]:.4f}" for k in shown if k in record]
    parts.append(f"select {record['select_seconds']:.1f}s fit {record['fit_seconds']:.1f}s")
    return " | ".join(parts)


def curve_summary(records: list[dict]) -> dict:
    """AUC (normalised, DESIGN.md) of every test metric over the labelled count, plus the last values."""
    if not records:
        return {}
    x = [r["n_labelled"] for r in records]
    summary = {"al/rounds": len(records), "al/n_labelled": x[-1]}
    for key in sorted({k for r in records for k in r if k.startswith(("test/", "val/"))}):
        ys = [r.get(key) for r in records]
        if all(isinstance(y, (int, float)) for y in ys):
            summary[f"auc/{key}"] = normalised_auc(x, ys)
            summary[f"final/{key}"] = ys[-1]
    return summary
