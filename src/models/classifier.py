"""The image-classification LightningModule: uint8 batches in, logits and metrics out."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from src.errors import UserError
from src.models.backbones import SmallCNN, build_network
from src.models.optim import configure


def topk_values(num_classes: int) -> list[int]:
    """Top-k accuracies worth reporting for this many classes (thesis: 1, 5, 20)."""
    return [k for k in (1, 5, 20) if num_classes >= k]


class ImageClassifier(pl.LightningModule):
    """Any classification network behind the thesis' metrics.

    The module takes uint8 images [B, C, H, W] and does the preprocessing itself
    (scale to [0, 1], optional resize, grey-to-RGB for 3-channel networks,
    normalisation), so datasets stay compact uint8 tensors and the pool pass and
    the training steps see exactly the same inputs.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        net: dict,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        input_size: int | None = None,
        input_mean: Sequence[float] | None = (0.5,),
        input_std: Sequence[float] | None = (0.5,),
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        net = dict(net)
        self.net = build_network(net.pop("name"), num_classes, in_channels, net.pop("weights", None), **net)
        # None: the network's own preprocessing (a timm model's pretrained config), else no resize / 0.5
        own = getattr(self.net, "pretrained_cfg", None) or {}
        if input_size is None and own.get("input_size"):
            input_size = int(own["input_size"][-1])
        input_mean = tuple(own.get("mean", (0.5,))) if input_mean is None else input_mean
        input_std = tuple(own.get("std", (0.5,))) if input_std is None else input_std
        self.net_channels = in_channels if isinstance(self.net, SmallCNN) else 3
        if len(input_mean) not in (1, self.net_channels) or len(input_std) != len(input_mean):
            raise UserError(f"model.module.input_mean/input_std need 1 or {self.net_channels} values")
        self.register_buffer(
            "mean", torch.tensor(input_mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(input_std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.input_size = input_size
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        self.topk = topk_values(num_classes)

        def accuracies():
            return MetricCollection(
                {f"acc_top{k}": MulticlassAccuracy(num_classes, top_k=k, average="micro") for k in self.topk}
            )

        self.val_acc, self.test_acc = accuracies(), accuracies()
        # accumulated over the epoch's batches as the weights change (the thesis' training accuracy, fig. 4.6)
        self.train_acc = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        # a scorer's joint training objective (learning loss): (module, per-item losses [B]) -> loss
        self.training_objective: Callable | None = None

    def head_prefixes(self) -> list[str]:
        """The state-dict prefix of the class head (the network's last Linear layer): what a
        checkpoint with another class count leaves to the seeded init (``weights.load_into``)."""
        linears = [name for name, m in self.named_modules() if isinstance(m, torch.nn.Linear)]
        return linears[-1:]

    # -- forward -------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.dtype).div_(255.0)
        if x.shape[1] != self.net_channels:
            x = x.expand(-1, self.net_channels, -1, -1)
        if self.input_size and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(images))

    def loss_fn(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    # -- steps ----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        images, labels, _ = batch
        logits = self(images)
        if self.training_objective is None:
            loss = self.loss_fn(logits, labels)
        else:
            loss = self.training_objective(self, F.cross_entropy(logits, labels, reduction="none"))
        self.train_loss.update(loss.detach(), weight=len(labels))
        self.train_acc.update(logits.detach(), labels)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, batch_size=len(labels))
        self.log("train/acc_top1", self.train_acc, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    def _eval_step(self, batch, stage: str):
        images, labels, _ = batch
        logits = self(images)
        loss_metric, acc = (
            (self.val_loss, self.val_acc) if stage == "val" else (self.test_loss, self.test_acc)
        )
        loss_metric.update(F.cross_entropy(logits, labels, reduction="sum") / len(labels), weight=len(labels))
        acc.update(logits, labels)
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True, batch_size=len(labels))
        self.log_dict(
            {f"{stage}/{k}": v for k, v in acc.items()}, on_step=False, on_epoch=True, batch_size=len(labels)
        )

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def configure_optimizers(self):
        return configure(self, self.optimizer_factory, self.scheduler_factory)
