"""``scorer=learning_loss``: the loss-prediction module (Yoo & Kweon 2019), trained jointly.

Before the starting weights are kept, a ``LossPredictionModule`` is attached to the
model as ``model.loss_prediction`` (so every round restores, trains and scores it with
the network, and a resumed run rebuilds it from the same seed) and fed by forward hooks
on the chosen layers of ``model.net``: ``layers`` names them (dotted module names, e.g.
[layer1, layer2, layer3, layer4] for a ResNet, the paper's choice, which is also what
null picks when the network has such stages); a model may name its own default
(``default_feature_taps``: the SSD detector's backbone, whose output is its six
multi-scale feature maps, the taps of the paper's SSD experiment); otherwise null taps
the input of the last Linear layer, the penultimate features, as a 1 x 1 map. A tapped
module whose output is a dict or list of maps contributes each of them.

The model's training step calls ``objective(model, per_item_losses, batch_loss)``, the
paper's joint objective (``src.selection.learning_loss.learning_loss_objective``):
the model's own batch loss (classification: the mean cross-entropy; SSD: torchvision's
loss, normalised by the batch's positive anchors) plus ``weight`` times the pair ranking
loss with margin ``margin`` on the per-item losses (SSD: each image's own loss, the one
``scorer=loss`` ranks by), taken as constants. From epoch ``detach_after_epoch`` on
(null: never) the module's gradient no longer reaches the network (the paper stops it
after 120 of 200 epochs). The pool score is the predicted loss, highest first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from src.errors import UserError
from src.models.mc_dropout import last_linear
from src.selection.learning_loss import LossPredictionModule, learning_loss_objective
from src.selection.scorers import Scorer


class FeatureTaps:
    """The outputs of the tapped modules in the latest forward pass, as [B, C, H, W] maps
    (``maps``; a module that outputs a dict or list of maps gives each, in order)."""

    def __init__(self, modules: list[nn.Module], inputs: bool):
        self.outputs: list = [None] * len(modules)
        for i, module in enumerate(modules):
            if inputs:
                module.register_forward_pre_hook(self._keeper(i, lambda args, out: args[0]))
            else:
                module.register_forward_hook(self._keeper(i, lambda args, out: out))

    def _keeper(self, i: int, pick):
        def keep(module, args, out=None):
            self.outputs[i] = pick(args, out)

        return keep

    @property
    def maps(self) -> list[torch.Tensor]:
        maps = []
        for value in self.outputs:
            if value is None:
                raise RuntimeError("no forward pass has reached the tapped modules yet")
            for one in (
                value.values()
                if isinstance(value, Mapping)
                else value
                if isinstance(value, (list, tuple))
                else [value]
            ):
                maps.append(one if one.ndim == 4 else one.flatten(1)[:, :, None, None])
        return maps


def _tapped_modules(model: nn.Module, layers) -> tuple[list[nn.Module], bool]:
    net = model.net
    named = dict(net.named_modules())
    if layers:
        unknown = [name for name in layers if name not in named]
        if unknown:
            raise UserError(
                f"scorer.layers: {unknown[0]!r} is not a module of {type(net).__name__}; "
                f"e.g. {', '.join(n for n, _ in list(net.named_children())[:5])}"
            )
        return [named[name] for name in layers], False
    if hasattr(model, "default_feature_taps"):
        return list(model.default_feature_taps()), False
    stages = [m for name, m in net.named_children() if re.fullmatch(r"layer\d+", name)]
    if stages:
        return stages, False
    return [last_linear(net)], True


class LearningLossScorer(Scorer):
    uses = frozenset({"forward"})
    attached = ("loss_prediction",)

    def __init__(
        self,
        name: str,
        layers: list[str] | None = None,
        width: int = 128,
        weight: float = 1.0,
        margin: float = 1.0,
        detach_after_epoch: int | None = None,
        stochastic: dict | None = None,
    ):
        super().__init__(name, stochastic)
        for key, value in (("width", width), ("weight", weight), ("margin", margin)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise UserError(f"scorer.{key}={value!r} must be a positive number")
        if detach_after_epoch is not None and (
            not isinstance(detach_after_epoch, int) or detach_after_epoch < 0
        ):
            raise UserError(
                f"scorer.detach_after_epoch={detach_after_epoch!r} must be an integer >= 0 or null"
            )
        self.layers, self.width, self.weight, self.margin = layers, int(width), float(weight), float(margin)
        self.detach_after_epoch = detach_after_epoch
        self.taps: FeatureTaps | None = None

    def prepare_model(self, model, datamodule) -> None:
        if not hasattr(model, "training_objective"):
            raise UserError(f"scorer={self.name}: {type(model).__name__} has no training-objective hook")
        modules, inputs = _tapped_modules(model, self.layers)
        self.taps = FeatureTaps(modules, inputs)
        images = next(iter(datamodule.pool_dataloader(datamodule.pool_ids[:2])))[0]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(images)
        model.train(was_training)
        model.loss_prediction = LossPredictionModule([m.shape[1] for m in self.taps.maps], width=self.width)
        model.training_objective = self.objective

    def objective(
        self, model, per_item: torch.Tensor, batch_loss: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The joint loss of one training batch (the taps hold its feature maps) from the model's
        per-item losses [B] and its own batch loss (null: their mean)."""
        if per_item.shape[0] < 2:  # a last batch of one item has no pair to rank
            return per_item.mean() if batch_loss is None else batch_loss
        detach = self.detach_after_epoch is not None and model.current_epoch >= self.detach_after_epoch
        maps = [m.detach() if detach else m for m in self.taps.maps]
        return learning_loss_objective(
            per_item, model.loss_prediction(maps), self.weight, self.margin, target_loss=batch_loss
        )

    def batch_scores(self, outputs) -> torch.Tensor:
        if self.taps is None or not hasattr(outputs.model, "loss_prediction"):
            raise UserError(
                f"scorer={self.name} scores with the loss-prediction module trained in an active-"
                "learning run (python -m src.run scorer=learning_loss); this model has none"
            )
        outputs.forward()  # the pass fills the taps
        return outputs.model.loss_prediction(self.taps.maps).double()
