"""Classification networks: torchvision's models by name, plus a small CNN for the CPU default."""
from __future__ import annotations

import torch
from torch import nn

TORCHVISION_PREFIX = "torchvision/"


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head: trains on 28x28 digits in seconds on a CPU."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32, dropout: float = 0.25):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(3),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * 9, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the last Linear layer for one with ``num_classes`` outputs (resnet.fc, vgg.classifier[-1], ...)."""
    parent, name, last = None, None, None
    for module_name, module in model.named_modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.Linear):
                parent, name, last = module, child_name, child
    if last is None:
        raise ValueError(f"{type(model).__name__} has no Linear head to replace")
    if last.out_features != num_classes:
        setattr(parent, name, nn.Linear(last.in_features, num_classes))
    return model


def _pretrained_state(name: str, weights: str, tv_weights, weights_file, download: bool) -> dict:
    """The state dict of torchvision weights: from ``weights_file`` when given, else from the
    torch hub cache, downloaded into it first when ``download`` allows."""
    from pathlib import Path

    from src.models.baseline import load_checkpoint_state

    if weights_file:
        path = Path(str(weights_file)).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model.module.net.weights_file={path}: no such file (a saved state dict of "
                                    f"torchvision's {name} with {weights} weights)")
        return load_checkpoint_state(path)
    file_name = tv_weights.url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    options = (f"let torchvision download {tv_weights.url} into {cached.parent} "
               f"(model.module.net.download=true, needs network), or put {file_name} there yourself, "
               f"or set model.module.net.weights_file=<a saved state dict of {name}>")
    if not cached.is_file() and not download:
        raise FileNotFoundError(f"model.module.net.weights={weights}: {cached} does not exist and downloading "
                                f"is off; {options}")
    try:
        return tv_weights.get_state_dict(progress=False)
    except Exception as err:  # network or cache failure: say what to do instead
        raise FileNotFoundError(f"model.module.net.weights={weights}: could not load torchvision's {name} weights "
                                f"({type(err).__name__}: {err}); {options}") from err


def build_network(name: str, num_classes: int, in_channels: int, weights: str | None = None, **kwargs) -> nn.Module:
    """``small_cnn`` or any torchvision classification model name (resnet18, vgg16, ...).

    ``weights`` names torchvision weights ('DEFAULT', 'IMAGENET1K_V1'); they are
    loaded (and downloaded once into the torch hub cache unless ``download=False``,
    or read from ``weights_file``) here, and the head is replaced when the class
    count differs from the weights'.
    """
    if name == "small_cnn":
        if weights:
            raise ValueError("model.net.weights: small_cnn has no torchvision weights; use model.baseline")
        return SmallCNN(num_classes, in_channels, **kwargs)
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ValueError(f"model.net.name={name!r} is not small_cnn or a torchvision classification model "
                         f"(e.g. resnet18, vgg16, mobilenet_v3_small)")
    weights_file = kwargs.pop("weights_file", None)
    download = bool(kwargs.pop("download", True))
    if weights:
        try:
            tv_weights = torchvision.models.get_model_weights(name)[weights]
        except KeyError:
            allowed = [w.name for w in torchvision.models.get_model_weights(name)] + ["DEFAULT"]
            raise ValueError(f"model.net.weights={weights!r} is not a weight of {name}; allowed: {', '.join(allowed)}")
        state = _pretrained_state(name, weights, tv_weights, weights_file, download)
        n_out = len(tv_weights.meta["categories"])
        # built on the meta device: a random init of VGG-16's 138M parameters would be
        # overwritten at once, and costs seconds
        with torch.device("meta"):
            net = torchvision.models.get_model(name, weights=None, num_classes=n_out, **kwargs)
        net.load_state_dict(state, assign=True)
        if any(t.is_meta for t in list(net.parameters()) + list(net.buffers())):   # state without some tensor
            net = torchvision.models.get_model(name, weights=None, num_classes=n_out, **kwargs)
            net.load_state_dict(state)
        return _replace_head(net, num_classes)
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
