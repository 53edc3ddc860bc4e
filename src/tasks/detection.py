"""Object detection: SSDDetector on a DetectionDataModule."""

from __future__ import annotations

import functools

import torch

from src.selection import detection_scorers as ds
from src.selection.bald import OF_MOMENTS
from src.tasks import Task, score_with


class DetectorOutputs:
    """What a scorer may read of one pool batch of images; one ``pool_outputs`` call gives all of it.

    ``loss``: each image's own cls + box loss. ``uncertainty(fn)``: ``fn`` applied to each of
    the image's top-k detections' class distributions, aggregated (mean, max, sum); no detection -> 1.
    ``mc_uncertainty(quantity, T)``: BALD or MC entropy of each of the top-k detections of T
    MC-dropout passes, aggregated the same way. ``forward()``: the plain pass (fills a scorer's taps).
    """

    def __init__(
        self,
        model,
        batch,
        wants: frozenset,
        top_k: int = 10,
        score_threshold: float = 0.1,
        aggregate: str = "mean",
        nms_iou: float = 0.5,
    ):
        self.model, self.batch, self.aggregate = model, batch, aggregate
        self.options = dict(
            losses="loss" in wants,
            detections="probabilities" in wants or "classes" in wants,
            top_k=top_k,
            score_threshold=score_threshold,
            nms_iou=nms_iou,
        )
        self._outputs = None

    def _pool_outputs(self):
        if self._outputs is None:
            self._outputs = self.model.pool_outputs(self.batch, **self.options)
        return self._outputs

    def loss(self) -> torch.Tensor:
        return self._pool_outputs()[0].double()

    def uncertainty(self, of_probabilities) -> torch.Tensor:
        return ds.image_uncertainty(
            [probs for probs, _ in self._pool_outputs()[1]], of_probabilities, self.aggregate
        )

    def forward(self) -> None:
        """The batch's eval pass through the network (shared with the detections when those are read)."""
        self._pool_outputs()

    def mc_uncertainty(self, quantity: str, passes: int) -> torch.Tensor:
        """``quantity`` ("bald" | "mc_entropy") of each top-k detection of ``passes`` MC-dropout passes,
        aggregated per image like ``uncertainty``; no detection -> 1."""
        kept = self.model.mc_pool_outputs(
            self.batch,
            passes,
            top_k=self.options["top_k"],
            score_threshold=self.options["score_threshold"],
            nms_iou=self.options["nms_iou"],
        )
        of_moments = OF_MOMENTS[quantity]
        return ds.aggregate_images(
            [of_moments(probs, entropy) if probs.shape[0] else probs.new_zeros(0) for probs, entropy in kept],
            self.aggregate,
        )

    def features(self) -> torch.Tensor:
        """Pooled backbone features [B, D] (``SSDDetector.pooled_backbone_features``), a pass of their own."""
        return self.model.pooled_backbone_features(self.batch[0])

    def predicted_classes(self) -> torch.Tensor:
        return ds.predicted_class([labels for _, labels in self._pool_outputs()[1]])


# (model, batch, scorer, want_classes, collector=None, **scorer options) -> (scores, classes)
score_batch = functools.partial(score_with, DetectorOutputs)


# detections drawn on the W&B images: the most confident ones, as an eye would read them
SHOWN_DETECTIONS = 10
SHOWN_SCORE = 0.3


def item_view(datamodule, ids, images: bool = True, model=None, predictions: bool = True):
    """Per image: its class counts (``car x2, person``); with ``images``, the image (HxWxC) and
    its boxes: ground truth and, with ``predictions``, the detections of ``model`` (a round is
    logged right after its fit and selection, so the model holds that round's weights)."""
    from src.analysis.selections import class_counts

    names = datamodule.class_names
    loaded = [datamodule.source.load(int(i)) for i in ids]
    labels = [class_counts([names[int(c)] for c in target["labels"]]) for _, target in loaded]
    if not images:
        return labels, None, None
    shown = model is not None and predictions
    detections = _detections(model, [image for image, _ in loaded]) if shown else [[]] * len(ids)
    overlays = [
        {
            "ground_truth": [(*box.tolist(), int(c)) for box, c in zip(target["boxes"], target["labels"])],
            "predictions": found,
        }
        for (_, target), found in zip(loaded, detections)
    ]
    pictures = [
        image.permute(1, 2, 0).numpy() if image.shape[0] == 3 else image[0].numpy() for image, _ in loaded
    ]
    return labels, pictures, (names, overlays)


def _detections(model, images) -> list[list[tuple]]:
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        found = model(torch.stack(images).to(model.device))
    model.train(was_training)
    return [
        [
            (*box.tolist(), int(c), float(s))
            for box, c, s in zip(
                d["boxes"][:SHOWN_DETECTIONS], d["labels"][:SHOWN_DETECTIONS], d["scores"][:SHOWN_DETECTIONS]
            )
            if s >= SHOWN_SCORE
        ]
        for d in found
    ]


TASK = Task(
    name="detection",
    module_class="src.models.detector.SSDDetector",
    datamodule_class="src.data.detection.datamodule.DetectionDataModule",
    score_batch=score_batch,
    scorer_options=("top_k", "score_threshold", "aggregate", "nms_iou"),
    headline_metric="test/map",
    console_columns=(("mAP", "test/map", "{:.4f}"), ("mAP@.5", "test/map_50", "{:.4f}")),
    item_view=item_view,
    provides=frozenset({"probabilities", "loss", "features", "forward", "mc_uncertainty"}),
)
