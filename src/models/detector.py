"""The object-detection LightningModule: torchvision's SSD models behind the loop's interface.

Batches are ``(uint8 images [B, 3, H, W], targets, ids)`` with labels 0..K-1; the
network has K+1 classes, background being 0, so labels are shifted by one on the way
in and back on the way out. The input size is fixed (``input_size`` = width, height;
the thesis used 512x288) by replacing the model's resize transform.

Evaluation runs the network's parts once per batch (transform, backbone, head,
anchors) and derives from the same head outputs both the loss (torchvision's own
``compute_loss``) and the detections (its own post-processing), so val/test report
classification and box loss next to mAP without a second forward pass. Pool scoring
uses the same parts and keeps one score and one class per image.
"""
from __future__ import annotations

from typing import Callable, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.detection import MeanAveragePrecision
from torchvision.models import detection as tvd
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import box_iou, clip_boxes_to_image

from src.models.optim import configure
from src.selection import detection_scorers as ds
from src.errors import UserError

ARCHS = {"ssd300_vgg16": tvd.ssd300_vgg16, "ssdlite320_mobilenet_v3_large": tvd.ssdlite320_mobilenet_v3_large}


def build_ssd(arch: str, num_classes: int, input_size: Sequence[int], weights_backbone: str | None = None,
              **kwargs) -> tvd.SSD:
    """A torchvision SSD with ``num_classes`` foreground classes (+ background) at a fixed input size."""
    if arch not in ARCHS:
        raise UserError(f"model.module.arch={arch!r}; allowed: {', '.join(ARCHS)}")
    if len(input_size) != 2 or not all(int(v) >= 32 for v in input_size):
        raise UserError(f"model.module.input_size={list(input_size)!r} must be [width, height], each >= 32")
    width, height = (int(v) for v in input_size)
    from src.models.pretrained import checked_backbone_weights   # from the hub cache only: never a download

    weights_backbone = checked_backbone_weights(arch, weights_backbone)
    net = ARCHS[arch](weights=None, weights_backbone=weights_backbone, num_classes=num_classes + 1, **kwargs)
    net.transform = GeneralizedRCNNTransform(min(width, height), max(width, height), net.transform.image_mean,
                                             net.transform.image_std, size_divisible=1, fixed_size=(width, height))
    if arch == "ssd300_vgg16":
        # VGG's extra blocks shrink the map to nothing below about 260 px: say so now, not mid-training
        try:
            with torch.no_grad():
                net.backbone(torch.zeros(1, 3, height, width))
        except RuntimeError as err:
            raise UserError(f"model.module.input_size=[{width}, {height}] is too small for ssd300_vgg16 "
                             f"(its last feature maps vanish); use at least about 300x264, e.g. the thesis' "
                             f"512x288, or arch=ssdlite320_mobilenet_v3_large") from err
    return net


class SSDDetector(pl.LightningModule):
    def __init__(self, num_classes: int, in_channels: int = 3, arch: str = "ssdlite320_mobilenet_v3_large",
                 input_size: Sequence[int] = (256, 144), weights_backbone: str | None = None,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None, scheduler: Callable | None = None,
                 score_thresh: float = 0.01, nms_thresh: float = 0.45, detections_per_img: int = 100):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        if in_channels not in (1, 3):
            raise UserError(f"the detector takes 1- or 3-channel images, the dataset has {in_channels}")
        self.num_classes = int(num_classes)
        self.net = build_ssd(arch, self.num_classes, input_size, weights_backbone, score_thresh=score_thresh,
                             nms_thresh=nms_thresh, detections_per_img=detections_per_img)
        self.optimizer_factory = optimizer or (lambda params: torch.optim.Adam(params, lr=1e-3))
        self.scheduler_factory = scheduler
        self.train_cls, self.train_box = MeanMetric(), MeanMetric()
        self.loss_metrics = torch.nn.ModuleDict({f"{s}_{k}": MeanMetric() for s in ("val", "test")
                                                 for k in ("cls", "box")})
        self.val_map = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
        self.test_map = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True,
                                             backend="pycocotools")

    # -- inputs ----------------------------------------------------------------------------
    def _inputs(self, images: torch.Tensor, targets: list[dict] | None):
        images = images.to(self.device, non_blocking=True).float().div_(255.0)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        shifted = None
        if targets is not None:   # background is class 0 inside the network
            shifted = [{"boxes": t["boxes"].to(self.device, torch.float32),
                        "labels": t["labels"].to(self.device, torch.int64) + 1} for t in targets]
        return list(images), shifted

    def forward(self, images: torch.Tensor) -> list[dict]:
        """Detections per image (boxes in input pixels, scores, labels 0..K-1), as in eval mode."""
        imgs, _ = self._inputs(images, None)
        dets = self.net(imgs)
        return [{**d, "labels": d["labels"] - 1} for d in dets]

    def _parts(self, images: torch.Tensor, targets: list[dict] | None):
        """What SSD.forward computes before its losses or detections, for reuse by both."""
        imgs, tgts = self._inputs(images, targets)
        original_sizes = [tuple(im.shape[-2:]) for im in imgs]
        batch, tgts = self.net.transform(imgs, tgts)
        features = self.net.backbone(batch.tensors)
        features = list(features.values()) if isinstance(features, dict) else [features]
        head = self.net.head(features)
        anchors = self.net.anchor_generator(batch, features)
        return batch, tgts, head, anchors, original_sizes

    def _matches(self, tgts, anchors) -> list[torch.Tensor]:
        # the anchor-to-box matching of torchvision's SSD.forward (not a separate public function there)
        matched = []
        for anchors_i, target in zip(anchors, tgts):
            if target["boxes"].numel() == 0:
                matched.append(torch.full((anchors_i.size(0),), -1, dtype=torch.int64, device=anchors_i.device))
            else:
                matched.append(self.net.proposal_matcher(box_iou(target["boxes"], anchors_i)))
        return matched

    def losses(self, tgts, head, anchors) -> dict[str, torch.Tensor]:
        """The batch loss exactly as torchvision's SSD trains on it."""
        return self.net.compute_loss(tgts, head, anchors, self._matches(tgts, anchors))

    def per_image_losses(self, tgts, head, anchors) -> torch.Tensor:
        """cls + box loss of each image alone: the same code on a batch of one."""
        matched = self._matches(tgts, anchors)
        out = []
        for i in range(len(tgts)):
            one = self.net.compute_loss([tgts[i]], {k: v[i:i + 1] for k, v in head.items()}, [anchors[i]],
                                        [matched[i]])
            out.append(one["classification"] + one["bbox_regression"])
        return torch.stack(out)

    # -- steps --------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        images, targets, _ = batch
        imgs, tgts = self._inputs(images, targets)
        losses = self.net(imgs, tgts)
        cls, box = losses["classification"], losses["bbox_regression"]
        n = len(imgs)
        self.train_cls.update(cls.detach(), weight=n)
        self.train_box.update(box.detach(), weight=n)
        self.log("train/loss", cls.detach() + box.detach(), on_step=False, on_epoch=True, batch_size=n)
        self.log("train/loss_cls", self.train_cls, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/loss_box", self.train_box, on_step=False, on_epoch=True, batch_size=n)
        return cls + box

    def _eval_step(self, batch, stage: str):
        images, targets, _ = batch
        batch_t, tgts, head, anchors, original_sizes = self._parts(images, targets)
        losses = self.losses(tgts, head, anchors)
        n = len(targets)
        self.loss_metrics[f"{stage}_cls"].update(losses["classification"], weight=n)
        self.loss_metrics[f"{stage}_box"].update(losses["bbox_regression"], weight=n)
        dets = self.net.postprocess_detections(head, anchors, batch_t.image_sizes)
        dets = self.net.transform.postprocess(dets, batch_t.image_sizes, original_sizes)
        metric = self.val_map if stage == "val" else self.test_map
        metric.update([{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - 1} for d in dets],
                      [{"boxes": t["boxes"].to(self.device), "labels": t["labels"].to(self.device)} for t in targets])

    def _eval_epoch_end(self, stage: str):
        cls_m, box_m = self.loss_metrics[f"{stage}_cls"], self.loss_metrics[f"{stage}_box"]
        cls, box = cls_m.compute(), box_m.compute()
        cls_m.reset(), box_m.reset()
        metric = self.val_map if stage == "val" else self.test_map
        result = metric.compute()
        metric.reset()
        values = {f"{stage}/loss": cls + box, f"{stage}/loss_cls": cls, f"{stage}/loss_box": box,
                  f"{stage}/map": result["map"], f"{stage}/map_50": result["map_50"]}
        if stage == "test":
            names = self._class_names()
            classes = result["classes"].flatten().tolist()
            for c, ap in zip(classes, result["map_per_class"].flatten().tolist()):
                if ap >= 0:     # -1: a class with neither ground truth nor detections in the test set
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

    # -- pool scoring ---------------------------------------------------------------------------
    def pooled_backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, sum of channels]: every backbone feature map global-average-pooled and concatenated
        (what core-set measures distances on; the backbone's input as in every other pass)."""
        imgs, _ = self._inputs(images, None)
        batch, _ = self.net.transform(imgs, None)
        features = self.net.backbone(batch.tensors)
        features = list(features.values()) if isinstance(features, dict) else [features]
        return torch.cat([f.float().mean(dim=(2, 3)) for f in features], dim=1)

    def pool_outputs(self, batch, losses: bool, detections: bool, top_k: int = 10, score_threshold: float = 0.1,
                     nms_iou: float = 0.5) -> tuple[torch.Tensor | None, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """What pool scoring reads from one batch, from one pass through the network.

        ``losses``: each image's own cls + box loss [B]. ``detections``: per image the
        full class distributions [D, C+1] (background first) of its ``top_k`` kept
        detections and their predicted classes [D] (0..C-1). Only per-image numbers
        leave this method; the raw anchors of a batch are dropped here.
        """
        images, targets, _ = batch
        batch_t, tgts, head, anchors, _ = self._parts(images, targets if losses else None)
        per_image = self.per_image_losses(tgts, head, anchors) if losses else None
        kept = None
        if detections:
            probs_all = F.softmax(head["cls_logits"].float(), dim=-1)
            kept = []
            for i, (h, w) in enumerate(batch_t.image_sizes):
                boxes = clip_boxes_to_image(self.net.box_coder.decode_single(head["bbox_regression"][i], anchors[i]),
                                            (h, w))
                keep = ds.top_detections(probs_all[i], boxes, int(top_k), float(score_threshold), float(nms_iou))
                kept.append((probs_all[i, keep], probs_all[i, keep, 1:].argmax(dim=1)))
        return per_image, kept

    def configure_optimizers(self):
        return configure(self, self.optimizer_factory, self.scheduler_factory)
