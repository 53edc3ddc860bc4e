"""Pool-scoring throughput of the detector: ``python -m benchmarks.bench_detection [--quick]``.

For each detection scorer, ``score_pool`` over a pool of embedded scenes is timed
against the same SSD model's bare inference on the same DataLoader batches:
``model(images)``, i.e. torchvision's eval forward with its own post-processing
(what any user of the detector pays to get detections). Each round runs every
variant once in a rotating order; the reported ratio is the median over rounds of
bare time / variant time (robust to a machine whose speed drifts), in wall and in process
CPU time (steadier on a shared machine). Goal: >= 0.9.
The network-only time (backbone + head, no post-processing) is reported too, to
show how much of a pass is the network. Not a pass/fail test.
Figures go to stdout and to ``bench-results/bench_detection.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from src.data.detection.datamodule import DetectionDataModule, SceneSource
from src.loop.pool import score_pool
from src.models.detector import SSDDetector
from src.selection.scorers import get_scorer
from src.tasks import detection

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench-results" / "bench_detection.json"
SIZES = {"full": dict(items=96, rounds=5, batch=32), "quick": dict(items=32, rounds=2, batch=16)}
VARIANTS = (
    ("entropy", False),
    ("margin", False),
    ("least_confidence", False),
    ("loss", False),
    ("entropy", True),
)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller pool, fewer rounds (a smoke run)")
    parser.add_argument("--arch", default="ssdlite320_mobilenet_v3_large")
    parser.add_argument("--size", default="256x144", help="input width x height")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    size = SIZES[mode]
    width, height = (int(v) for v in args.size.lower().split("x"))

    torch.manual_seed(0)
    dm = DetectionDataModule(
        "scenes",
        SceneSource(n=size["items"] + 2),
        {"pool": size["items"], "val": 1, "test": 1},
        image_size=(width, height),
        eval_batch_size=size["batch"],
    )
    dm.setup()
    model = SSDDetector(num_classes=dm.num_classes, arch=args.arch, input_size=(width, height)).eval()
    loader = dm.pool_dataloader(dm.pool_ids)
    n = len(dm.pool_ids)

    def bare():
        with torch.inference_mode():
            for images, _, _ in loader:
                model(images)

    def network_only():
        with torch.inference_mode():
            for images, _, _ in loader:
                model.forward_parts(images, None)

    def scorer(name, predictions):
        adapter = functools.partial(detection.score_batch, scorer=get_scorer(name))
        return lambda: score_pool(model, loader, adapter, want_predictions=predictions, progress=False)

    variants = {"bare forward": bare, "network only": network_only}
    for name, predictions in VARIANTS:
        variants[f"{name}{' + predictions' if predictions else ''}"] = scorer(name, predictions)
    bare()  # warm-up: allocator, kernels
    times = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    keys = list(variants)
    for r in range(size["rounds"]):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for k in order:
            t0, c0 = time.perf_counter(), time.process_time()
            variants[k]()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    rows = {}
    for k in keys:
        ratios = [b / t for b, t in zip(times["bare forward"], times[k])]
        cpu_ratios = [b / t for b, t in zip(cpu["bare forward"], cpu[k])]
        rows[k] = {
            "seconds": statistics.median(times[k]),
            "items_per_s": n / statistics.median(times[k]),
            "ratio_to_bare": statistics.median(ratios),
            "cpu_seconds": statistics.median(cpu[k]),
            "cpu_ratio_to_bare": statistics.median(cpu_ratios),
        }
    scorers_only = [v["ratio_to_bare"] for k, v in rows.items() if k not in ("bare forward", "network only")]
    result = {
        "meta": {
            "mode": mode,
            "arch": args.arch,
            "input": [width, height],
            "pool": n,
            "batch": size["batch"],
            "rounds": size["rounds"],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
        },
        "variants": rows,
        "min_ratio": min(scorers_only),
        "min_cpu_ratio": min(
            v["cpu_ratio_to_bare"] for k, v in rows.items() if k not in ("bare forward", "network only")
        ),
    }
    print(
        f"Detection pool scoring: {args.arch} {width}x{height}, {n} scenes, batch {size['batch']}, "
        f"median of {size['rounds']} rounds"
    )
    print(f"{'variant':<26}{'seconds':>9}{'images/s':>10}{'vs bare':>9}{'CPU s':>8}{'CPU vs bare':>13}")
    for k, v in rows.items():
        print(
            f"{k:<26}{v['seconds']:>9.2f}{v['items_per_s']:>10.1f}{v['ratio_to_bare']:>9.2f}"
            f"{v['cpu_seconds']:>8.2f}{v['cpu_ratio_to_bare']:>13.2f}"
        )
    print(
        f"slowest scorer / bare forward: {result['min_ratio']:.2f} wall, {result['min_cpu_ratio']:.2f} CPU "
        "(goal >= 0.9; 'vs bare' = bare time / variant time, median over rounds)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
