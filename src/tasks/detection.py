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


def item_view(datamodule, ids):
    """Detection items have no single class name or plain image panel (yet)."""
    return None, None


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
