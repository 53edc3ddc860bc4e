"""The object-detection LightningModule: torchvision's SSD models behind the loop's interface.

Batches are ``(uint8 images [B, 3, H, W], targets, ids)`` with labels 0..K-1; the
network has K+1 classes, background being 0, so labels are shifted by one on the way
in and back on the way out. The input size is fixed (``input_size`` = width, height;
the thesis used 512x288) by replacing the model's resize transform.

Evaluation runs the network's parts once per batch (transform, backbone, head,
anchors) and derives from the same head outputs both the loss (torchvision's own
``compute_loss``) and the detections (its own post-processing), so val/test report
classification and box loss next to mAP without a second forward pass. Pool scoring
(``src.tasks.detection``) uses the same parts (``forward_parts``) and keeps one score and one
class per image.

Per-image losses (``ssd_loss_terms``): torchvision's ``compute_loss`` returns one batch
loss, (sum over images of each image's classification + box loss sums) / (number of
positive anchors in the batch); hard negative mining already works image by image. The
per-image sums and positive counts are computed here directly, so the batch loss is
their ratio and an image's own loss, its loss as a batch of one, is
sum_i / max(1, positives_i) (0 for an image without objects). ``scorer=loss`` ranks by
the latter, and ``scorer=learning_loss`` trains its loss-prediction module to rank by it
(``training_objective``) while the detector keeps training on the batch loss.

Scorer hooks: ``default_feature_taps`` (the backbone, whose output is the SSD multi-scale
feature maps the loss-prediction module reads), ``mc_dropout_head`` (the classification
head MC dropout puts its dropout before); the detector knows nothing about scorers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.detection import MeanAveragePrecision
from torchvision.models import detection as tvd
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import box_iou, clip_boxes_to_image

from src.errors import UserError
from src.models.optim import configure

ARCHS = {"ssd300_vgg16": tvd.ssd300_vgg16, "ssdlite320_mobilenet_v3_large": tvd.ssdlite320_mobilenet_v3_large}


def build_ssd(
    arch: str, num_classes: int, input_size: Sequence[int], weights_backbone: str | None = None, **kwargs
) -> tvd.SSD:
    """A torchvision SSD with ``num_classes`` foreground classes (+ background) at a fixed input size."""
    if arch not in ARCHS:
        raise UserError(f"model.module.arch={arch!r}; allowed: {', '.join(ARCHS)}")
    if len(input_size) != 2 or not all(int(v) >= 32 for v in input_size):
        raise UserError(f"model.module.input_size={list(input_size)!r} must be [width, height], each >= 32")
    width, height = (int(v) for v in input_size)
    from src.models.pretrained import checked_backbone_weights  # from the hub cache only: never a download

    weights_backbone = checked_backbone_weights(arch, weights_backbone)
    net = ARCHS[arch](weights=None, weights_backbone=weights_backbone, num_classes=num_classes + 1, **kwargs)
    net.transform = GeneralizedRCNNTransform(
        min(width, height),
        max(width, height),
        net.transform.image_mean,
        net.transform.image_std,
        size_divisible=1,
        fixed_size=(width, height),
    )
    if arch == "ssd300_vgg16":
        # VGG's extra blocks shrink the map to nothing below about 260 px: say so now, not mid-training
        try:
            with torch.no_grad():
                net.backbone(torch.zeros(1, 3, height, width))
        except RuntimeError as err:
            raise UserError(
                f"model.module.input_size=[{width}, {height}] is too small for ssd300_vgg16 "
                f"(its last feature maps vanish); use at least about 300x264, e.g. the thesis' "
                f"512x288, or arch=ssdlite320_mobilenet_v3_large"
            ) from err
    return net


def ssd_loss_terms(
    cls_logits: torch.Tensor,
    bbox_regression: torch.Tensor,
    anchors: Sequence[torch.Tensor],
    targets: Sequence[dict],
    matched: Sequence[torch.Tensor],
    box_coder,
    neg_to_pos_ratio: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: (classification loss sum, box loss sum, positive anchors), each [B], of the SSD loss.

    ``cls_logits`` [B, A, K+1], ``bbox_regression`` [B, A, 4], the anchors [A, 4] and matches [A]
    (target box index or < 0) of each image. An anchor matched to a box is positive: its box loss is
    the smooth-L1 (beta 1) between its regression and the encoded box, its classification loss the
    cross-entropy with the box's class; of the other anchors, the neg_to_pos_ratio x positives with
    the largest background cross-entropy are the image's hard negatives (at most all of them;
    torchvision would count positives among them once an image has more than a quarter of its
    anchors positive, the one case where the two differ). torchvision's batch loss is
    (cls.sum() + box.sum()) / max(1, positives.sum()).
    """
    batch, n_anchors, n_classes = cls_logits.shape
    cls_targets = torch.zeros((batch, n_anchors), dtype=torch.int64, device=cls_logits.device)
    box = []
    for i in range(batch):
        positive = matched[i] >= 0
        gt = matched[i][positive]
        cls_targets[i, positive] = targets[i]["labels"][gt]
        encoded = box_coder.encode_single(targets[i]["boxes"][gt], anchors[i][positive])
        box.append(F.smooth_l1_loss(bbox_regression[i][positive], encoded, reduction="sum"))
    positives = torch.stack([(m >= 0).sum() for m in matched])
    cross_entropy = F.cross_entropy(
        cls_logits.reshape(-1, n_classes), cls_targets.reshape(-1), reduction="none"
    ).view(batch, n_anchors)
    is_positive = torch.stack([m >= 0 for m in matched])
    negatives = torch.minimum(neg_to_pos_ratio * positives, n_anchors - positives)
    ranked = cross_entropy.masked_fill(is_positive, float("-inf")).sort(dim=1, descending=True).values
    hardest = torch.arange(n_anchors, device=cls_logits.device)[None, :] < negatives[:, None]
    cls = torch.where(is_positive, cross_entropy, 0.0).sum(1) + torch.where(hardest, ranked, 0.0).sum(1)
    return cls, torch.stack(box), positives


class SSDDetector(pl.LightningModule):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        arch: str = "ssdlite320_mobilenet_v3_large",
        input_size: Sequence[int] = (256, 144),
        weights_backbone: str | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable | None = None,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.45,
        detections_per_img: int = 100,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        if in_channels not in (1, 3):
            raise UserError(f"the detector takes 1- or 3-channel images, the dataset has {in_channels}")
        self.num_classes = int(num_classes)
        self.net = build_ssd(
            arch,
            self.num_classes,
            input_size,
            weights_backbone,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )
        self.optimizer_factory = optimizer or (lambda params: torch.optim.Adam(params, lr=1e-3))
        self.scheduler_factory = scheduler
        self.train_cls, self.train_box = MeanMetric(), MeanMetric()
        self.loss_metrics = torch.nn.ModuleDict(
            {f"{s}_{k}": MeanMetric() for s in ("val", "test") for k in ("cls", "box")}
        )
        self.val_map = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
        self.test_map = MeanAveragePrecision(
            box_format="xyxy", iou_type="bbox", class_metrics=True, backend="pycocotools"
        )
        # a scorer's joint training objective (learning loss): (module, per-image losses [B], batch loss) -> loss
        self.training_objective: Callable | None = None

    def head_prefixes(self) -> list[str]:
        """The state-dict prefix of the class head (background + one logit per class per anchor): what
        a checkpoint with another class count leaves to the seeded init (``weights.load_into``)."""
        return ["net.head.classification_head"]

    # -- inputs ----------------------------------------------------------------------------
    def _inputs(self, images: torch.Tensor, targets: list[dict] | None):
        images = images.to(self.device, self.dtype, non_blocking=True).div_(255.0)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        shifted = None
        if targets is not None:  # background is class 0 inside the network
            shifted = [
                {
                    "boxes": t["boxes"].to(self.device, self.dtype),
                    "labels": t["labels"].to(self.device, torch.int64) + 1,
                }
                for t in targets
            ]
        return list(images), shifted

    def forward(self, images: torch.Tensor) -> list[dict]:
        """Detections per image (boxes in input pixels, scores, labels 0..K-1), as in eval mode."""
        imgs, _ = self._inputs(images, None)
        dets = self.net(imgs)
        return [{**d, "labels": d["labels"] - 1} for d in dets]

    def backbone_pass(self, images: torch.Tensor, targets: list[dict] | None = None):
        """The start of every pass through SSD: the transformed batch, its targets (background-shifted,
        resized; None without), the backbone's feature maps as a list and the images' sizes on input."""
        imgs, tgts = self._inputs(images, targets)
        original_sizes = [tuple(im.shape[-2:]) for im in imgs]
        batch, tgts = self.net.transform(imgs, tgts)
        features = self.net.backbone(batch.tensors)
        features = list(features.values()) if isinstance(features, dict) else [features]
        return batch, tgts, features, original_sizes

    def forward_parts(self, images: torch.Tensor, targets: list[dict] | None):
        """What SSD.forward computes before its losses or detections, for reuse by both (and by pool
        scoring, ``src.tasks.detection``): batch, targets, head outputs, anchors, sizes on input."""
        batch, tgts, features, original_sizes = self.backbone_pass(images, targets)
        head = self.net.head(features)
        anchors = self.net.anchor_generator(batch, features)
        return batch, tgts, head, anchors, original_sizes

    def decode_boxes(self, regression: torch.Tensor, anchors: torch.Tensor, size) -> torch.Tensor:
        """One image's box regression [A, 4] on its anchors as boxes in the transformed image's pixels."""
        return clip_boxes_to_image(self.net.box_coder.decode_single(regression, anchors), size)

    def _matches(self, tgts, anchors) -> list[torch.Tensor]:
        # the anchor-to-box matching of torchvision's SSD.forward (not a separate public function there)
        matched = []
        for anchors_i, target in zip(anchors, tgts):
            if target["boxes"].numel() == 0:
                matched.append(
                    torch.full((anchors_i.size(0),), -1, dtype=torch.int64, device=anchors_i.device)
                )
            else:
                matched.append(self.net.proposal_matcher(box_iou(target["boxes"], anchors_i)))
        return matched

    def losses(self, tgts, head, anchors) -> dict[str, torch.Tensor]:
        """The batch loss exactly as torchvision's SSD trains on it."""
        return self.net.compute_loss(tgts, head, anchors, self._matches(tgts, anchors))

    def loss_terms(self, tgts, head, anchors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image: classification and box loss sums and positive anchors (``ssd_loss_terms``)."""
        return ssd_loss_terms(
            head["cls_logits"],
            head["bbox_regression"],
            anchors,
            tgts,
            self._matches(tgts, anchors),
            self.net.box_coder,
            self.net.neg_to_pos_ratio,
        )

    def per_image_losses(self, tgts, head, anchors) -> torch.Tensor:
        """cls + box loss of each image alone (as a batch of one): its sums over its positive anchors."""
        cls, box, positives = self.loss_terms(tgts, head, anchors)
        return (cls + box) / positives.clamp(min=1)

    # -- steps --------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        images, targets, _ = batch
        if self.training_objective is None:
            imgs, tgts = self._inputs(images, targets)
            losses = self.net(imgs, tgts)
            cls, box = losses["classification"], losses["bbox_regression"]
            loss = cls + box
        else:  # the same loss from its per-image terms, which the objective also ranks
            _, tgts, head, anchors, _ = self.forward_parts(images, targets)
            cls_i, box_i, positives = self.loss_terms(tgts, head, anchors)
            norm = positives.sum().clamp(min=1)
            cls, box = cls_i.sum() / norm, box_i.sum() / norm
            loss = self.training_objective(self, (cls_i + box_i) / positives.clamp(min=1), cls + box)
        n = len(images)  # train/loss is the detector's own loss (without a learned-loss ranking term)
        self.train_cls.update(cls.detach(), weight=n)
        self.train_box.update(box.detach(), weight=n)
        self.log("train/loss", cls.detach() + box.detach(), on_step=False, on_epoch=True, batch_size=n)
        self.log("train/loss_cls", self.train_cls, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/loss_box", self.train_box, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def _eval_step(self, batch, stage: str):
        images, targets, _ = batch
        batch_t, tgts, head, anchors, original_sizes = self.forward_parts(images, targets)
        losses = self.losses(tgts, head, anchors)
        n = len(targets)
        self.loss_metrics[f"{stage}_cls"].update(losses["classification"], weight=n)
        self.loss_metrics[f"{stage}_box"].update(losses["bbox_regression"], weight=n)
        dets = self.net.postprocess_detections(head, anchors, batch_t.image_sizes)
        dets = self.net.transform.postprocess(dets, batch_t.image_sizes, original_sizes)
        metric = self.val_map if stage == "val" else self.test_map
        metric.update(
            [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - 1} for d in dets],
            [{"boxes": t["boxes"].to(self.device), "labels": t["labels"].to(self.device)} for t in targets],
        )

    def _eval_epoch_end(self, stage: str):
        cls_m, box_m = self.loss_metrics[f"{stage}_cls"], self.loss_metrics[f"{stage}_box"]
        cls, box = cls_m.compute(), box_m.compute()
        cls_m.reset(), box_m.reset()
        metric = self.val_map if stage == "val" else self.test_map
        result = metric.compute()
        metric.reset()
        values = {
            f"{stage}/loss": cls + box,
            f"{stage}/loss_cls": cls,
            f"{stage}/loss_box": box,
            f"{stage}/map": result["map"],
            f"{stage}/map_50": result["map_50"],
        }
        if stage == "test":
            names = self._class_names()
            classes = result["classes"].flatten().tolist()
            for c, ap in zip(classes, result["map_per_class"].flatten().tolist()):
                if ap >= 0:  # -1: a class with neither ground truth nor detections in the test set
                    values[f"test/ap/{names[c] if 0 <= c < len(names) else c}"] = torch.tensor(ap)
        self.log_dict({k: torch.as_tensor(v, dtype=torch.float32) for k, v in values.items()})

    def _class_names(self) -> list[str]:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return list(getattr(dm, "class_names", None) or [str(i) for i in range(self.num_classes)])

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

    # -- scorer hooks ---------------------------------------------------------------------------
    def default_feature_taps(self) -> list[torch.nn.Module]:
        """What the loss-prediction module reads by default: the backbone, whose output is the SSD
        multi-scale feature maps (six for both architectures), as in Yoo & Kweon's SSD experiment."""
        return [self.net.backbone]

    def mc_dropout_head(self) -> torch.nn.Module:
        """The module MC dropout's added dropout goes before: the classification head (the box head
        is left deterministic, so every pass scores the same boxes)."""
        return self.net.head.classification_head

    def configure_optimizers(self):
        return configure(self, self.optimizer_factory, self.scheduler_factory)
