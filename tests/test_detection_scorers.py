"""Detection scorers on hand-built predictions, with hand-computed expected values."""

from __future__ import annotations

import math

import pytest
import torch

from src.selection import detection_scorers as ds
from src.selection.scorers import entropy, least_confidence, margin

# two classes + background (column 0)
PROBS = torch.tensor(
    [
        [0.1, 0.8, 0.1],  # anchor 0: class 0 at 0.8
        [0.2, 0.7, 0.1],  # anchor 1: same box and class as 0, less sure -> suppressed
        [0.5, 0.1, 0.4],  # anchor 2: class 1 at 0.4, elsewhere
        [0.9, 0.05, 0.05],
    ]
)  # anchor 3: below the threshold
BOXES = torch.tensor(
    [[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=torch.float32
)


def test_top_detections_threshold_nms_and_k():
    assert ds.top_detections(PROBS, BOXES, top_k=10, score_threshold=0.1).tolist() == [0, 2]
    assert ds.top_detections(PROBS, BOXES, top_k=1, score_threshold=0.1).tolist() == [0]
    assert ds.top_detections(PROBS, BOXES, top_k=10, score_threshold=0.9).tolist() == []
    # NMS is class-wise: the same box predicted as another class is kept
    probs = torch.tensor([[0.1, 0.8, 0.1], [0.2, 0.1, 0.7]])
    assert ds.top_detections(probs, BOXES[:2], top_k=10, score_threshold=0.1).tolist() == [0, 1]


KEPT = [PROBS[[0, 2]], PROBS[:0]]  # image 0: two detections; image 1: none


def test_least_confidence_per_image():
    # (1 - p*) * n / (n - 1), n = 3: 0.2 * 1.5 = 0.3 and 0.5 * 1.5 = 0.75; no detection -> 1
    assert ds.image_uncertainty(KEPT, least_confidence, "mean").tolist() == pytest.approx([0.525, 1.0])
    assert ds.image_uncertainty(KEPT, least_confidence, "max").tolist() == pytest.approx([0.75, 1.0])
    assert ds.image_uncertainty(KEPT, least_confidence, "sum").tolist() == pytest.approx([1.05, 1.0])


def test_margin_per_image():
    # 1 - (p1 - p2): 1 - 0.7 = 0.3 and 1 - 0.1 = 0.9
    assert ds.image_uncertainty(KEPT, margin, "mean").tolist() == pytest.approx([0.6, 1.0])
    assert ds.image_uncertainty(KEPT, margin, "max").tolist() == pytest.approx([0.9, 1.0])


def test_entropy_per_image():
    h0 = -(0.1 * math.log(0.1) * 2 + 0.8 * math.log(0.8)) / math.log(3)
    h1 = -(0.5 * math.log(0.5) + 0.1 * math.log(0.1) + 0.4 * math.log(0.4)) / math.log(3)
    assert ds.image_uncertainty(KEPT, entropy, "mean").tolist() == pytest.approx([(h0 + h1) / 2, 1.0])
    assert ds.image_uncertainty(KEPT, entropy, "sum").tolist() == pytest.approx([h0 + h1, 1.0])


def test_predicted_class_and_bad_aggregate():
    labels = [torch.tensor([1, 0, 1]), torch.tensor([0, 1]), torch.tensor([], dtype=torch.int64)]
    assert ds.predicted_class(labels).tolist() == [1, 0, -1]
    with pytest.raises(ValueError, match="scorer.aggregate='median'"):
        ds.image_uncertainty(KEPT, entropy, "median")
