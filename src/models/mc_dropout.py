"""MC dropout (Gal & Ghahramani 2016): stochastic forward passes at inference time.

``mc_dropout_mode(model)`` puts the whole network in eval mode and then only its
dropout layers back in train mode, so BatchNorm keeps using its running statistics
(a train-mode BatchNorm would normalise each pool batch by its own statistics and
make the passes depend on which items share a batch), while every pass draws fresh
dropout masks.

``add_dropout_before_head(net, p)`` gives a network without dropout (resnet18, the
torchvision ResNets and most detectors' heads) the dropout MC dropout needs: a
``Dropout(p)`` applied to the input of its last ``nn.Linear`` (``resnet.fc``,
``vgg.classifier[6]``). The dropout is registered as a child module ``mc_dropout`` of
that Linear and applied by a forward pre-hook, so the network's ``state_dict`` keys are
unchanged (``fc.weight`` stays ``fc.weight``): checkpoints and pretrained weights
load before or after the insertion alike. During training the added dropout is active
like any other dropout layer, i.e. the network is trained with it, as MC dropout
assumes. ``head=`` names another module to put it before: an SSD detector's
classification head (``SSDDetector.mc_dropout_head``), whose input is the list of
multi-scale feature maps; each map then gets its own mask, and the box-regression head
beside it sees the maps without dropout, so the boxes stay those of the deterministic
network while the class probabilities vary from pass to pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from src.tensors import at_least_float32

ADDED_DROPOUT_NAME = "mc_dropout"


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """Every dropout module (Dropout, Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout)."""
    return [m for m in model.modules() if isinstance(m, _DropoutNd)]


def enable_mc_dropout(model: nn.Module) -> int:
    """Eval mode everywhere, then train mode for dropout only; returns the number of dropout layers."""
    model.eval()
    layers = dropout_layers(model)
    for layer in layers:
        layer.train()
    return len(layers)


@contextmanager
def mc_dropout_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``enable_mc_dropout`` for the duration of the block, every module's mode restored after."""
    modes = {m: m.training for m in model.modules()}
    if enable_mc_dropout(model) == 0:
        for m, mode in modes.items():
            m.train(mode)
        raise ValueError(
            f"{type(model).__name__} has no dropout layer, so its passes would all be equal; "
            "add one with add_dropout_before_head(net, p)"
        )
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.train(mode)


def mc_softmax(model: nn.Module, x: torch.Tensor, passes: int) -> torch.Tensor:
    """Softmax of ``passes`` stochastic forward passes of one batch: [T, B, C] (float32, float64 for a float64 model).

    Call it inside ``mc_dropout_mode(model)`` and ``torch.inference_mode()``; it does not
    change modes itself so that a pool loop sets them once, not per batch.
    """
    if passes < 1:
        raise ValueError(f"passes={passes} must be >= 1")
    return torch.stack([torch.softmax(at_least_float32(model(x)), dim=1) for _ in range(passes)])


def _apply_added_dropout(module: nn.Module, args: tuple) -> tuple:
    # a module-level function (not a closure) so the network still deep-copies and pickles
    dropout = getattr(module, ADDED_DROPOUT_NAME)
    first = args[0]
    if isinstance(first, (list, tuple)):  # a detection head's list of feature maps: one mask each
        return (type(first)(dropout(x) for x in first), *args[1:])
    return (dropout(first), *args[1:])


def last_linear(model: nn.Module) -> nn.Linear:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to put dropout before")
    return last


def add_dropout_before_head(model: nn.Module, p: float, head: nn.Module | None = None) -> nn.Module:
    """Insert ``Dropout(p)`` on the input of ``head``, by default the last ``nn.Linear`` (in module
    order); returns ``model``.

    Refuses a network that already has dropout (MC dropout then uses the existing layers;
    adding more would change a model the user chose) and p outside (0, 1).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout p={p} must be in (0, 1)")
    existing = dropout_layers(model)
    if existing:
        raise ValueError(
            f"{type(model).__name__} already has {len(existing)} dropout layer(s); "
            "MC dropout uses them as they are"
        )
    head = last_linear(model) if head is None else head
    head.add_module(ADDED_DROPOUT_NAME, nn.Dropout(p).train(head.training))  # in the network's current mode
    head.register_forward_pre_hook(_apply_added_dropout)
    return model
