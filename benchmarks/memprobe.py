"""One peak-memory measurement of pool scoring, meant to run in a fresh process.

    python -m benchmarks.memprobe --mode score_pool --classes 1000 --items 100000

prints one JSON object. ``bench.py`` starts one process per measurement, so no
allocator state, cached buffer or earlier peak of another measurement leaks in.

The model is deliberately tiny (uint8 8x8 image -> float -> Linear(64, C)), so
the per-batch logits, not the network, decide how much memory scoring needs.
The data path is the framework's: rows gathered with one tensor index per batch
(``RowsDataset.__getitems__``, reproduced here so the probe does not import
Lightning and starts in a second instead of five).

Modes:
* ``score_pool``: ``src.loop.pool.score_pool`` with the entropy scorer;
* ``naive``: what a straightforward implementation does: keep every batch's
  softmax, ``torch.cat`` them into the pool's N x C matrix, then score it.

Peak = the process' peak resident set (VmHWM) during the measurement minus its
resident set (VmRSS) just before it. The peak is reset first through
``/proc/self/clear_refs``; where that is not possible, ``ru_maxrss`` after
building minus ``ru_maxrss`` after scoring is used (which can only under-count).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import resource
import sys

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.peakmem import reset_peak, status_kib
from src.loop.pool import score_pool
from src.selection.scorers import entropy, get_scorer
from src.tasks.classification import score_batch

MIB = 1024 * 1024
IMAGE_SHAPE = (1, 8, 8)


class ToFloat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0)


class Rows(Dataset):
    """Same batch gathering as ``src.data.datamodule.RowsDataset``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels
        self.ids = torch.arange(len(images), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitems__(self, indices):
        rows = self.ids[torch.as_tensor(indices, dtype=torch.long)]
        return self.images[rows], self.labels[rows], rows


def _keep(batch):
    return batch


def naive_scores(model: nn.Module, loader) -> tuple[np.ndarray, np.ndarray]:
    """The O(N x C) way: the whole pool's probabilities in one matrix, then scores."""
    model.eval()
    probs, ids = [], []
    with torch.inference_mode():
        for images, _, batch_ids in loader:
            probs.append(torch.softmax(model(images).float(), dim=1))
            ids.append(batch_ids)
        matrix = torch.cat(probs)
        del probs
        scores = entropy(matrix)
    return torch.cat(ids).numpy(), scores.double().numpy()


def measure(mode: str, n_items: int, n_classes: int, batch_size: int) -> dict:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (n_items, *IMAGE_SHAPE), dtype=torch.uint8)
    labels = torch.randint(0, n_classes, (n_items,))
    model = nn.Sequential(ToFloat(), nn.Flatten(), nn.Linear(int(np.prod(IMAGE_SHAPE)), n_classes))
    loader = DataLoader(Rows(images, labels), batch_size=batch_size, shuffle=False, collate_fn=_keep)
    adapter = functools.partial(score_batch, scorer=get_scorer("entropy"))

    def run(dl):
        if mode == "score_pool":
            return score_pool(model, dl, adapter, want_predictions=False, progress=False)
        return naive_scores(model, dl)

    # warm the kernels and thread pools on 4 items: start-up costs are not the scoring's
    run(DataLoader(Rows(images[:4], labels[:4]), batch_size=batch_size, collate_fn=_keep))
    gc.collect()

    before = status_kib()
    reset = reset_peak()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run(loader)
    after = status_kib()
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if reset:
        extra_kib, method = after["VmHWM"] - before["VmRSS"], "VmHWM after clear_refs"
    else:
        extra_kib, method = maxrss_after - maxrss_before, "ru_maxrss delta"
    kept_bytes = sum(a.nbytes for a in result if a is not None)
    return {
        "mode": mode,
        "items": n_items,
        "classes": n_classes,
        "batch_size": batch_size,
        "peak_extra_mb": max(extra_kib, 0) / 1024,
        "result_mb": kept_bytes / MIB,
        "rss_before_mb": before["VmRSS"] / 1024,
        "method": method,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("score_pool", "naive"), required=True)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=1024)
    a = p.parse_args(argv)
    print(json.dumps(measure(a.mode, a.items, a.classes, a.batch_size)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
