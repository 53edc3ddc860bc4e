"""The outer active-learning loop: one round reads reset -> fit -> test -> select -> commit.

Thin by design. Each round gets a fresh Trainer from the factory it was given (a
second ``fit`` on one Trainer trains nothing and EarlyStopping keeps its state),
the model is restored in place to the in-memory starting weights, fitted, tested,
and then scores the pool to choose the next round's items. The round's record and
the next selection are committed together (``records.RunStore``), so a killed run
resumes after its last completed round with identical results and without any
trained weights.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch

from src.data.datamodule import LabelledSetDataModule
from src.errors import UserError
from src.loop import distributed
from src.loop.callbacks import EpochHistory, RestoreBestWeights
from src.loop.pool import score_pool
from src.loop.trainers import how_fit_ended
from src.models.weights import WeightSnapshot
from src.records import RoundRecord, RunStore
from src.selection import policy, stochastic
from src.selection.schedule import (
    STREAM_BASE,
    STREAM_POOL_PASS,
    STREAM_RANDOM_SCORES,
    STREAM_SCORER,
    STREAM_SHUFFLE,
    STREAM_TRAIN,
    derive_seed,
    plan_selections,
)
from src.selection.scorers import Scorer
from src.tracking import NoTracker, Tracker

# model outputs computed from the plain forward pass, alongside which the argmax class is free
PLAIN_PASS_OUTPUTS = frozenset({"probabilities", "logits", "loss"})

log = logging.getLogger(__name__)

NO_IDS = np.zeros(0, dtype=np.int64)


@dataclass
class SelectionSettings:
    """The ``selection`` config group, typed. No defaults here: conf/selection/default.yaml is
    their one home (the loop is built from the composed config)."""

    budget: int | list[int]
    rounds: int | None
    base_size: int
    pivot: float
    mode: str  # accumulate | reselect | prune
    fraction: float | None  # prune: the share of the labelled set each prune round keeps
    shuffle: str | bool  # round | epoch | none (thesis 4.1.1; datamodule.train_sampler)
    diversity: dict


def round_label(index: int, n_rounds: int) -> str:
    """A round as the console names it: rounds count from 0, as in rounds.jsonl and the table, with
    its place among all of them, "round 2 (3 of 4)"."""
    return f"round {index} ({index + 1} of {n_rounds})"


def _ids(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


class ActiveLearningLoop:
    def __init__(
        self,
        *,
        datamodule: LabelledSetDataModule,
        model: pl.LightningModule,
        snapshot: WeightSnapshot,
        scorer: Scorer,
        score_batch: Callable,
        selection: SelectionSettings,
        new_trainer: Callable[[int], pl.Trainer],
        seed: int,
        store: RunStore,
        tracker: Tracker | None = None,
        steps_per_epoch: int | None = None,
        progress: bool = False,
        fingerprint: dict | None = None,
        round_line: Callable[[RoundRecord, int], str] | None = None,
    ):
        """``score_batch(model, batch, scorer, want_classes)`` is the task's pool-scoring adapter,
        with any task options already bound; ``new_trainer(round_index)`` builds a round's Trainer."""
        self.dm, self.model, self.snapshot = datamodule, model, snapshot
        self.scorer = scorer
        self.score_batch = functools.partial(score_batch, scorer=scorer)
        self.sel = selection
        self.new_trainer = new_trainer
        self.seed = int(seed)
        self.store = store
        self.tracker = tracker or NoTracker()
        self.steps_per_epoch = steps_per_epoch
        self.progress = progress
        self.fingerprint = fingerprint or {}
        self.round_line = round_line or (lambda record, n: round_label(record.round, n))
        self.pool_ids = np.sort(self.dm.pool_ids)
        self.budgets = plan_selections(
            self.sel.mode,
            len(self.pool_ids),
            self.sel.base_size,
            self.sel.budget,
            self.sel.rounds,
            self.sel.fraction,
        )
        self.has_base = policy.has_base_round(self.sel.mode, self.sel.base_size)
        self.n_rounds = len(self.budgets) + int(self.has_base)

    # -- the rounds -------------------------------------------------------------------------
    def run(self) -> list[RoundRecord]:
        records, state = self.store.recover()
        if state is None:
            state = self.initial_state()
        else:
            self.check_fingerprint(state)
            log.info(
                "resuming %s after %s",
                self.store.run_dir,
                round_label(int(state["completed_rounds"]) - 1, self.n_rounds),
            )
        for r in range(int(state["completed_rounds"]), self.n_rounds):
            record, state = self.run_round(r, state)
            self.store.commit(record, state)
            records.append(record)
            self.tracker.log_round(record)
            log.info(self.round_line(record, self.n_rounds))
        return records

    def initial_state(self) -> dict:
        rng = np.random.default_rng(derive_seed(self.seed, 0, STREAM_BASE))
        base = policy.base_set(self.sel.mode, self.pool_ids, self.sel.base_size, rng)
        return {
            "completed_rounds": 0,
            "base_ids": base.tolist(),
            "labelled_ids": [],
            "pending": None,
            "fingerprint": self.fingerprint,
        }

    def run_round(self, r: int, state: dict) -> tuple[RoundRecord, dict]:
        trainer = self.new_trainer(r)
        device = trainer.strategy.root_device
        base = _ids(state["base_ids"])
        pending = state["pending"]
        if (
            r == 0 and not self.has_base
        ):  # no base set: the starting model chooses the first items (thesis 3.2)
            pending = self.select(0, NO_IDS, base, device)
        if pending is None:  # round 0 trains on the base set alone
            selected, scores, select_seconds, labelled = base.tolist(), [], 0.0, base
        else:
            selected, scores, select_seconds = pending["ids"], pending["scores"], pending["seconds"]
            labelled = policy.labelled_after(self.sel.mode, _ids(state["labelled_ids"]), base, selected)

        t0 = time.perf_counter()
        self.snapshot.restore(self.model)
        pl.seed_everything(derive_seed(self.seed, r, STREAM_TRAIN), workers=True, verbose=False)
        self.dm.set_labelled(
            labelled,
            shuffle=self.sel.shuffle,
            seed=derive_seed(self.seed, r, STREAM_SHUFFLE),
            steps_per_epoch=self.steps_per_epoch,
        )
        t1 = time.perf_counter()
        trainer.fit(self.model, datamodule=self.dm)
        t2 = time.perf_counter()
        test_metrics = trainer.test(self.model, datamodule=self.dm, verbose=False)[0]
        t3 = time.perf_counter()
        next_pending = self.select(r + 1, labelled, base, device) if r + 1 < self.n_rounds else None

        restore = next((c for c in trainer.callbacks if isinstance(c, RestoreBestWeights)), None)
        history = next((c for c in trainer.callbacks if isinstance(c, EpochHistory)), None)
        val_metrics = (
            restore.best_metrics
            if restore
            else {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        )
        record = RoundRecord(
            round=r,
            n_labelled=int(len(labelled)),
            n_selected=len(selected),
            selection="base" if pending is None else self.scorer.name,
            selected_ids=[int(i) for i in selected],
            selected_scores=[float(s) for s in scores],
            selected_predictions=pending.get("predictions") if pending else None,
            epochs=int(trainer.current_epoch),
            best_epoch=restore.best_epoch if restore else int(trainer.current_epoch) - 1,
            stopped_by=how_fit_ended(trainer),
            metrics={k: float(v) for k, v in {**val_metrics, **test_metrics}.items()},
            history=history.columns() if history else None,
            select_seconds=float(select_seconds),
            reset_seconds=t1 - t0,
            fit_seconds=t2 - t1,
            test_seconds=t3 - t2,
        )
        new_state = {
            **state,
            "completed_rounds": r + 1,
            "labelled_ids": labelled.tolist(),
            "pending": next_pending,
        }
        return record, new_state

    # -- selection --------------------------------------------------------------------------
    def select(self, round_index: int, labelled: np.ndarray, base: np.ndarray, device: torch.device) -> dict:
        """The ids round ``round_index`` adds, chosen by the model as it is now, scored on ``device``."""
        started = time.perf_counter()
        candidates, budget = policy.candidates_and_budget(
            self.sel.mode, self.pool_ids, labelled, base, self.budgets, round_index - int(self.has_base)
        )
        diversity = self.sel.diversity or {}
        diverse = bool(diversity.get("enabled"))
        predicted = diverse and diversity.get("labels", "predicted") == "predicted"
        scorer = self.scorer
        generator = torch.Generator().manual_seed(derive_seed(self.seed, round_index, STREAM_SCORER))
        scores = predictions = None
        if scorer.joint:
            # a joint choice ranks what the pivot window and the diversity walk need: the
            # batch itself, or every candidate (its order as descending scores)
            kept = policy.kept_labelled(self.sel.mode, labelled, base)
            n_ordered = budget if self.sel.pivot == 0 and not diverse else len(candidates)
            scores, predictions = self.joint_scores(
                candidates, kept, min(n_ordered, len(candidates)), predicted, round_index, device, generator
            )
        elif scorer.needs_model or predicted:
            # where the scores come from the plain forward pass the predicted classes come at no
            # extra cost: the record keeps the selecting model's guess for each pick (the report's
            # label-quality audit, thesis table 4.1); MC-dropout scorers would need one more pass
            free = bool(scorer.uses & PLAIN_PASS_OUTPUTS)
            scores, predictions = self.score_candidates(candidates, predicted or free, round_index, device)
        if not scorer.needs_model:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, round_index, STREAM_RANDOM_SCORES))
            scores = scorer.scores_without_model(len(candidates), gen).numpy()

        def choose() -> dict:
            classes = None
            if diverse:
                classes = predictions if predicted else self.dm.labels_of(candidates)
            chosen, at = stochastic.choose(
                candidates,
                scores,
                budget,
                pivot=self.sel.pivot,
                classes=classes,
                diversity_k=diversity.get("k"),
                stochastic=scorer.stochastic,
                generator=generator,
            )
            out = {
                "round": round_index,
                "ids": chosen.ids.tolist(),
                "scores": chosen.scores.tolist(),
                "n_scored": int(len(candidates)),
                "seconds": time.perf_counter() - started,
            }
            if predictions is not None and scorer.needs_model and not scorer.joint:
                out["predictions"] = [int(c) for c in np.asarray(predictions)[at]]
            return out

        return distributed.made_once(choose)  # under trainer=ddp: chosen on rank 0, shared with all

    def joint_scores(
        self,
        candidates: np.ndarray,
        kept: np.ndarray,
        n_ordered: int,
        predicted: bool,
        round_index: int,
        device: torch.device,
        generator: torch.Generator,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """A joint scorer's order of ``n_ordered`` candidates as scores (n - k) / n for the k-th
        chosen, 0 for the rest; and the predicted classes or None."""
        pool = self.scorer.collector(len(candidates))
        _, predictions = self.score_candidates(candidates, predicted, round_index, device, collector=pool)
        reference = self.scorer.collector(len(kept))
        if self.scorer.uses_labelled and len(kept):
            self.score_candidates(np.sort(kept), False, round_index, device, collector=reference)
        order = self.scorer.choose(pool, reference, n_ordered, generator).numpy()
        scores = np.zeros(len(candidates), dtype=np.float64)
        scores[order] = (n_ordered - np.arange(n_ordered)) / n_ordered
        return scores, predictions

    def score_candidates(
        self, candidates: np.ndarray, predicted: bool, round_index: int, device: torch.device, collector=None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores, predicted classes or None) of ``candidates``, in their order, on ``device``;
        a joint scorer's ``collector`` is fed the outputs instead of scores being taken."""
        home = next(self.model.parameters()).device
        self.model.to(device)
        score_batch = (
            self.score_batch
            if collector is None
            else functools.partial(self.score_batch, collector=collector)
        )
        try:

            def score(ids: np.ndarray):
                return score_pool(
                    self.model,
                    self.dm.pool_dataloader(ids),
                    score_batch,
                    want_predictions=predicted,
                    progress=self.progress,
                    desc=f"scoring pool for round {round_index}",
                )

            with self.scorer.pool_context(self.model, derive_seed(self.seed, round_index, STREAM_POOL_PASS)):
                # trainer=ddp: each rank scores its share and all get every score; a joint scorer's
                # collector must see the whole pool, so every rank scores all of it
                if distributed.active() and collector is None:
                    ids, scores, predictions = distributed.score_sharded(candidates, score, device)
                else:
                    ids, scores, predictions = score(candidates)
        finally:
            self.model.to(home)
        if not np.array_equal(ids, candidates):
            raise RuntimeError("the pool loader returned the candidates out of order")
        return scores, predictions

    def check_fingerprint(self, state: dict) -> None:
        check_fingerprint(state, self.fingerprint, self.store.run_dir)


def check_fingerprint(state: dict, fingerprint: dict, run_dir) -> None:
    """UserError naming the settings that differ between a saved run's state and ``fingerprint``."""
    saved = state.get("fingerprint", {})
    changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if changed:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {fingerprint.get(k)!r}" for k in changed[:4])
        raise UserError(
            f"resume=true: the config differs from the run in {run_dir} ({shown}); "
            "resume with the original settings or start a new run"
        )
