"""Image classification: ImageClassifier on an ActiveDataModule."""
from __future__ import annotations

import torch

from src.selection.scorers import Scorer
from src.tasks import Task


def score_batch(model: torch.nn.Module, batch, scorer: Scorer, want_classes: bool):
    """(one score per image, predicted class per image) from one forward pass of the logits."""
    images, labels, _ = batch
    device = next(model.parameters()).device
    logits = model(images.to(device, non_blocking=True))
    scores = scorer.score_logits(logits, labels.to(device, non_blocking=True) if scorer.needs_labels else None)
    return scores, (logits.argmax(dim=1) if want_classes else None)


def item_view(datamodule, ids, images: bool = True, model=None, predictions: bool = True):
    """Class names and images (HxW grey or HxWxC) of dataset rows ``ids``; no boxes (nor model)."""
    data = datamodule.data
    names = [data.label_name(int(label)) for label in data.labels[ids].tolist()]
    if not images:
        return names, None, None
    pictures = []
    for i in ids:
        img = data.images[i].numpy()
        pictures.append(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
    return names, pictures, None


def save_data_summary(datamodule, run_dir, title: str) -> None:
    """The class counts of pool, val and test (thesis figures 4.19-4.20)."""
    datamodule.save_class_distribution(run_dir, title=title)


TASK = Task(
    name="classification",
    module_class="src.models.classifier.ImageClassifier",
    datamodule_class="src.data.datamodule.ActiveDataModule",
    score_batch=score_batch,
    scorer_options=(),
    headline_metric="test/acc_top1",
    console_columns=(("top-1", "test/acc_top1", "{:.4f}"), ("top-5", "test/acc_top5", "{:.4f}"),
                     ("top-20", "test/acc_top20", "{:.4f}")),
    item_view=item_view,
    save_data_summary=save_data_summary,
)
