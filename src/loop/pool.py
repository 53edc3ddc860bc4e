"""Scoring the unlabelled pool with the current model.

One pass under ``torch.inference_mode`` in large batches. Per item it keeps one
float score and, when class diversity needs it, one predicted class: memory is
O(pool), never O(pool x classes).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from src.selection.scorers import Scorer


def score_logits(logits: torch.Tensor, labels: torch.Tensor | None, scorer: Scorer,
                 want_classes: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One batch of a classifier's logits -> (one score per item, predicted class per item)."""
    scores = None
    if scorer.score_batch is not None:
        scores = scorer.score_batch(logits, labels if scorer.needs_labels else None)
    return scores, (logits.argmax(dim=1) if want_classes else None)


def score_pool(model: nn.Module, loader, scorer: Scorer, want_predictions: bool, progress: bool = True,
               desc: str = "scoring pool", **scorer_options) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(ids, scores, predicted classes or None) for every item the loader yields.

    A batch is ``(inputs, targets, ids)``. A model with a ``score_batch(batch, scorer,
    want_classes, **scorer_options)`` method scores its own batches (the detection
    module aggregates per-detection uncertainty per image that way); any other model
    is treated as a classifier whose forward pass returns logits.
    """
    n = len(loader.dataset)
    ids = torch.empty(n, dtype=torch.int64)
    scores = torch.zeros(n, dtype=torch.float64)
    preds = torch.empty(n, dtype=torch.int64) if want_predictions else None
    device = next(model.parameters()).device
    own_scoring = getattr(model, "score_batch", None)
    was_training = model.training
    model.eval()
    start = 0
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch", dynamic_ncols=True):
            batch_ids = batch[-1]
            stop = start + len(batch_ids)
            if own_scoring is not None:
                batch_scores, batch_classes = own_scoring(batch, scorer, want_predictions, **scorer_options)
            else:
                inputs, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
                batch_scores, batch_classes = score_logits(model(inputs), labels, scorer, want_predictions)
            ids[start:stop] = batch_ids
            if batch_scores is not None:
                scores[start:stop] = batch_scores.double().cpu()
            if preds is not None:
                preds[start:stop] = batch_classes.cpu()
            start = stop
    model.train(was_training)
    return ids.numpy(), scores.numpy(), None if preds is None else preds.numpy()
