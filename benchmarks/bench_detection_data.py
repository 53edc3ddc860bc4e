"""Detection images from the decode cache vs from JPEG files: ``python -m benchmarks.bench_detection_data``.

    python -m benchmarks.bench_detection_data            # 48 HD JPEGs, about 10 minutes on 2 cores
    python -m benchmarks.bench_detection_data --quick    # 16 JPEGs, a smoke run

The same COCO data set (embedded street scenes saved as 1280x720 JPEGs, a surveillance
camera's size, with their true boxes) is read by ``FileSource`` two ways, at the COCO/VOC/
YOLO default input of 512x288 and at a CPU-sized 160x90:

* cache: the framework's path: every image decoded once into the shared memory-mapped
  cache (``src/data/cache.py``), boxes scaled alongside;
* jpeg: ``cache_dir=null``: every access opens, decodes and resizes the JPEG (what the
  detection datamodule did before the cache).

For each, images/second of the data alone, of one training epoch of SSDLite (forward,
backward, SGD step) and of one pool-scoring pass (``score_pool`` with entropy), best of
several interleaved rounds on the same machine. The ratio cache / jpeg is the figure
(goal >= 3x); the one-time cache build is reported too. Figures go to stdout and to
``bench-results/bench_detection_data.json``. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks.results import write_results
from src.data.detection.datamodule import DetectionDataModule, FileSource
from src.data.detection.scenes import CLASSES, render_scene
from src.loop.pool import score_pool
from src.models.detector import SSDDetector
from src.selection.scorers import get_scorer
from src.tasks import detection

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench-results" / "bench_detection_data.json"
PHOTO = (1280, 720)
INPUTS = ((512, 288), (160, 90))
BATCH = 8


def write_coco(root: Path, n: int) -> Path:
    """``n`` street scenes as JPEGs of PHOTO size under root/images, and root/ann.json."""
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        scene = render_scene(7000 + i, "street", *PHOTO)
        Image.fromarray(scene.image).save(root / "images" / f"{i:04d}.jpg", quality=90)
        images.append({"id": i, "file_name": f"{i:04d}.jpg", "width": PHOTO[0], "height": PHOTO[1]})
        for (x0, y0, x1, y1), label in zip(scene.boxes.tolist(), scene.labels.tolist()):
            anns.append(
                {"id": len(anns), "image_id": i, "category_id": label + 1, "bbox": [x0, y0, x1 - x0, y1 - y0]}
            )
    path = root / "ann.json"
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)],
            }
        )
    )
    return path


def datamodule(ann: Path, cache_dir: Path | None, size: tuple[int, int]) -> DetectionDataModule:
    source = FileSource(
        "coco",
        str(ann),
        str(ann.parent / "images"),
        None,
        cache_dir=None if cache_dir is None else str(cache_dir),
    )
    dm = DetectionDataModule(
        "bench",
        source,
        {"pool": None, "val": 1, "test": 1},
        image_size=size,
        batch_size=BATCH,
        eval_batch_size=2 * BATCH,
    )
    dm.setup()
    dm.set_labelled(dm.pool_ids, shuffle=True, seed=0)
    return dm


def data_only(dm) -> float:
    start = time.perf_counter()
    for _ in dm.train_dataloader():
        pass
    return time.perf_counter() - start


def train_epoch(dm, model) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for images, targets, _ in dm.train_dataloader():
        imgs, tgts = model._inputs(images, targets)
        losses = model.net(imgs, tgts)
        optimizer.zero_grad(set_to_none=True)
        (losses["classification"] + losses["bbox_regression"]).backward()
        optimizer.step()
    return time.perf_counter() - start


def score(dm, model) -> float:
    model.eval()
    start = time.perf_counter()
    adapter = functools.partial(detection.score_batch, scorer=get_scorer("entropy"))
    score_pool(model, dm.pool_dataloader(dm.pool_ids), adapter, want_predictions=False, progress=False)
    return time.perf_counter() - start


def compare(ann: Path, cache_dir: Path, size: tuple[int, int], rounds: int) -> dict:
    """{pass: images/s from the cache and from JPEG, their ratio} at one input size."""
    start = time.perf_counter()
    cached = datamodule(ann, cache_dir, size)
    build_s = time.perf_counter() - start
    jpeg = datamodule(ann, None, size)
    n = len(cached.source)
    for i in (0, n // 2):  # same pixels and boxes both ways
        a, b = cached.source.load(i), jpeg.source.load(i)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    torch.manual_seed(0)
    model = SSDDetector(num_classes=cached.num_classes, arch="ssdlite320_mobilenet_v3_large", input_size=size)
    train_epoch(cached, model)  # warm-up: first-call allocations are not the data path's cost
    tasks = {
        "data only": lambda dm: data_only(dm),
        "training epoch": lambda dm: train_epoch(dm, model),
        "pool scoring": lambda dm: score(dm, model),
    }
    best = {(t, way): float("inf") for t in tasks for way in ("cache", "jpeg")}
    for r in range(rounds):  # interleaved, alternating order: a shared machine's drift hits both ways
        for task, run in tasks.items():
            for way, dm in (("cache", cached), ("jpeg", jpeg))[:: 1 if r % 2 == 0 else -1]:
                best[task, way] = min(best[task, way], run(dm))
    n_pool = len(cached.pool_ids)
    rows = {
        task: {
            "cache_images_per_s": n_pool / best[task, "cache"],
            "jpeg_images_per_s": n_pool / best[task, "jpeg"],
            "ratio": best[task, "jpeg"] / best[task, "cache"],
        }
        for task in tasks
    }
    return {"input_px": list(size), "cache_build_seconds": build_s, "tasks": rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 images, 1 round")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    n_images, rounds = (16, 1) if args.quick else (48, 2)
    torch.set_num_threads(os.cpu_count() or 1)
    results: dict = {
        "images": n_images,
        "photo_px": list(PHOTO),
        "batch": BATCH,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "inputs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        ann = write_coco(Path(tmp) / "coco", n_images)
        for size in INPUTS:
            results["inputs"].append(compare(ann, Path(tmp) / "cache", size, rounds))
    print(
        f"Detection data path: {n_images} JPEGs of {PHOTO[0]}x{PHOTO[1]}, batch {BATCH}, SSDLite, "
        f"{results['threads']} threads, best of {rounds} round(s)\n"
    )
    print("| input | pass | from the cache, images/s | from JPEG files, images/s | cache / jpeg |")
    print("| --- | --- | --- | --- | --- |")
    for at in results["inputs"]:
        for task, row in at["tasks"].items():
            print(
                f"| {at['input_px'][0]}x{at['input_px'][1]} | {task} | {row['cache_images_per_s']:,.1f} | "
                f"{row['jpeg_images_per_s']:,.1f} | {row['ratio']:.1f}x |"
            )
    print(
        "\none-time cache build: "
        + ", ".join(
            f"{at['cache_build_seconds']:.1f} s at {at['input_px'][0]}x{at['input_px'][1]}"
            for at in results["inputs"]
        )
    )
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
