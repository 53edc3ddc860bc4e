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


def build_network(name: str, num_classes: int, in_channels: int, weights: str | None = None, **kwargs) -> nn.Module:
    """``small_cnn`` or any torchvision classification model name (resnet18, vgg16, ...).

    ``weights`` names torchvision weights ('DEFAULT', 'IMAGENET1K_V1'); they are
    loaded (and downloaded once into the torch hub cache) here, and the head is
    replaced when the class count differs from the weights'.
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
    if weights:
        try:
            tv_weights = torchvision.models.get_model_weights(name)[weights]
        except KeyError:
            allowed = [w.name for w in torchvision.models.get_model_weights(name)] + ["DEFAULT"]
            raise ValueError(f"model.net.weights={weights!r} is not a weight of {name}; allowed: {', '.join(allowed)}")
        try:
            net = torchvision.models.get_model(name, weights=tv_weights, **kwargs)
        except Exception as err:  # network or cache failure: say what to do instead
            raise RuntimeError(
                f"model.net.weights={weights}: could not load torchvision weights for {name} ({err}); "
                f"put {tv_weights.url.rsplit('/', 1)[-1]} into $TORCH_HOME/hub/checkpoints, or use "
                "model.baseline.source=checkpoint model.baseline.path=<file>") from err
        return _replace_head(net, num_classes)
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
