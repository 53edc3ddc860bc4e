"""Scoring the unlabelled pool with the current model.

One pass under ``torch.inference_mode`` in large batches. Per item it keeps one
float score and, when class diversity needs it, one predicted class: memory is
O(pool), never O(pool x classes).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from src.records import fault_point


def score_pool(
    model: nn.Module,
    loader,
    score_batch: Callable,
    want_predictions: bool,
    progress: bool = True,
    desc: str = "scoring pool",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(ids, scores, predicted classes or None) for every item the loader yields.

    A batch is ``(inputs, targets, ids)``. ``score_batch(model, batch, want_classes=...)``
    is the task's adapter with the scorer bound (``src.tasks``): it returns one score
    per item (or None when the scorer needs no model) and, when asked, one class.
    """
    n = len(loader.dataset)
    ids = torch.empty(n, dtype=torch.int64)
    scores = torch.zeros(n, dtype=torch.float64)
    preds = torch.empty(n, dtype=torch.int64) if want_predictions else None
    was_training = model.training
    model.eval()
    start = 0
    with torch.inference_mode():
        for batch in tqdm(
            loader, desc=desc, disable=not progress, leave=False, unit="batch", dynamic_ncols=True
        ):
            fault_point("pool")
            batch_ids = batch[-1]
            stop = start + len(batch_ids)
            batch_scores, batch_classes = score_batch(model, batch, want_classes=want_predictions)
            ids[start:stop] = batch_ids
            if batch_scores is not None:
                scores[start:stop] = batch_scores.double().cpu()
            if preds is not None:
                preds[start:stop] = batch_classes.cpu()
            start = stop
    model.train(was_training)
    return ids.numpy(), scores.numpy(), None if preds is None else preds.numpy()
