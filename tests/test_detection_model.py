"""The SSD module: per-image loss scorer vs the model's own loss, mAP vs pycocotools, pool scoring."""

from __future__ import annotations

import contextlib
import functools
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from src.data.detection.datamodule import DetectionDataModule, SceneSource
from src.errors import UserError
from src.loop.pool import score_pool
from src.models.detector import SSDDetector
from src.selection.scorers import get_scorer
from src.tasks import detection

SIZE = (128, 72)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SSDDetector(num_classes=6, input_size=SIZE).eval()


def _batch_with_an_empty_image(dm):
    images, targets, ids = next(iter(dm.pool_dataloader(dm.pool_ids[:3])))
    targets[2] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    return images, targets, ids


def test_loss_scorer_equals_the_models_own_loss_per_image(model, tiny_scenes):
    batch = _batch_with_an_empty_image(tiny_scenes)
    with torch.inference_mode():
        scores, classes = detection.score_batch(model, batch, get_scorer("loss"), want_classes=False)
    assert classes is None and scores.shape == (3,)
    # reference: torchvision's own training-mode forward, one image at a time (BatchNorm
    # kept in eval mode so both see the same network)
    net = model.net
    net.train()
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    images, targets, _ = batch
    try:
        with torch.no_grad():
            for i in range(3):
                t = {"boxes": targets[i]["boxes"], "labels": targets[i]["labels"] + 1}
                own = net([images[i].float() / 255], [t])
                expected = float(own["classification"] + own["bbox_regression"])
                assert float(scores[i]) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    finally:
        net.eval()
    assert float(scores[2]) == 0.0 and float(scores[0]) > 0  # nothing to find, nothing to lose


def test_uncertainty_scores_classes_and_no_detection(model, tiny_scenes):
    batch = _batch_with_an_empty_image(tiny_scenes)
    with torch.inference_mode():
        scores, classes = detection.score_batch(
            model, batch, get_scorer("margin"), want_classes=True, top_k=5, score_threshold=0.0
        )
        assert scores.shape == (3,) and ((scores >= 0) & (scores <= 1)).all()
        assert classes.dtype == torch.int64 and ((classes >= 0) & (classes < 6)).all()
        # a threshold nothing passes: no detection -> the maximal score 1, class -1
        scores, classes = detection.score_batch(
            model, batch, get_scorer("entropy"), want_classes=True, score_threshold=1.0
        )
    assert scores.tolist() == [1.0, 1.0, 1.0] and classes.tolist() == [-1, -1, -1]


def test_score_pool_keeps_one_score_per_image(model, tiny_scenes):
    score_batch = functools.partial(detection.score_batch, scorer=get_scorer("entropy"))
    ids, scores, preds = score_pool(
        model,
        tiny_scenes.pool_dataloader(tiny_scenes.pool_ids),
        score_batch,
        want_predictions=True,
        progress=False,
    )
    assert ids.tolist() == tiny_scenes.pool_ids.tolist()
    assert scores.shape == (8,) and preds.shape == (8,)
    detections = model(next(iter(tiny_scenes.pool_dataloader(tiny_scenes.pool_ids[:2])))[0])
    assert len(detections) == 2 and all(((d["labels"] >= 0) & (d["labels"] < 6)).all() for d in detections)


def test_vgg_input_too_small_is_a_clear_error():
    with pytest.raises(UserError, match=r"input_size=\[160, 90\] is too small for ssd300_vgg16"):
        SSDDetector(num_classes=2, arch="ssd300_vgg16", input_size=(160, 90))
    with pytest.raises(UserError, match="model.module.arch='yolo'"):
        SSDDetector(num_classes=2, arch="yolo")


def test_map_equals_pycocotools_on_a_hand_made_case(model):
    """The module's test metric (torchmetrics, COCO backend) against pycocotools run by hand."""
    gts = [
        {
            "boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 20.0, 90.0, 70.0]]),
            "labels": torch.tensor([0, 1]),
        },
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0]]), "labels": torch.tensor([0])},
    ]
    preds = [
        {
            "boxes": torch.tensor(
                [[12.0, 10.0, 50.0, 52.0], [60.0, 25.0, 88.0, 70.0], [0.0, 0.0, 20.0, 20.0]]
            ),
            "scores": torch.tensor([0.9, 0.6, 0.7]),
            "labels": torch.tensor([0, 1, 0]),
        },
        {
            "boxes": torch.tensor([[5.0, 8.0, 30.0, 30.0], [50.0, 50.0, 60.0, 60.0]]),
            "scores": torch.tensor([0.8, 0.3]),
            "labels": torch.tensor([0, 1]),
        },
    ]
    metric = model.test_map.clone()
    metric.update(preds, gts)
    result = metric.compute()

    images = [{"id": i, "width": 100, "height": 100} for i in range(2)]
    anns, dets = [], []
    for i, (g, p) in enumerate(zip(gts, preds)):
        for b, lab in zip(g["boxes"].tolist(), g["labels"].tolist()):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": lab,
                    "iscrowd": 0,
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "area": (b[2] - b[0]) * (b[3] - b[1]),
                }
            )
        for b, s, lab in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets.append(
                {
                    "image_id": i,
                    "category_id": lab,
                    "score": s,
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": 0}, {"id": 1}]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert float(result["map"]) == pytest.approx(ev.stats[0], abs=1e-6)
    assert float(result["map_50"]) == pytest.approx(ev.stats[1], abs=1e-6)
    assert 0 < ev.stats[0] < 1
    # per class: COCOeval's precision array [T, R, K, A, M] averaged over IoUs and recalls
    precision = ev.eval["precision"][:, :, :, 0, -1]
    for k in range(2):
        p = precision[:, :, k]
        assert float(result["map_per_class"][k]) == pytest.approx(float(np.mean(p[p > -1])), abs=1e-6)


# -- scene options the CPU default uses --------------------------------------------------------
def test_scene_class_subset_relabels_and_keeps_only_those_classes():
    from src.data.detection.scenes import CLASSES, render_scene

    seen = set()
    for seed in range(40):
        full = render_scene(seed, "street", 128, 72, max_objects=4, classes=None)
        assert full.labels.max(initial=0) < len(CLASSES)
        sub = render_scene(seed, "street", 128, 72, max_objects=4, classes=["truck", "person"])
        assert set(sub.labels.tolist()) <= {0, 1}
        seen |= set(sub.labels.tolist())
    assert seen == {0, 1}
    dm = DetectionDataModule(
        "s",
        SceneSource(n=6, seed=1, classes=["car", "person"]),
        {"pool": 2, "val": 2, "test": 2},
        image_size=SIZE,
    )
    dm.setup()
    assert dm.class_names == ["car", "person"] and dm.num_classes == 2
    with pytest.raises(UserError, match=r"dataset.source.classes=\['car', 'tram'\]"):
        SceneSource(n=6, classes=["car", "tram"])


def test_scene_min_scale_and_size_factor_bound_the_object_heights():
    from src.data.detection.scenes import _BASE_SIZE, render_scene

    # one object per scene (nothing occludes it): its box height is at least the smallest class
    # height x min_scale x size_factor x 0.9 (the size jitter), less a pixel of rounding
    h = 72
    smallest = min(bh for _, bh in _BASE_SIZE.values())
    for min_scale, factor in [(0.6, 1.2), (0.9, 1.0)]:
        for seed in range(25):
            s = render_scene(
                seed, "synthetic", 128, h, max_objects=1, min_scale=min_scale, size_factor=factor
            )
            heights = s.boxes[:, 3] - s.boxes[:, 1]
            assert (heights >= smallest * h * min_scale * factor * 0.9 - 1).all(), (min_scale, factor, seed)
    with pytest.raises(UserError, match="dataset.source.min_scale=0"):
        render_scene(0, min_scale=0)


# -- torchvision backbone weights: from the hub cache only ---------------------------------------
def _meta_state(builder):
    import torchvision

    with torch.device("meta"):
        return getattr(torchvision.models, builder)().state_dict()


def test_backbone_weights_missing_from_the_hub_cache_is_one_line_how_to(tmp_path, monkeypatch):
    from src.models.pretrained import backbone_weights_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for arch, name, file in [
        ("ssd300_vgg16", "imagenet", "vgg16_features-amdegroot-88682ab5.pth"),
        ("ssdlite320_mobilenet_v3_large", "imagenet", "mobilenet_v3_large-8738ca79.pth"),
    ]:
        with pytest.raises(UserError) as err:
            backbone_weights_file(arch, name)
        msg = str(err.value)
        assert "\n" not in msg and file in msg and str(tmp_path / "hub" / "checkpoints") in msg
        assert "nothing downloads" in msg and "weights_backbone=null" in msg
    with pytest.raises(UserError, match="allowed: imagenet, DEFAULT"):
        backbone_weights_file("ssd300_vgg16", "IMAGENET9K")
    assert backbone_weights_file("ssd300_vgg16", None) is None
    assert not (tmp_path / "hub").exists()  # nothing was fetched or created


def test_backbone_weights_in_the_hub_cache_are_loaded_into_the_detector(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    # every tensor a stride-0 view of one number: a file of ~100 kB with the real keys and shapes
    state = {
        k: torch.full((), 0.25, dtype=v.dtype).expand(v.shape)
        for k, v in _meta_state("mobilenet_v3_large").items()
    }
    torch.save(state, cache / "mobilenet_v3_large-8738ca79.pth")
    model = SSDDetector(num_classes=2, input_size=SIZE, weights_backbone="imagenet")
    first_conv = model.net.backbone.features[0][0][0].weight
    assert torch.all(first_conv == 0.25)
    # a file that does not fit, and one holding more than tensors, are refused with one line
    del state["features.0.0.weight"]
    torch.save(state, cache / "mobilenet_v3_large-8738ca79.pth")
    with pytest.raises(
        UserError, match="1 missing, 0 unexpected, 0 mis-shaped keys, e.g. features.0.0.weight"
    ):
        SSDDetector(num_classes=2, input_size=SIZE, weights_backbone="IMAGENET1K_V1")
    torch.save({"w": torch.zeros(1), "extra": io.BytesIO()}, cache / "mobilenet_v3_large-8738ca79.pth")
    with pytest.raises(UserError, match="not a plain torch state dict"):
        SSDDetector(num_classes=2, input_size=SIZE, weights_backbone="imagenet")


def test_coreset_features_are_the_pooled_backbone_maps_per_image(model, tiny_scenes):
    images, targets, ids = next(iter(tiny_scenes.pool_dataloader(tiny_scenes.pool_ids[:3])))
    outputs = detection.DetectorOutputs(model, (images, targets, ids), frozenset({"features"}))
    with torch.inference_mode():
        together = outputs.features()
        # by hand: each image alone through the backbone, each map averaged over its positions
        for i in range(3):
            imgs, _ = model._inputs(images[i : i + 1], None)
            maps = model.net.backbone(model.net.transform(imgs, None)[0].tensors)
            alone = torch.cat([m.float().flatten(2).mean(dim=2) for m in maps.values()], dim=1)[0]
            np.testing.assert_allclose(together[i].numpy(), alone.numpy(), rtol=1e-4, atol=1e-5)
