"""Tensor helpers that every layer may use (no project imports)."""

from __future__ import annotations

import torch


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or unchanged when it is float64.

    Half-precision outputs (mixed precision) are scored in float32; a float64 model
    (``+trainer.precision=64-true``) keeps float64, so that scores which differ in the
    9th digit are not made equal, or reordered, by rounding them to float32.
    """
    return t if t.dtype == torch.float64 else t.float()
