"""Fast paths on this machine: bf16 autocast, channels_last, torch.compile, larger
inference batches, each as a ratio against plain fp32 measured in the same run.

    python -m benchmarks.bench_fastpaths            # both models (several minutes on 2 cores)
    python -m benchmarks.bench_fastpaths --quick    # fewer steps, smaller resnet18 images
    python -m benchmarks.bench_fastpaths --device cuda

Two models: the default (``SmallCNN``, 1x16x16, batch 32) and a thesis-like one
(torchvision ``resnet18``, 3x224x224, batch 8, 10 classes, random init: nothing is
downloaded). For each, the work of a round in its two forms:

- train step: forward, cross-entropy, backward, Adam step on one fixed batch;
- inference: forward under ``inference_mode`` on a batch of the eval size (pool scoring).

Variants: ``fp32`` (the baseline), ``bf16-mixed`` (``torch.autocast`` with bfloat16,
what Lightning's ``precision="bf16-mixed"`` does), ``channels_last`` (model and input
in NHWC memory format), ``compile`` (``torch.compile`` of the network, default mode;
its first calls -- the compilation -- are timed apart from the steady state),
``float64`` (``+trainer.precision=64-true``: what portable records cost) and, on a GPU,
``16-mixed``. Pool scoring also at larger batches (the same items per second,
only the batch size changes). Each repetition times every variant once, in rotating
order; a variant's ratio is the median over repetitions of fp32 time / variant time
(> 1 = faster than fp32). Figures to stdout and ``bench-results/bench_fastpaths.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.results import write_results
from src.tensors import at_least_float32

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench-results" / "bench_fastpaths.json"

MODELS = {
    "small_cnn": dict(net="small_cnn", channels=1, px=16, train_batch=32, eval_batches=(32, 256, 1024)),
    "resnet18": dict(net="resnet18", channels=3, px=224, train_batch=8, eval_batches=(8, 32, 64)),
}
SIZES = {"full": dict(reps=5, steps=4, resnet_px=224), "quick": dict(reps=2, steps=2, resnet_px=96)}


def build(spec: dict, device: str, memory_format=torch.contiguous_format) -> torch.nn.Module:
    from src.models.backbones import build_network

    torch.manual_seed(0)
    net = build_network(spec["net"], num_classes=10, in_channels=spec["channels"]).to(device)
    return net.to(memory_format=memory_format)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Variant:
    """One way of running the same network: its autocast dtype, memory format, compilation."""

    def __init__(
        self,
        name: str,
        spec: dict,
        device: str,
        amp: torch.dtype | None = None,
        channels_last: bool = False,
        compile: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        self.name, self.device, self.amp, self.dtype = name, device, amp, dtype
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.net = build(spec, device, self.fmt).to(dtype)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.runner = torch.compile(self.net) if compile else self.net
        self.compile_s: dict[str, float] = {}

    def _autocast(self):
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(device_type, dtype=self.amp, enabled=self.amp is not None)

    def train_step(self, x, y) -> None:
        self.net.train()
        with self._autocast():
            loss = F.cross_entropy(self.runner(x.to(self.dtype, memory_format=self.fmt)), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def infer(self, x) -> None:
        self.net.eval()
        with torch.inference_mode(), self._autocast():
            at_least_float32(self.runner(x.to(self.dtype, memory_format=self.fmt))).softmax(1)

    def warm_up(self, x, y, eval_xs) -> None:
        """First calls (compilation for ``compile``, allocator and kernel choice for all), timed."""
        for kind, fn in [("train", lambda: self.train_step(x, y))] + [
            (f"infer@{len(e)}", lambda e=e: self.infer(e)) for e in eval_xs
        ]:
            start = time.perf_counter()
            fn()
            fn()  # a second call: autograd / shape guards can recompile once
            sync(self.device)
            self.compile_s[kind] = time.perf_counter() - start


def timed(fn, steps: int, device: str) -> float:
    """Seconds per call, over ``steps`` calls."""
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def variants_for(spec: dict, device: str, with_compile: bool) -> list[Variant]:
    out = [
        Variant("fp32", spec, device),
        Variant("bf16-mixed", spec, device, amp=torch.bfloat16),
        Variant("channels_last", spec, device, channels_last=True),
        Variant("float64", spec, device, dtype=torch.float64),
    ]
    if device.startswith("cuda"):
        out.append(Variant("16-mixed", spec, device, amp=torch.float16))
    if with_compile:
        out.append(Variant("compile", spec, device, compile=True))
    return out


def measure_model(spec: dict, device: str, reps: int, steps: int, with_compile: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    shape = (spec["channels"], spec["px"], spec["px"])
    x = torch.rand((spec["train_batch"], *shape), generator=g).to(device)
    y = torch.randint(0, 10, (spec["train_batch"],), generator=g).to(device)
    eval_xs = [torch.rand((b, *shape), generator=g).to(device) for b in spec["eval_batches"]]
    variants = variants_for(spec, device, with_compile)
    for v in variants:
        v.warm_up(x, y, eval_xs)
    small_eval = eval_xs[0]
    times: dict[str, dict[str, list[float]]] = {v.name: {"train": [], "infer": []} for v in variants}
    batch_times: dict[int, list[float]] = {len(e): [] for e in eval_xs}  # fp32, per item
    for rep in range(reps):
        rotated = variants[rep % len(variants) :] + variants[: rep % len(variants)]
        for v in rotated:
            times[v.name]["train"].append(timed(lambda v=v: v.train_step(x, y), steps, device))
            times[v.name]["infer"].append(timed(lambda v=v: v.infer(small_eval), steps, device))
        for e in eval_xs:
            n = max(1, steps * len(small_eval) // len(e))  # about the same items per batch size
            batch_times[len(e)].append(timed(lambda e=e: variants[0].infer(e), n, device) / len(e))
    base = times["fp32"]
    rows = {}
    for v in variants:
        rows[v.name] = {
            "train_step_s": statistics.median(times[v.name]["train"]),
            "infer_batch_s": statistics.median(times[v.name]["infer"]),
            "train_ratio": statistics.median(b / t for b, t in zip(base["train"], times[v.name]["train"])),
            "infer_ratio": statistics.median(b / t for b, t in zip(base["infer"], times[v.name]["infer"])),
            "first_calls_s": v.compile_s,
        }
    first = spec["eval_batches"][0]
    batches = {
        b: {
            "items_per_s": 1 / statistics.median(ts),
            "ratio": statistics.median(a / t for a, t in zip(batch_times[first], ts)),
        }
        for b, ts in batch_times.items()
    }
    return {
        "input": f"{spec['channels']}x{spec['px']}x{spec['px']}",
        "train_batch": spec["train_batch"],
        "eval_batch": first,
        "variants": rows,
        "eval_batches": batches,
    }


def print_model(name: str, res: dict) -> None:
    print(
        f"\n{name} ({res['input']}, train batch {res['train_batch']}, inference batch {res['eval_batch']}; "
        "ratio = fp32 time / variant time, > 1 is faster)"
    )
    print(
        "| variant | train step s | train ratio | inference batch s | inference ratio | first two calls s |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for v, r in res["variants"].items():
        first = ", ".join(f"{k} {s:.1f}" for k, s in r["first_calls_s"].items())
        print(
            f"| {v} | {r['train_step_s']:.4f} | {r['train_ratio']:.2f} | {r['infer_batch_s']:.4f} | "
            f"{r['infer_ratio']:.2f} | {first} |"
        )
    print(f"| pool scoring batch (fp32) | items/s | ratio to batch {res['eval_batch']} |")
    print("| --- | --- | --- |")
    for b, r in res["eval_batches"].items():
        print(f"| {b} | {r['items_per_s']:.0f} | {r['ratio']:.2f} |")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, resnet18 at 96 px")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--reps", type=int, help="repetitions (default: 5, quick 2)")
    parser.add_argument(
        "--steps", type=int, help="timed calls per variant and repetition (default: 4, quick 2)"
    )
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: every core this process may use)"
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    size = dict(SIZES["quick" if args.quick else "full"])
    size.update({k: getattr(args, k) for k in ("reps", "steps") if getattr(args, k)})
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    results: dict = {
        "meta": {
            "mode": "quick" if args.quick else "full",
            **size,
            "device": args.device,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "load_avg": os.getloadavg()[0],
        },
        "models": {},
    }
    for name in args.models:
        spec = dict(MODELS[name])
        if name == "resnet18":
            spec["px"] = size["resnet_px"]
        results["models"][name] = measure_model(
            spec, args.device, size["reps"], size["steps"], with_compile=not args.no_compile
        )
        print_model(name, results["models"][name])
    results["meta"]["load_avg_after"] = os.getloadavg()[0]
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
