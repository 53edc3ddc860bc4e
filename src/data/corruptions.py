"""Deterministic image corruptions and rotations for the Noisy and Hard recipes.

Every corruption is drawn from a generator seeded by (seed, item id), so an image
has the same pixels every epoch, every round and every run with the same seed, and
it does not depend on which other items are in the batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from src.errors import UserError

# Severity 1..5, as fractions of the 0..255 range (ImageNet-C's gaussian-noise scale).
_NOISE_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)
_SALT_PEPPER = (0.01, 0.02, 0.03, 0.05, 0.07)
_BLUR_SIGMA = (0.4, 0.6, 0.8, 1.0, 1.5)
CORRUPTIONS = ("gaussian_noise", "salt_pepper", "gaussian_blur")


def _item_rng(seed: int, item_id: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(item_id)]))


def corrupt(images: np.ndarray, ids: np.ndarray, kind: str, severity: int, seed: int) -> np.ndarray:
    """Corrupted copy of uint8 images [N, C, H, W]; item i's noise depends only on (seed, ids[i])."""
    if kind not in CORRUPTIONS:
        raise UserError(f"dataset.corruption.kind={kind!r} is not known; allowed: {', '.join(CORRUPTIONS)}")
    if not 1 <= severity <= 5:
        raise UserError(f"dataset.corruption.severity={severity} must be an integer in 1..5")
    out = np.empty_like(images)
    if kind == "gaussian_blur":
        for start in range(0, len(images), 256):  # chunks: bounded float memory at 224 px
            block = torch.from_numpy(np.ascontiguousarray(images[start : start + 256])).float()
            blurred = _gaussian_blur(block, _BLUR_SIGMA[severity - 1])
            out[start : start + 256] = blurred.round().clamp(0, 255).to(torch.uint8).numpy()
        return out
    for i, item_id in enumerate(ids):
        rng = _item_rng(seed, item_id)
        x = images[i].astype(np.float32)
        if kind == "gaussian_noise":
            x = x + rng.normal(0.0, 255.0 * _NOISE_SIGMA[severity - 1], x.shape)
        else:  # salt_pepper
            u = rng.random(x.shape[1:])
            p = _SALT_PEPPER[severity - 1]
            x[:, u < p / 2] = 0.0
            x[:, u > 1 - p / 2] = 255.0
        out[i] = np.clip(np.round(x), 0, 255).astype(np.uint8)
    return out


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def rotate(images: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Rotate each uint8 image [N, C, H, W] by its own angle (bilinear, border replicated)."""
    x = torch.from_numpy(images).float()
    theta = torch.from_numpy(np.deg2rad(np.asarray(degrees, dtype=np.float64))).float()
    cos, sin = torch.cos(theta), torch.sin(theta)
    zeros = torch.zeros_like(cos)
    affine = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).numpy()
