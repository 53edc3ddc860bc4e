"""Torchvision's ImageNet backbone weights for the detectors, from the local torch hub cache only.

Nothing downloads at run time: a backbone weights name (``model.module.weights_backbone``)
is accepted only when torchvision's file for it already lies in the hub cache
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``);
otherwise the run stops before any data is touched with one line saying which file
is missing, where it goes and how to get it. The file is read with
``weights_only=True`` first, so a cache file that holds anything but tensors is
refused before torchvision loads it.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision.models import MobileNet_V3_Large_Weights, VGG16_Weights

from src.errors import UserError

# the backbone weights enum of each detector architecture (what torchvision's builders accept)
BACKBONE_WEIGHTS = {
    "ssd300_vgg16": VGG16_Weights,
    "ssdlite320_mobilenet_v3_large": MobileNet_V3_Large_Weights,
}
# torchvision's classifier builders that fetch those weights (for the how-to line)
_BUILDERS = {"ssd300_vgg16": "vgg16", "ssdlite320_mobilenet_v3_large": "mobilenet_v3_large"}
# ``imagenet``: the backbone weights torchvision's own SSD builders default to (for VGG the
# features-only set whose input normalisation SSD300 uses, not VGG16_Weights.DEFAULT)
IMAGENET = {"ssd300_vgg16": "IMAGENET1K_FEATURES", "ssdlite320_mobilenet_v3_large": "IMAGENET1K_V1"}


def hub_checkpoints_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _resolve(arch: str, name: str):
    enum = BACKBONE_WEIGHTS.get(arch)
    if enum is None:
        raise UserError(
            f"model.module.arch={arch!r} has no known backbone weights; allowed: "
            f"{', '.join(BACKBONE_WEIGHTS)}"
        )
    try:
        return enum.verify(IMAGENET[arch] if name == "imagenet" else str(name))
    except (KeyError, ValueError):
        allowed = ", ".join(["imagenet", "DEFAULT", *(w.name for w in enum)])
        raise UserError(
            f"model.module.weights_backbone={name!r} is not a weights name of {arch}'s backbone; "
            f"allowed: {allowed}, or null (seeded random init)"
        ) from None


def backbone_weights_file(arch: str, name: str | None) -> Path | None:
    """The cache file of the named backbone weights (None for null); a UserError when absent."""
    if name is None:
        return None
    weights = _resolve(arch, name)
    path = hub_checkpoints_dir() / os.path.basename(urlparse(weights.url).path)
    if not path.is_file():
        raise UserError(
            f"model.module.weights_backbone={name}: {path.name} ({arch}'s ImageNet backbone) is not in the torch "
            f"hub cache {path.parent} and nothing downloads at run time; on a machine with internet run "
            f"python -c \"import torchvision; torchvision.models.{_BUILDERS[arch]}(weights='{weights.name}')\" "
            f"and copy the file there (or point TORCH_HOME at a folder holding hub/checkpoints/{path.name}), "
            f"or pass model.module.weights_backbone=null"
        )
    return path


def checked_backbone_weights(arch: str, name: str | None):
    """The torchvision weights enum member for ``name`` once its cache file proved to be a
    plain state dict of tensors (None for null), ready for torchvision's builder."""
    path = backbone_weights_file(arch, name)
    if path is None:
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable or non-tensor content: the user's file, one line
        raise UserError(
            f"model.module.weights_backbone={name}: {path} is not a plain torch state dict "
            f"({type(err).__name__}); delete it and fetch it again"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"model.module.weights_backbone={name}: {path} is not a state dict of tensors")
    _check_fits(arch, name, path, state)
    return _resolve(arch, name)


def _check_fits(arch: str, name: str, path: Path, state: dict) -> None:
    """Keys and shapes against torchvision's classifier (built on the meta device: no memory, no init)."""
    import torchvision

    with torch.device("meta"):
        own = getattr(torchvision.models, _BUILDERS[arch])().state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        first = (missing or unexpected or shapes)[0]
        raise UserError(
            f"model.module.weights_backbone={name}: {path} does not fit {_BUILDERS[arch]} "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} mis-shaped keys, "
            f"e.g. {first}); delete it and fetch it again"
        )
