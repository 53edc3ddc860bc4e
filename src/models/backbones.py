"""Classification networks: torchvision's models by name, plus a small CNN for the CPU default."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from src.errors import UserError
from src.models.weights import load_checkpoint_state

TORCHVISION_PREFIX = "torchvision/"


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head: trains on 28x28 digits in seconds on a CPU."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32, dropout: float = 0.25):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(3),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * 9, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the last Linear layer for one with ``num_classes`` outputs (resnet.fc, vgg.classifier[-1], ...)."""
    parent, name, last = None, None, None
    for _, module in model.named_modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.Linear):
                parent, name, last = module, child_name, child
    if last is None:
        raise UserError(
            f"{type(model).__name__} has no Linear head to replace with one of {num_classes} classes"
        )
    if last.out_features != num_classes:
        setattr(parent, name, nn.Linear(last.in_features, num_classes))
    return model


def _pretrained_state(name: str, weights: str, tv_weights, weights_file, download: bool, key: str) -> dict:
    """The state dict of torchvision weights: from ``weights_file`` when given, else from the
    torch hub cache, downloaded into it first when ``download`` allows. Files are read with
    ``weights_only=True`` (torchvision's own loader would unpickle a hand-placed file)."""
    if weights_file:
        path = Path(str(weights_file)).expanduser()
        if not path.is_file():
            raise UserError(
                f"{key}.weights_file={path}: no such file (a saved state dict of "
                f"torchvision's {name} with {weights} weights)"
            )
        return load_checkpoint_state(path, f"{key}.weights_file")
    file_name = tv_weights.url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    options = (
        f"let torchvision download {tv_weights.url} into {cached.parent} "
        f"({key}.download=true, needs network), or put {file_name} there yourself, "
        f"or set {key}.weights_file=<a saved state dict of {name}>"
    )
    if cached.is_file():
        return load_checkpoint_state(cached, f"{key}.weights={weights}: the hub cache file")
    if not download:
        raise UserError(f"{key}.weights={weights}: {cached} does not exist and downloading is off; {options}")
    try:
        return torch.hub.load_state_dict_from_url(
            tv_weights.url, progress=False, check_hash=True, weights_only=True
        )
    except Exception as err:  # network or cache failure: say what to do instead
        raise UserError(
            f"{key}.weights={weights}: could not load torchvision's {name} weights "
            f"({type(err).__name__}: {err}); {options}"
        ) from err


def build_network(
    name: str,
    num_classes: int,
    in_channels: int,
    weights: str | None = None,
    key: str = "model.module.net",
    **kwargs,
) -> nn.Module:
    """``small_cnn`` or any torchvision classification model name (resnet18, vgg16, ...).

    ``weights`` names torchvision weights ('DEFAULT', 'IMAGENET1K_V1'); they are
    loaded (and downloaded once into the torch hub cache unless ``download=False``,
    or read from ``weights_file``) here, and the head is replaced when the class
    count differs from the weights'.
    """
    if kwargs.pop("library", "torchvision") == "timm":
        from src.models.timm_nets import build_timm_network

        if weights:
            raise UserError(f"{key}.weights={weights!r}: a timm model takes {key}.pretrained=true|false")
        return build_timm_network(name, num_classes, key=key, **kwargs)
    if name == "small_cnn":
        if weights:
            raise UserError(
                f"{key}.weights={weights!r}: small_cnn has no torchvision weights; "
                "start from a file with model.init.checkpoint instead"
            )
        return SmallCNN(num_classes, in_channels, **kwargs)
    import torchvision  # here, not at the top: the small-CNN default never needs it

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise UserError(
            f"{key}.name={name!r} is not small_cnn or a torchvision classification model "
            f"(e.g. resnet18, vgg16, mobilenet_v3_small)"
        )
    weights_file = kwargs.pop("weights_file", None)
    download = bool(kwargs.pop("download", True))
    if weights:
        try:
            tv_weights = torchvision.models.get_model_weights(name)[weights]
        except KeyError:
            allowed = [w.name for w in torchvision.models.get_model_weights(name)] + ["DEFAULT"]
            raise UserError(
                f"{key}.weights={weights!r} is not a weight of {name}; allowed: {', '.join(allowed)}"
            ) from None
        state = _pretrained_state(name, weights, tv_weights, weights_file, download, key)
        n_out = len(tv_weights.meta["categories"])
        # built on the meta device: a random init of VGG-16's 138M parameters would be
        # overwritten at once, and costs seconds
        with torch.device("meta"):
            net = torchvision.models.get_model(name, weights=None, num_classes=n_out, **kwargs)
        net.load_state_dict(state, assign=True)
        if any(t.is_meta for t in list(net.parameters()) + list(net.buffers())):  # state without some tensor
            net = torchvision.models.get_model(name, weights=None, num_classes=n_out, **kwargs)
            net.load_state_dict(state)
        return _replace_head(net, num_classes)
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
