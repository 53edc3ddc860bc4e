"""Object detection: SSDDetector on a DetectionDataModule."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from src.models.mc_dropout import mc_dropout_mode
from src.selection import detection_scorers as ds
from src.selection.bald import OF_MOMENTS, PassMoments
from src.tasks import Task, score_with
from src.tensors import at_least_float32


# -- what pool scoring reads of the detector: one pass through its parts (SSDDetector.forward_parts)
def pool_outputs(
    model,
    batch,
    losses: bool,
    detections: bool,
    top_k: int = 10,
    score_threshold: float = 0.1,
    nms_iou: float = 0.5,
) -> tuple[torch.Tensor | None, list[tuple[torch.Tensor, torch.Tensor]] | None]:
    """What pool scoring reads from one batch, from one pass through the network.

    ``losses``: each image's own cls + box loss [B]. ``detections``: per image the full class
    distributions [D, C+1] (background first) of its ``top_k`` kept detections and their predicted
    classes [D] (0..C-1). Only per-image numbers leave here; the raw anchors of a batch are dropped.
    """
    images, targets, _ = batch
    batch_t, tgts, head, anchors, _ = model.forward_parts(images, targets if losses else None)
    per_image = model.per_image_losses(tgts, head, anchors) if losses else None
    kept = None
    if detections:
        probs_all = F.softmax(at_least_float32(head["cls_logits"]), dim=-1)
        keeps = _kept(
            model,
            probs_all,
            head["bbox_regression"],
            anchors,
            batch_t.image_sizes,
            top_k,
            score_threshold,
            nms_iou,
        )
        kept = [(probs_all[i, keep], probs_all[i, keep, 1:].argmax(dim=1)) for i, keep in enumerate(keeps)]
    return per_image, kept


def _kept(
    model, probs_all, regression, anchors, image_sizes, top_k, score_threshold, nms_iou
) -> list[torch.Tensor]:
    """Per image, the anchor indices of its top-k detections (``detection_scorers.top_detections``)."""
    return [
        ds.top_detections(
            probs_all[i],
            model.decode_boxes(regression[i], anchors[i], size),
            int(top_k),
            float(score_threshold),
            float(nms_iou),
        )
        for i, size in enumerate(image_sizes)
    ]


def mc_pool_outputs(
    model, batch, passes: int, top_k: int = 10, score_threshold: float = 0.1, nms_iou: float = 0.5
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image, of its ``top_k`` detections under the mean of ``passes`` MC-dropout passes: the mean
    class distributions [D, C+1] (background first) and the mean entropies [D] (nats).

    The backbone, the box head and the anchors run once; the classification head, with its dropout
    on (``mc_dropout_head``), ``passes`` times. Per anchor only the running sums of the passes'
    probabilities and entropies are kept (``PassMoments``): two anchor-sized tensors per batch,
    whatever T is. The detections are chosen as in ``pool_outputs``, on the mean prediction and the
    boxes of the (deterministic) box head.
    """
    batch_t, _, features, _ = model.backbone_pass(batch[0])
    anchors = model.net.anchor_generator(batch_t, features)
    regression = model.net.head.regression_head(features)
    moments = PassMoments()
    with mc_dropout_mode(model):
        for _ in range(int(passes)):
            moments.add(F.softmax(at_least_float32(model.mc_dropout_head()(features)), dim=-1))
    mean_probs, mean_entropy = moments.mean()
    keeps = _kept(
        model, mean_probs, regression, anchors, batch_t.image_sizes, top_k, score_threshold, nms_iou
    )
    return [(mean_probs[i, keep], mean_entropy[i, keep]) for i, keep in enumerate(keeps)]


def pooled_backbone_features(model, images: torch.Tensor) -> torch.Tensor:
    """[B, sum of channels]: every backbone feature map global-average-pooled and concatenated (what
    core-set measures distances on; the backbone's input as in every other pass)."""
    _, _, features, _ = model.backbone_pass(images)
    return torch.cat([at_least_float32(f).mean(dim=(2, 3)) for f in features], dim=1)


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
            self._outputs = pool_outputs(self.model, self.batch, **self.options)
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
        kept = mc_pool_outputs(
            self.model,
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
        """Pooled backbone features [B, D] (``pooled_backbone_features``), a pass of their own."""
        return pooled_backbone_features(self.model, self.batch[0])

    def predicted_classes(self) -> torch.Tensor:
        return ds.predicted_class([labels for _, labels in self._pool_outputs()[1]])


# (model, batch, scorer, want_classes, collector=None, **scorer options) -> (scores, classes)
score_batch = functools.partial(score_with, DetectorOutputs)


# detections drawn on the W&B images: the most confident ones, as an eye would read them
SHOWN_DETECTIONS = 10
SHOWN_SCORE = 0.3


def class_counts(names: list[str]) -> str:
    """``car x2, person``: each class once, most frequent first; ``(no objects)`` when empty."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(name if n == 1 else f"{name} x{n}" for name, n in ranked) or "(no objects)"


def item_view(datamodule, ids, images: bool = True, model=None, predictions: bool = True):
    """Per image: its class counts (``car x2, person``); with ``images``, the image (HxWxC) and
    its boxes: ground truth and, with ``predictions``, the detections of ``model`` (a round is
    logged right after its fit and selection, so the model holds that round's weights)."""
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


class BoxedItems:
    """A detection dataset's items as the report's grids show them: the image with its ground-truth
    boxes drawn and named, labelled by its class counts (e.g. ``car x2, person``)."""

    def __init__(self, datamodule):
        self.dm = datamodule

    def __len__(self) -> int:
        return len(self.dm.source)

    def image(self, i: int):
        from torchvision.utils import draw_bounding_boxes

        image, target = self.dm.source.load(int(i))
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        names = [self.label_name(int(c)) for c in target["labels"]]
        return draw_bounding_boxes(
            image, target["boxes"].float(), labels=names, colors="yellow", width=1
        ).numpy()

    def label(self, i: int) -> str:
        _, target = self.dm.source.load(int(i))
        return class_counts([self.label_name(int(c)) for c in target["labels"]])

    def label_name(self, c: int) -> str:
        return self.dm.class_names[c]


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
    accuracy_key="val/map",
    metric_titles={
        "test/map": "Test mAP",
        "test/map_50": "Test mAP@50",
        "test/loss_cls": "Test class loss",
        "test/loss_box": "Test box loss",
        "val/map": "Validation mAP",
    },
    grid_items=BoxedItems,
)
