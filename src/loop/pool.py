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


def score_pool(model: nn.Module, loader, scorer: Scorer, want_predictions: bool,
               progress: bool = True, desc: str = "scoring pool") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(ids, scores, predicted classes or None) for every item the loader yields."""
    n = len(loader.dataset)
    ids = torch.empty(n, dtype=torch.int64)
    scores = torch.empty(n, dtype=torch.float64)
    preds = torch.empty(n, dtype=torch.int64) if want_predictions else None
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    start = 0
    with torch.inference_mode():
        for images, labels, batch_ids in tqdm(loader, desc=desc, disable=not progress, leave=False,
                                              unit="batch", dynamic_ncols=True):
            logits = model(images.to(device, non_blocking=True))
            stop = start + len(batch_ids)
            ids[start:stop] = batch_ids
            if scorer.score_batch is not None:
                batch_labels = labels.to(device, non_blocking=True) if scorer.needs_labels else None
                scores[start:stop] = scorer.score_batch(logits, batch_labels).double().cpu()
            if preds is not None:
                preds[start:stop] = logits.argmax(dim=1).cpu()
            start = stop
    model.train(was_training)
    return ids.numpy(), scores.numpy(), None if preds is None else preds.numpy()
