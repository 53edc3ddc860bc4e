"""Baseline weights: the state every active-learning round starts from.

The baseline is built once: the network is constructed under a seeded generator
(so a random init is reproducible), with torchvision weights when the model names
them, and optionally overwritten from a checkpoint file. Its state is then kept in
memory; ``reset`` copies it back into the module in place, so no file is read
between rounds and optimiser-free tensors (BatchNorm statistics) are restored too.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def load_checkpoint_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a Lightning checkpoint (``state_dict`` key) or a plain saved state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.baseline.checkpoint={path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"model.baseline.checkpoint={path}: not a readable torch checkpoint ({err})") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"model.baseline.checkpoint={path}: expected a state dict of tensors")
    return obj


class Baseline:
    """An in-memory copy of a module's state, restorable bitwise."""

    def __init__(self, module: nn.Module):
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def reset(self, module: nn.Module) -> None:
        with torch.no_grad():
            for key, value in module.state_dict().items():
                value.copy_(self.state[key])


def load_into(module: nn.Module, checkpoint: str | Path) -> None:
    state = load_checkpoint_state(checkpoint)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                  if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        detail = "; ".join(f"{name}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
                           for name, items in (("missing", missing), ("unexpected", unexpected),
                                               ("shape", mismatched)) if items)
        raise ValueError(f"model.baseline.checkpoint={checkpoint}: does not fit the model ({detail})")
    module.load_state_dict(state)
