"""Per-image scores for object detection: pure tensor functions, no Lightning.

A detector yields thousands of anchors per image. Per image we keep the ``top_k``
most confident detections (confidence = highest foreground probability, above
``score_threshold``, after class-wise non-maximum suppression) and score each of
them with the classification uncertainty of its *full* class distribution,
background included: a box the model is unsure is an object at all is uncertain
too. The per-detection scores are aggregated into one per image (mean by default;
max or sum). An image without any detection gets the maximal score 1, as in the
thesis' pipeline: the model finds nothing there, so it is worth labelling.

MC dropout (``scorer=bald | mc_entropy``) follows the same recipe: the top-k detections
are chosen on the mean of the T passes' class distributions (the MC predictive), each is
scored by its BALD or MC entropy over its full distribution (background included,
divided by ln(C+1) like the entropy above), and the per-detection scores are aggregated
by ``aggregate_images`` in the same way, no detection -> 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.ops import batched_nms

from src.tensors import at_least_float32

AGGREGATES = ("mean", "max", "sum")
# Candidates that enter NMS per detection kept (at least NMS_MIN_CANDIDATES): overlapping
# anchors of one object suppress each other, so ten per kept box leave top_k survivors.
NMS_CANDIDATES_PER_KEPT, NMS_MIN_CANDIDATES = 10, 100
NO_DETECTION_SCORE = 1.0


def top_detections(
    probs: torch.Tensor, boxes: torch.Tensor, top_k: int, score_threshold: float, nms_iou: float = 0.5
) -> torch.Tensor:
    """Indices of the kept detections of one image, most confident first.

    ``probs`` [A, C+1] softmax over background (column 0) and the C classes;
    ``boxes`` [A, 4] the decoded xyxy boxes of the same anchors.
    """
    conf, cls = probs[:, 1:].max(dim=1)
    candidates = torch.nonzero(conf > score_threshold).squeeze(1)
    if candidates.numel() == 0:
        return candidates
    # NMS over all anchors is the expensive part; a few times top_k candidates suffice for top_k survivors
    cap = min(candidates.numel(), max(NMS_CANDIDATES_PER_KEPT * top_k, NMS_MIN_CANDIDATES))
    candidates = candidates[conf[candidates].topk(cap).indices]
    keep = batched_nms(boxes[candidates].float(), conf[candidates].float(), cls[candidates], nms_iou)
    return candidates[keep[:top_k]]


def aggregate(values: torch.Tensor, how: str) -> float:
    """One image's detection scores -> its score; no detection -> 1."""
    if values.numel() == 0:
        return NO_DETECTION_SCORE
    if how == "mean":
        return float(values.mean())
    if how == "max":
        return float(values.max())
    if how == "sum":
        return float(values.sum())
    raise ValueError(f"scorer.aggregate={how!r}; allowed: {', '.join(AGGREGATES)}")


def image_uncertainty(
    det_probs: list[torch.Tensor], of_probabilities: Callable[[torch.Tensor], torch.Tensor], how: str = "mean"
) -> torch.Tensor:
    """One score per image from the class distributions [D_i, C+1] of its kept detections.

    ``of_probabilities`` is a classification uncertainty ([N, C] probabilities -> N scores),
    applied to each detection's full distribution, background included.
    """
    return aggregate_images(
        [of_probabilities(at_least_float32(p)) if p.shape[0] else p.new_zeros(0) for p in det_probs], how
    )


def aggregate_images(per_detection: list[torch.Tensor], how: str = "mean") -> torch.Tensor:
    """One score per image [B] (float64) from each image's per-detection scores (``aggregate``)."""
    return torch.tensor([aggregate(values, how) for values in per_detection], dtype=torch.float64)


def predicted_class(det_labels: list[torch.Tensor], empty: int = -1) -> torch.Tensor:
    """Most frequent predicted class per image (lowest index on ties); ``empty`` without detections."""
    return torch.tensor(
        [int(torch.bincount(lab).argmax()) if lab.numel() else empty for lab in det_labels], dtype=torch.int64
    )
