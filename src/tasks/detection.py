"""Object detection: SSDDetector on a DetectionDataModule."""
from __future__ import annotations

from src.selection import detection_scorers as ds
from src.selection.scorers import Scorer
from src.tasks import Task


def score_batch(model, batch, scorer: Scorer, want_classes: bool, top_k: int = 10, score_threshold: float = 0.1,
                aggregate: str = "mean", nms_iou: float = 0.5):
    """(one score per image, most frequent predicted class per image or None).

    ``loss``: the image's own cls + box loss. A probability scorer: its uncertainty of
    each of the image's top-k detections, aggregated (mean, max, sum); no detection -> 1.
    """
    want_losses = scorer.needs == "loss"
    want_detections = scorer.needs == "probabilities" or want_classes
    if not (want_losses or want_detections):
        return None, None
    losses, kept = model.pool_outputs(batch, losses=want_losses, detections=want_detections, top_k=top_k,
                                      score_threshold=score_threshold, nms_iou=nms_iou)
    scores = losses.double() if want_losses else None
    if scorer.needs == "probabilities":
        scores = ds.image_uncertainty([probs for probs, _ in kept], scorer.of_probabilities, aggregate)
    classes = ds.predicted_class([labels for _, labels in kept]) if want_classes else None
    return scores, classes


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
    overlays = [{"ground_truth": [(*box.tolist(), int(c)) for box, c in zip(target["boxes"], target["labels"])],
                 "predictions": found} for (_, target), found in zip(loaded, detections)]
    pictures = [image.permute(1, 2, 0).numpy() if image.shape[0] == 3 else image[0].numpy() for image, _ in loaded]
    return labels, pictures, (names, overlays)


def _detections(model, images) -> list[list[tuple]]:
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        found = model(torch.stack(images).to(model.device))
    model.train(was_training)
    return [[(*box.tolist(), int(c), float(s)) for box, c, s in
             zip(d["boxes"][:SHOWN_DETECTIONS], d["labels"][:SHOWN_DETECTIONS], d["scores"][:SHOWN_DETECTIONS])
             if s >= SHOWN_SCORE] for d in found]


TASK = Task(
    name="detection",
    module_class="src.models.detector.SSDDetector",
    datamodule_class="src.data.detection.datamodule.DetectionDataModule",
    score_batch=score_batch,
    scorer_options=("top_k", "score_threshold", "aggregate", "nms_iou"),
    headline_metric="test/map",
    console_columns=(("mAP", "test/map", "{:.4f}"), ("mAP@.5", "test/map_50", "{:.4f}")),
    item_view=item_view,
)
