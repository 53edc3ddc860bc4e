"""Selection benchmark: time and peak memory of the standard acquisition methods (``make bench``).

    python -m benchmarks.bench_selection            # full: 1,000 of 100,000 items, a few minutes
    python -m benchmarks.bench_selection --quick    # smoke version: 20 of 1,000 items, in one process

Two parts:

1. Choosing ``budget`` items from a pool of ``items`` with 512-d features at 10 and
   1,000 classes, per method, each measurement in a fresh process (``--probe``): wall
   time of the selection call and peak resident memory, both the process' absolute
   peak (VmHWM: Python + torch + the synthesised inputs + the method's working memory)
   and the extra over the resident set just before the call (the method's own
   working memory; reset and read as ``benchmarks/memprobe.py`` does). Features and
   softmax probabilities are synthesised (seeded); the model's forward passes are not
   part of this, they are part 2. BALD and MC entropy are the per-batch math over
   ``[T, B, C]`` probabilities of T = ``passes`` passes (one synthesised batch reused
   for every pool batch: the arithmetic is the same) plus the top-k. baal's
   implementation of the same method runs in the same way, in its own fresh
   process, where baal has the method (BALD: its batch-generator path, BatchBALD,
   power sampling); baal has no core-set or BADGE. BatchBALD is a small-budget method
   (it holds [T, N, C] for its candidates and costs O(N S T C) per pick): it is
   measured choosing 10 of 1,000 candidates.
   Goals: core-set and BADGE under 60 s and under 2 GB absolute peak. ``--quick``
   runs every probe in this one process (no process start per probe, so a smoke run
   takes seconds); its absolute peaks then include earlier probes' and mean little.
2. BALD's pool pass with the small CNN: T stochastic passes (MC dropout) plus the
   BALD math, against T plain eval forward passes over the same batches; median over
   interleaved repeats of the ratio within a repeat. Goal: ratio <= 1 (at most T x
   the plain forward pass).

Figures go to stdout and ``bench-results/bench_selection.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.results import machine_meta, write_results

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench-results" / "bench_selection.json"
FEATURE_DIM = 512
CLASSES = (10, 1000)
SIZES = {
    "full": dict(
        items=100_000,
        budget=1000,
        labelled=1000,
        passes=20,
        batch=1024,
        bb_candidates=1000,
        bb_budget=10,
        cnn_items=512,
        cnn_passes=10,
        cnn_repeats=3,
    ),
    "quick": dict(
        items=1_000,
        budget=20,
        labelled=20,
        passes=3,
        batch=256,
        bb_candidates=50,
        bb_budget=2,
        cnn_items=128,
        cnn_passes=2,
        cnn_repeats=1,
    ),
}
# (method, label, runs at which class counts, implementation)
METHODS = (
    ("coreset", "core-set (k-centre greedy)", (10,), "al-select"),
    ("badge", "BADGE (k-means++ on gradient embeddings)", CLASSES, "al-select"),
    ("bald", "BALD + top-k", CLASSES, "al-select"),
    ("baal_bald", "BALD + top-k", CLASSES, "baal"),
    ("mc_entropy", "MC entropy + top-k", CLASSES, "al-select"),
    ("power", "power sampling over 100k scores", (10,), "al-select"),
    ("baal_power", "power sampling over 100k scores", (10,), "baal"),
    ("batchbald", "BatchBALD (small budget)", (10,), "al-select"),
    ("baal_batchbald", "BatchBALD (small budget)", (10,), "baal"),
)
# what bench.py uses for its memory probes: large buffers are their own mappings, returned when freed
FIXED_MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- inputs (seeded) -------------------------------------------------------------------------------
def synth_probs(generator, rows: int, classes: int):
    import torch

    logits = torch.randn(rows, classes, generator=generator) * 3.0
    return torch.softmax(logits, dim=1)


def synth_mc_batch(generator, passes: int, batch: int, classes: int):
    import torch

    centre = torch.randn(1, batch, classes, generator=generator) * 2.0
    return torch.softmax(centre + torch.randn(passes, batch, classes, generator=generator), dim=2)


def build(method: str, s: dict, classes: int):
    """The probe's inputs and the selection call (a closure), built before the peak is reset."""
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(0)
    n, k, t, b = s["items"], s["budget"], s["passes"], s["batch"]
    if method == "coreset":
        from src.selection.coreset import k_center_greedy

        feats, labelled = (
            torch.randn(n, FEATURE_DIM, generator=g),
            torch.randn(s["labelled"], FEATURE_DIM, generator=g),
        )
        return lambda: k_center_greedy(feats, labelled, k)
    if method == "badge":
        from src.selection.badge import badge_select

        feats, probs = torch.randn(n, FEATURE_DIM, generator=g), synth_probs(g, n, classes)
        return lambda: badge_select(probs, feats, k, generator=torch.Generator().manual_seed(1))
    if method in ("bald", "mc_entropy"):
        from src.selection.bald import bald, mc_entropy

        fn, batch_probs = (bald if method == "bald" else mc_entropy), synth_mc_batch(g, t, b, classes)

        def run():
            scores = torch.empty(n)
            for start in range(0, n, b):
                stop = min(start + b, n)
                scores[start:stop] = fn(batch_probs[:, : stop - start])
            return torch.topk(scores, k).indices

        return run
    if method == "baal_bald":
        from baal.active.heuristics import BALD

        batch_probs = synth_mc_batch(g, t, b, classes).permute(1, 2, 0).contiguous().numpy()  # [B, C, T]

        def batches():
            for start in range(0, n, b):
                yield batch_probs[: min(b, n - start)]

        return lambda: np.argsort(-BALD().get_uncertainties_generator(batches()), kind="stable")[:k]
    if method in ("power", "baal_power"):
        scores = torch.rand(n, generator=g, dtype=torch.float64)
        if method == "power":
            from src.selection.stochastic import stochastic_select

            return lambda: stochastic_select(
                scores, k, mode="power", beta=1.0, generator=torch.Generator().manual_seed(1)
            )
        from baal.active.heuristics import Precomputed
        from baal.active.heuristics.stochastics import PowerSampling

        np.random.seed(1)
        return lambda: PowerSampling(Precomputed(), query_size=k, temperature=1.0).get_ranks(scores.numpy())[
            0
        ]
    if method in ("batchbald", "baal_batchbald"):
        probs = synth_mc_batch(g, t, s["bb_candidates"], classes)
        if method == "batchbald":
            from src.selection.bald import batch_bald

            return lambda: batch_bald(probs, s["bb_budget"], generator=torch.Generator().manual_seed(1))[0]
        from baal.active.heuristics import BatchBALD

        torch.manual_seed(1)
        baal_probs = probs.permute(1, 2, 0).contiguous().numpy()
        # baal picks num_samples + 1 items; its default 500 sampled configurations
        return lambda: BatchBALD(num_samples=s["bb_budget"] - 1).compute_score(baal_probs)
    raise ValueError(f"unknown probe {method!r}")


def probe(method: str, mode: str, classes: int) -> dict:
    """One measurement in this (fresh) process."""
    import torch

    from benchmarks.peakmem import reset_peak, status_kib

    s = SIZES[mode]
    run = build(method, s, classes)
    gc.collect()
    before = status_kib()
    reset = reset_peak()
    t0 = time.perf_counter()
    run()
    seconds = time.perf_counter() - t0
    after = status_kib()
    return {
        "method": method,
        "classes": classes,
        "seconds": seconds,
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "peak_total_mb": after["VmHWM"] / 1024,
        "peak_extra_mb": max(after["VmHWM"] - before["VmRSS"], 0) / 1024 if reset else None,
        "inputs_rss_mb": before["VmRSS"] / 1024,
    }


def run_probe(method: str, mode: str, classes: int) -> dict:
    env = {**os.environ, **FIXED_MMAP_ENV}
    cmd = [sys.executable, "-m", "benchmarks.bench_selection", "--probe", method, "--classes", str(classes)]
    if mode == "quick":
        cmd.append("--quick")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"probe {method} C={classes} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- part 2: BALD's pool pass with the small CNN -------------------------------------------------
def bench_bald_pool_pass(s: dict) -> dict:
    import torch

    from src.models.backbones import SmallCNN
    from src.models.mc_dropout import mc_dropout_mode, mc_softmax
    from src.selection.bald import bald

    torch.manual_seed(0)
    net = SmallCNN(num_classes=10).eval()
    batches = list(torch.rand(s["cnn_items"], 1, 28, 28).split(s["batch"]))
    passes = s["cnn_passes"]

    def plain():
        with torch.inference_mode():
            for x in batches:
                for _ in range(passes):
                    torch.softmax(net(x), dim=1)

    def mc():
        with mc_dropout_mode(net), torch.inference_mode():
            for x in batches:
                bald(mc_softmax(net, x, passes))

    plain(), mc()  # warm-up
    ratios, plain_s, mc_s = [], [], []
    for r in range(s["cnn_repeats"]):
        order = (plain, mc) if r % 2 == 0 else (mc, plain)
        times = {}
        for fn in order:
            t0 = time.perf_counter()
            fn()
            times[fn] = time.perf_counter() - t0
        plain_s.append(times[plain])
        mc_s.append(times[mc])
        ratios.append(times[mc] / times[plain])
    return {
        "items": s["cnn_items"],
        "passes": passes,
        "batch": s["batch"],
        "repeats": s["cnn_repeats"],
        "plain_T_passes_seconds": statistics.median(plain_s),
        "bald_pass_seconds": statistics.median(mc_s),
        "ratio_to_T_plain_passes": statistics.median(ratios),
        "goal": "ratio <= 1",
    }


# -- report ------------------------------------------------------------------------------------
def report(res: dict) -> str:
    s = res["meta"]["sizes"]
    lines = [
        f"1. Choosing {s['budget']:,} of {s['items']:,} items ({FEATURE_DIM}-d features; BALD/MC entropy "
        f"T = {s['passes']}; BatchBALD {s['bb_budget']} of {s['bb_candidates']:,} candidates, T = {s['passes']})",
        "",
        "| method | implementation | C | seconds | peak MB (process) | extra MB (method) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in res["selection"]:
        extra = "-" if row["peak_extra_mb"] is None else f"{row['peak_extra_mb']:,.0f}"
        lines.append(
            f"| {row['label']} | {row['implementation']} | {row['classes']} | {row['seconds']:.2f} | "
            f"{row['peak_total_mb']:,.0f} | {extra} |"
        )
    p = res["bald_pool_pass"]
    loads = [row["load_average_1min"] for row in res["selection"]]
    lines.append(
        f"(1-minute load average during the probes: {min(loads):.1f} to {max(loads):.1f} "
        f"on {os.cpu_count()} CPUs)"
    )
    lines += [
        "",
        f"2. BALD pool pass, small CNN, {p['items']} items 1x28x28, T = {p['passes']}: "
        f"{p['bald_pass_seconds']:.2f} s vs {p['plain_T_passes_seconds']:.2f} s for T plain passes, "
        f"ratio {p['ratio_to_T_plain_passes']:.3f} ({p['goal']})",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Selection benchmark (figures to stdout and JSON).")
    p.add_argument("--quick", action="store_true", help="small sizes, a smoke check in seconds")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file (default {DEFAULT_OUT})")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    p.add_argument("--classes", type=int, default=10, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "full"
    if args.probe:
        print(json.dumps(probe(args.probe, mode, args.classes)))
        return 0

    started = time.perf_counter()
    rows = []
    for method, label, class_counts, impl in METHODS:
        for c in class_counts:
            log(f"[bench_selection] {method} C={c} ...")
            row = run_probe(method, mode, c) if mode == "full" else probe(method, mode, c)
            rows.append({**row, "label": label, "implementation": impl})
            log(f"[bench_selection]   {row['seconds']:.2f} s, peak {row['peak_total_mb']:.0f} MB")
    log("[bench_selection] BALD pool pass with the small CNN ...")
    pool_pass = bench_bald_pool_pass(SIZES[mode])
    res = {
        "meta": {
            "mode": mode,
            "sizes": SIZES[mode],
            **machine_meta(),
            "seconds": time.perf_counter() - started,
        },
        "selection": rows,
        "bald_pool_pass": pool_pass,
    }
    print(report(res))
    print(f"\n{res['meta']['seconds']:.0f} s")
    write_results(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
