"""Image classification: ImageClassifier on an ActiveDataModule."""

from __future__ import annotations

import functools

import torch

from src.models.mc_dropout import last_linear, mc_dropout_mode, mc_softmax
from src.selection.bald import bald, mc_entropy
from src.selection.scorers import cross_entropy_loss
from src.tasks import Task, score_with
from src.tensors import at_least_float32


class ClassifierOutputs:
    """What a scorer may read of one pool batch, computed on first use and kept for the batch."""

    def __init__(self, model: torch.nn.Module, batch, wants: frozenset):
        images, labels, _ = batch
        self.model = model
        self.device = next(model.parameters()).device
        self.images = images.to(self.device, non_blocking=True)
        self._labels = labels
        self._logits = self._features = None

    def logits(self) -> torch.Tensor:
        if self._logits is None:
            self._logits = self.model(self.images)
        return self._logits

    def labels(self) -> torch.Tensor:
        return self._labels.to(self.device, non_blocking=True)

    def uncertainty(self, of_probabilities) -> torch.Tensor:
        return of_probabilities(torch.softmax(at_least_float32(self.logits()), dim=1))

    def loss(self) -> torch.Tensor:
        return cross_entropy_loss(self.logits(), self.labels())

    def features(self) -> torch.Tensor:
        """The input of the network's last Linear layer (penultimate features), [B, D], from the same pass."""
        if self._features is None:
            captured = []
            hook = last_linear(getattr(self.model, "net", self.model)).register_forward_pre_hook(
                lambda m, args: captured.append(args[0])
            )
            try:
                self._logits = self.model(self.images)
            finally:
                hook.remove()
            self._features = captured[-1].flatten(1)
        return self._features

    def mc_probabilities(self, passes: int) -> torch.Tensor:
        """[T, B, C] softmax of ``passes`` forward passes with the dropout layers on (MC dropout)."""
        with mc_dropout_mode(self.model):
            return mc_softmax(self.model, self.images, passes)

    def mc_uncertainty(self, quantity: str, passes: int) -> torch.Tensor:
        """``quantity`` ("bald" | "mc_entropy") of each item's ``passes`` MC-dropout passes [B]."""
        return MC_QUANTITIES[quantity](self.mc_probabilities(passes))

    def forward(self) -> torch.Tensor:
        """The plain forward pass (fills a scorer's feature taps): the logits."""
        return self.logits()

    def predicted_classes(self) -> torch.Tensor:
        return self.logits().argmax(dim=1)


MC_QUANTITIES = {"bald": bald, "mc_entropy": mc_entropy}


# (model, batch, scorer, want_classes, collector=None, **scorer options) -> (scores, classes)
score_batch = functools.partial(score_with, ClassifierOutputs)


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


class DatasetItems:
    """A classification dataset's items as the report's grids show them: the image and its class name."""

    def __init__(self, datamodule):
        self.data = datamodule.data

    def __len__(self) -> int:
        return len(self.data.labels)

    def image(self, i: int):
        return self.data.images[i].numpy()

    def label(self, i: int) -> str:
        return self.data.label_name(int(self.data.labels[i]))

    def label_name(self, c: int) -> str:
        return self.data.label_name(c)


TASK = Task(
    name="classification",
    module_class="src.models.classifier.ImageClassifier",
    datamodule_class="src.data.datamodule.ActiveDataModule",
    score_batch=score_batch,
    scorer_options=(),
    headline_metric="test/acc_top1",
    console_columns=(
        ("top-1", "test/acc_top1", "{:.4f}"),
        ("top-5", "test/acc_top5", "{:.4f}"),
        ("top-20", "test/acc_top20", "{:.4f}"),
    ),
    item_view=item_view,
    save_data_summary=save_data_summary,
    provides=frozenset(
        {"probabilities", "loss", "logits", "features", "mc_probabilities", "mc_uncertainty", "forward"}
    ),
    accuracy_key="val/acc_top1",
    metric_titles={
        "test/acc_top1": "Test top-1 accuracy",
        "test/acc_top5": "Test top-5 accuracy",
        "test/acc_top20": "Test top-20 accuracy",
        "val/acc_top1": "Validation top-1 accuracy",
        "val/acc_top5": "Validation top-5 accuracy",
    },
    grid_items=DatasetItems,
)
