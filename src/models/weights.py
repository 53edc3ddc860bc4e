"""Weights from files, and the in-memory snapshot every active-learning round starts from.

The starting weights of a run are built once: the network constructed under a
seeded generator (so a random init is reproducible), with torchvision weights when
the model names them, optionally overwritten from a checkpoint file
(``model.init.checkpoint``) or a named baseline (``baseline=<name>``). A
``WeightSnapshot`` of that state is then kept in memory; ``restore`` copies it back
into the module in place, so no file is read between rounds and optimiser-free
tensors (BatchNorm statistics) are restored too.

Weight files come from other people: they are read with ``weights_only=True``, so
nothing in them is unpickled into objects.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from src.errors import UserError


def load_checkpoint_state(path: str | Path, key: str) -> dict[str, torch.Tensor]:
    """A state dict from a Lightning checkpoint (``state_dict`` key) or a plain saved state dict.

    ``key`` is the config key the path came from; every message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{key}={path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable or unsafe file: torch raises many types here
        raise UserError(f"{key}={path}: not a readable torch weights file ({type(err).__name__})") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{key}={path}: expected a state dict of tensors")
    return obj


def load_into(
    module: nn.Module, checkpoint: str | Path, key: str = "model.init.checkpoint", new_head: bool = False
) -> list[str]:
    """Overwrite ``module``'s weights from a file; a file that does not fit is a UserError naming ``key``.

    ``new_head``: a file whose only difference is the shape of the class head (another class
    count; the module names its head in ``head_prefixes()``) loads everything else and leaves
    the head as the module was built (its seeded init): thesis 4.3.3's baseline as backbone.
    Returns the keys left at their init (empty when the whole file loaded).
    """
    state = load_checkpoint_state(checkpoint, key)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape_differs = [k for k, v in own.items() if k in state and state[k].shape != v.shape]
    heads = (
        tuple(f"{p}." for p in module.head_prefixes())
        if new_head and hasattr(module, "head_prefixes")
        else ()
    )
    kept = [k for k in own if heads and k.startswith(heads)] if shape_differs else []
    if (
        heads
        and shape_differs
        and not missing
        and not unexpected
        and all(k.startswith(heads) for k in shape_differs)
    ):
        module.load_state_dict({k: v for k, v in state.items() if k not in kept}, strict=False)
        return kept
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shape_differs]
    if missing or unexpected or mismatched:
        detail = "; ".join(
            f"{name}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
            for name, items in (("missing", missing), ("unexpected", unexpected), ("shape", mismatched))
            if items
        )
        raise UserError(f"{key}={checkpoint}: does not fit the model ({detail})")
    module.load_state_dict(state)
    return []


class WeightSnapshot:
    """An in-memory copy of a module's state, restorable bitwise."""

    def __init__(self, module: nn.Module):
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def restore(self, module: nn.Module) -> None:
        with torch.no_grad():
            for key, value in module.state_dict().items():
                value.copy_(self.state[key])
