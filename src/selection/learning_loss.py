"""Learning loss (Yoo & Kweon, CVPR 2019): a small module that predicts the target loss.

Module (their Fig. 2): each chosen feature map of the target network goes through
global average pooling, a fully connected layer and a ReLU; the per-map vectors are
concatenated and one fully connected layer maps them to a scalar, the predicted loss
l_hat. Their width per map is 128.

Training loss (their eq. 2-5). A mini-batch of B items is split into B/2 pairs
p = (i, B-1-i), i < B/2 (the first half against the reversed second half, the
pairing of the authors' release; with an odd B the middle item is left out; the
batch is shuffled, so which split is used does not matter), and for each pair
    L_loss(p) = max(0, -A(l_i, l_j) (l_hat_i - l_hat_j) + xi),   A = +1 if l_i > l_j else -1,
with the margin xi = 1. The batch objective is
    (1/B) sum_i L_target(i) + lambda * (2/B) sum_p L_loss(p)
i.e. the target loss averaged over the batch plus lambda times the ranking loss
averaged over the pairs; lambda = 1 in the paper. The true losses l are the target
model's per-item losses, used as constants (no gradient flows into the target through
them); whether the module's gradient reaches the target network's features is the
caller's choice (the paper stops it after 120 of 200 epochs, by detaching the
features handed to the module).

Pure torch: no Lightning, no I/O. The pool score is l_hat itself (higher = selected first).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LossPredictionModule(nn.Module):
    """Feature maps [B, C_k, H_k, W_k] (k = 1..K) -> predicted loss [B]."""

    def __init__(self, in_channels: Sequence[int], width: int = 128):
        super().__init__()
        if not in_channels:
            raise ValueError("the loss prediction module needs at least one feature map")
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, width), nn.ReLU())
            for c in in_channels
        )
        self.head = nn.Linear(width * len(in_channels), 1)

    def forward(self, feature_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(feature_maps) != len(self.branches):
            raise ValueError(f"expected {len(self.branches)} feature maps, got {len(feature_maps)}")
        pooled = [branch(fmap) for branch, fmap in zip(self.branches, feature_maps)]
        return self.head(torch.cat(pooled, dim=1)).squeeze(1)


def loss_ranking_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """The pairwise margin ranking loss averaged over the floor(B/2) pairs (i, B-1-i)."""
    if predicted.shape != target.shape or predicted.ndim != 1:
        raise ValueError(
            f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} losses must both be [B]"
        )
    half = predicted.shape[0] // 2
    if half == 0:
        raise ValueError("the ranking loss needs a mini-batch of at least 2 items (one pair)")
    target = target.detach()
    partner = torch.arange(predicted.shape[0] - 1, predicted.shape[0] - 1 - half, -1)
    pred_diff = predicted[:half] - predicted[partner]
    sign = torch.where(target[:half] > target[partner], 1.0, -1.0).to(predicted.dtype)
    return torch.clamp(margin - sign * pred_diff, min=0.0).mean()


def learning_loss_objective(
    per_item_target_loss: torch.Tensor,
    predicted_loss: torch.Tensor,
    weight: float = 1.0,
    margin: float = 1.0,
    target_loss: torch.Tensor | None = None,
) -> torch.Tensor:
    """mean_i L_target(i) + weight * ranking loss: the paper's joint objective (weight = lambda).

    ``target_loss`` replaces the first term where the target model normalises its batch loss
    otherwise (SSD: the sum over images / the batch's positive anchors); the ranking term is
    always on the per-item losses.
    """
    target = per_item_target_loss.mean() if target_loss is None else target_loss
    return target + weight * loss_ranking_loss(predicted_loss, per_item_target_loss, margin)
