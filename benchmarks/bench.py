"""Speed and memory benchmark of the active-learning framework: ``make bench``.

    python -m benchmarks.bench            # full run, about 1 minute on 2 idle CPU cores
    python -m benchmarks.bench --quick    # smaller sizes: a smoke check, < 40 s

Every figure is a ratio against a bare baseline measured in the same process on
the same batches, so the numbers compare across machines; nothing here is a
pass/fail timing test. Three parts:

1. Pool-scoring throughput: ``score_pool`` with each model-based scorer against a
   bare ``torch.inference_mode()`` forward loop over the same pool DataLoader
   (default small CNN, the dataset config's eval batch size). Each round runs
   every variant once, in a rotating order; the ratio is the median over rounds
   of bare time / variant time within the round (robust to the machine's speed
   drifting between rounds). Goal: ratio >= 0.95.
2. One whole round (a real ``ActiveLearningLoop`` on the embedded digits, default
   config with a short fit), split into select / reset / fit / test as the loop's
   own records time them, against a bare PyTorch loop doing the same forward /
   backward / optimiser steps and eval forwards on the same, pre-gathered batches
   (best run of each phase, for the loop and for the bare work alike).
   Framework overhead = (round time - bare compute time) / round time: everything
   that is not a forward, backward or optimiser step (Lightning, callbacks,
   metrics, data gathering, selection bookkeeping, the baseline reset).
3. Peak memory of scoring a pool of 100,000 items with 10 and 1,000 classes, each
   measurement in a fresh process (``benchmarks/memprobe.py``), against a naive
   implementation that keeps the pool's N x C probability matrix. Goal: the peak
   does not grow with N x C; what grows with the class count is one batch's
   logits (batch x C), bounded by the eval batch size.

Figures go to stdout as tables and to ``bench-results/bench.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.results import machine_meta, write_results

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("PYTORCH_LIGHTNING_DISABLE_TIPS", "1")

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
DEFAULT_OUT = REPO / "bench-results" / "bench.json"
SCORERS = (
    ("entropy", False),
    ("margin", False),
    ("least_confidence", False),
    ("loss", False),
    ("entropy", True),
)

SIZES = {
    "full": dict(
        score_items=5_120,
        score_repeats=12,
        round_epochs=5,
        round_repeats=5,
        mem_items=100_000,
        mem_extra=True,
    ),
    "quick": dict(
        score_items=2_048, score_repeats=3, round_epochs=2, round_repeats=1, mem_items=20_000, mem_extra=False
    ),
}
# the round: a random base of 200, then one entropy selection of 100 -> the measured round trains on 300
ROUND_BASE, ROUND_BUDGET = 200, 100
MEM_CLASSES = (10, 1000)
# glibc raises its mmap threshold after large frees, and then keeps freed batch buffers in
# the heap: peak RSS would show the allocator's retention, not what scoring holds live.
# A fixed threshold makes every large tensor its own mapping, returned when freed.
FIXED_MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- config and objects, built as src.run builds them -------------------------------------------
def compose_cfg(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import src.config.resolvers  # noqa: F401  (registers the slug / run_dir resolvers)

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def synthetic_datamodule(cfg, n_items: int, n_classes: int):
    """The config's ActiveDataModule, its built data replaced by ``n_items`` random pool images."""
    import hydra
    import numpy as np
    import torch

    from src.data.recipes import BuiltDataset

    dm = hydra.utils.instantiate(cfg.dataset)
    size, channels = int(cfg.dataset.image_size), int(cfg.dataset.channels)
    gen = torch.Generator().manual_seed(0)
    dm.data = BuiltDataset(
        images=torch.randint(0, 256, (n_items, channels, size, size), dtype=torch.uint8, generator=gen),
        labels=torch.randint(0, n_classes, (n_items,), generator=gen),
        source_index=np.zeros(n_items, dtype=np.int64),
        original_id=np.arange(n_items),
        source_row=np.arange(n_items),
        pool_ids=np.arange(n_items),
        val_ids=np.zeros(0, np.int64),
        test_ids=np.zeros(0, np.int64),
        class_names=[str(c) for c in range(n_classes)],
        source_names=["synthetic"],
    )
    return dm


# -- 1. pool-scoring throughput --------------------------------------------------------------------
def bench_scoring(cfg, n_items: int, repeats: int) -> dict:
    import hydra
    import torch

    from src.loop.pool import score_pool
    from src.selection.scorers import get_scorer
    from src.tasks.classification import score_batch

    n_classes = 10
    dm = synthetic_datamodule(cfg, n_items, n_classes)
    torch.manual_seed(int(cfg.seed))
    model = hydra.utils.instantiate(cfg.model.module, num_classes=n_classes, in_channels=dm.channels)
    model.eval()
    loader = dm.pool_dataloader(dm.pool_ids)

    def bare():
        with torch.inference_mode():
            for images, _, _ in loader:
                model(images)

    variants = {"bare forward": bare}
    for name, preds in SCORERS:
        adapter = functools.partial(score_batch, scorer=get_scorer(name))
        label = name + (" + predictions" if preds else "")
        variants[label] = lambda a=adapter, p=preds: score_pool(
            model, loader, a, want_predictions=p, progress=False
        )

    labels = list(variants)
    bare()  # warm-up, untimed: thread pool, kernel selection, first-touch of the data
    times = {k: [] for k in labels}
    for r in range(repeats):  # interleaved; the order rotates so no variant always runs first
        for k in labels[r % len(labels) :] + labels[: r % len(labels)]:
            t0 = time.perf_counter()
            variants[k]()
            times[k].append(time.perf_counter() - t0)

    # The ratio pairs each run with the bare run of the same round (seconds apart, so a change
    # in machine speed or load hits both) and takes the median over rounds; items/s is the best run.
    bare_runs = times["bare forward"]
    rows = {}
    for k in labels:
        paired = [b / t for b, t in zip(bare_runs, times[k])]
        best = min(times[k])
        rows[k] = {
            "seconds": best,
            "items_per_s": n_items / best,
            "ratio_to_bare": statistics.median(paired),
            "ratio_best_to_best": min(bare_runs) / best,
            "paired_ratios": paired,
            "runs": times[k],
        }
    scorer_rows = [v for k, v in rows.items() if k != "bare forward"]
    return {
        "pool_items": n_items,
        "classes": n_classes,
        "batch_size": dm.eval_batch_size,
        "image_shape": [dm.channels, int(cfg.dataset.image_size), int(cfg.dataset.image_size)],
        "model": str(cfg.model.module.net.name),
        "repeats": repeats,
        "statistic": "items/s: best run; ratio: median over rounds of bare time / scorer time in the same round",
        "threads": torch.get_num_threads(),
        "variants": rows,
        "min_ratio": min(v["ratio_to_bare"] for v in scorer_rows),
        "goal_min_ratio": 0.95,
    }


# -- 2. one whole round ----------------------------------------------------------------------------------
def run_loop_once(cfg, run_dir: Path):
    """A fresh loop built as ``python -m src.run`` builds it, run to the end: (records, datamodule)."""
    from src.experiment.build import build_loop

    loop = build_loop(cfg, run_dir, progress=False)
    return loop.run(), loop.dm


def bare_round(cfg, dm, labelled, candidates, epochs: int, seed: int) -> dict:
    """The round's forward/backward/optimiser work alone, on batches gathered beforehand."""
    import torch
    import torch.nn.functional as F

    from src.experiment.build import build_model
    from src.selection.schedule import steps_per_epoch

    model, _ = build_model(cfg, dm)
    opt = model.configure_optimizers()
    if isinstance(opt, dict):
        opt = opt["optimizer"]
    dm.set_labelled(
        labelled,
        shuffle=cfg.selection.shuffle,
        seed=seed,
        steps_per_epoch=steps_per_epoch(cfg.fit.steps_per_epoch, len(dm.pool_ids), dm.batch_size),
    )
    train_loader = dm.train_dataloader()
    train_epochs = [list(train_loader) for _ in range(epochs)]
    val, test = list(dm.val_dataloader()), list(dm.test_dataloader())
    pool = list(dm.pool_dataloader(candidates))

    def forward_only(batches):
        model.eval()
        with torch.inference_mode():
            for images, _, _ in batches:
                model(images)

    # in the loop's order: fit, test, then the pool pass that selects the next round's items
    t0 = time.perf_counter()
    for batches in train_epochs:  # fit: steps, then the epoch's validation
        model.train()
        for images, labels, _ in batches:
            opt.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            opt.step()
        forward_only(val)
    t1 = time.perf_counter()
    forward_only(test)  # test
    t2 = time.perf_counter()
    forward_only(pool)  # select
    t3 = time.perf_counter()
    return {
        "select": t3 - t2,
        "reset": 0.0,
        "fit": t1 - t0,
        "test": t2 - t1,
        "train_steps": sum(len(b) for b in train_epochs),
    }


def bench_round(epochs: int, repeats: int) -> dict:
    import numpy as np

    from src.loop.trainers import quiet_libraries
    from src.selection.schedule import STREAM_SHUFFLE, derive_seed

    quiet_libraries()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)
    overrides = [
        "logger=none",
        "progress=false",
        f"selection.base_size={ROUND_BASE}",
        f"selection.budget={ROUND_BUDGET}",
        "selection.rounds=2",
        f"trainer.max_epochs={epochs}",
    ]
    cfg = compose_cfg(overrides)
    phases = ("select", "reset", "fit", "test")
    measured = {p: [] for p in phases}
    bare = {p: [] for p in phases}
    with tempfile.TemporaryDirectory(prefix="al-bench-") as tmp:
        for i in range(repeats):
            records, dm = run_loop_once(cfg, Path(tmp) / f"run{i}")
            base, record = records[0], records[1]  # round 1: selected by entropy from the rest of the pool
            for p in phases:
                measured[p].append(getattr(record, f"{p}_seconds"))
            labelled = np.asarray(base.selected_ids + record.selected_ids, dtype=np.int64)
            candidates = np.setdiff1d(np.sort(dm.pool_ids), np.asarray(base.selected_ids, dtype=np.int64))
            seed = derive_seed(int(cfg.seed), 1, STREAM_SHUFFLE)
            for _ in range(3):  # the bare work is cheap: three runs per loop run, the first also warms up
                b = bare_round(cfg, dm, labelled, candidates, int(record.epochs), seed)
                for p in phases:
                    bare[p].append(b[p])

    best = {p: min(measured[p]) for p in phases}
    bare_best = {p: min(bare[p]) for p in phases}
    total, bare_total = sum(best.values()), sum(bare_best.values())
    return {
        "dataset": str(cfg.dataset.name),
        "model": str(cfg.model.module.net.name),
        "scorer": str(cfg.scorer.name),
        "labelled": int(record.n_labelled),
        "pool_scored": int(len(candidates)),
        "val_items": int(len(dm.data.val_ids)),
        "test_items": int(len(dm.data.test_ids)),
        "epochs": int(record.epochs),
        "train_steps": int(b["train_steps"]),
        "batch_size": dm.batch_size,
        "repeats": repeats,
        "statistic": "best of repeats, per phase",
        "overrides": overrides,
        "phases": {
            p: {
                "seconds": best[p],
                "bare_seconds": bare_best[p],
                "overhead_seconds": best[p] - bare_best[p],
                "overhead_share_of_round": (best[p] - bare_best[p]) / total,
                "runs": measured[p],
                "bare_runs": bare[p],
            }
            for p in phases
        },
        "total_seconds": total,
        "bare_compute_seconds": bare_total,
        "overhead_share": (total - bare_total) / total,
    }


# -- 3. peak memory ----------------------------------------------------------------------------------
def probe(mode: str, items: int, classes: int, batch: int, fixed_mmap: bool) -> dict:
    env = {**os.environ, **(FIXED_MMAP_ENV if fixed_mmap else {})}
    if not fixed_mmap:
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.memprobe",
        "--mode",
        mode,
        "--items",
        str(items),
        "--classes",
        str(classes),
        "--batch-size",
        str(batch),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_memory(items: int, batch: int, extra: bool) -> dict:
    """extra: also a 5x smaller pool (does the peak grow with N?) and the default allocator."""
    jobs = {}
    for mode in ("score_pool", "naive"):
        for c in MEM_CLASSES:
            jobs[(mode, c, items, True)] = None
    small = max(items // 5, batch)
    if extra:
        jobs[("score_pool", MEM_CLASSES[-1], small, True)] = None
        for c in MEM_CLASSES:
            jobs[("score_pool", c, items, False)] = None
    with ThreadPoolExecutor(max_workers=2) as pool:  # one process per measurement, two at a time
        futures = {k: pool.submit(probe, k[0], k[2], k[1], batch, k[3]) for k in jobs}
        results = {k: f.result() for k, f in futures.items()}

    lo, hi = MEM_CLASSES
    matrix_growth_mb = items * (hi - lo) * 4 / 2**20

    def summary(mode: str, fixed: bool) -> dict:
        a, b = results[(mode, lo, items, fixed)], results[(mode, hi, items, fixed)]
        return {
            f"peak_extra_mb_c{lo}": a["peak_extra_mb"],
            f"peak_extra_mb_c{hi}": b["peak_extra_mb"],
            "ratio_c1000_to_c10": b["peak_extra_mb"] / max(a["peak_extra_mb"], 1e-9),
            # share of the full matrix' growth (N x (1000 - 10) float32) that the peak shows
            "growth_share_of_matrix": (b["peak_extra_mb"] - a["peak_extra_mb"]) / matrix_growth_mb,
            "result_mb": b["result_mb"],
        }

    out = {
        "pool_items": items,
        "batch_size": batch,
        "classes": list(MEM_CLASSES),
        "method": results[("score_pool", lo, items, True)]["method"],
        "allocator": "glibc, MALLOC_MMAP_THRESHOLD_=131072 (freed batch buffers return to the OS)",
        "full_matrix_mb_c1000": items * hi * 4 / 2**20,
        "batch_logits_mb_c1000": batch * hi * 4 / 2**20,
        "score_pool": summary("score_pool", True),
        "naive_full_matrix": summary("naive", True),
        "goal": "peak independent of the class count beyond one batch's logits",
    }
    if extra:
        out["score_pool_small_pool"] = {
            "pool_items": small,
            "classes": hi,
            "peak_extra_mb": results[("score_pool", hi, small, True)]["peak_extra_mb"],
        }
        out["score_pool_default_allocator"] = summary("score_pool", False)
    return out


# -- report ------------------------------------------------------------------------------------------------
def table(rows: list[list[str]], header: list[str]) -> str:
    rows = [header] + rows
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(res: dict) -> str:
    s, r, m = res["scoring"], res["round"], res["memory"]
    out = [
        f"# al-select benchmark ({res['meta']['mode']}; torch {res['meta']['torch']}, "
        f"{res['meta']['threads']} threads, {res['meta']['machine']})",
        "",
    ]
    out.append(
        f"1. Pool scoring: {s['pool_items']:,} items {'x'.join(map(str, s['image_shape']))} uint8, "
        f"{s['model']}, {s['classes']} classes, batch {s['batch_size']}, {s['repeats']} interleaved rounds"
    )
    out.append(
        table(
            [
                [
                    k,
                    f"{v['seconds']:.3f}",
                    f"{v['items_per_s']:,.0f}",
                    f"{v['ratio_to_bare']:.3f}",
                    f"{min(v['paired_ratios']):.2f}-{max(v['paired_ratios']):.2f}",
                ]
                for k, v in s["variants"].items()
            ],
            ["variant", "best s", "items/s", "ratio", "ratio range"],
        )
    )
    out.append("ratio: median over rounds of (bare forward time / variant time) in the same round")
    out.append(f"lowest scorer ratio {s['min_ratio']:.3f} (goal >= {s['goal_min_ratio']})")
    out.append("")
    out.append(
        f"2. One round: {r['dataset']}, {r['model']}, {r['scorer']}, {r['labelled']} labelled, "
        f"{r['pool_scored']} scored, {r['epochs']} epochs = {r['train_steps']} steps of {r['batch_size']}, "
        f"val {r['val_items']} / test {r['test_items']}, best of {r['repeats']}"
    )
    rows = [
        [
            p,
            f"{v['seconds']:.3f}",
            f"{v['bare_seconds']:.3f}",
            f"{v['overhead_seconds']:.3f}",
            f"{100 * v['overhead_share_of_round']:.1f}%",
        ]
        for p, v in r["phases"].items()
    ]
    rows.append(
        [
            "round",
            f"{r['total_seconds']:.3f}",
            f"{r['bare_compute_seconds']:.3f}",
            f"{r['total_seconds'] - r['bare_compute_seconds']:.3f}",
            f"{100 * r['overhead_share']:.1f}%",
        ]
    )
    out.append(table(rows, ["phase", "seconds", "bare fwd/bwd s", "overhead s", "share of round"]))
    out.append("")
    out.append(
        f"3. Peak memory of scoring {m['pool_items']:,} items (batch {m['batch_size']}), extra MB over "
        f"the process before scoring ({m['method']})"
    )
    lo, hi = m["classes"]
    rows = []
    for key, label in (
        ("score_pool", "score_pool"),
        ("naive_full_matrix", "naive N x C matrix"),
        ("score_pool_default_allocator", "score_pool, default malloc"),
    ):
        if key in m:
            v = m[key]
            rows.append(
                [
                    label,
                    f"{v[f'peak_extra_mb_c{lo}']:.1f}",
                    f"{v[f'peak_extra_mb_c{hi}']:.1f}",
                    f"{v['ratio_c1000_to_c10']:.2f}",
                    f"{v['growth_share_of_matrix']:.3f}",
                ]
            )
    out.append(table(rows, ["approach", f"C={lo}", f"C={hi}", f"C{hi}/C{lo}", "growth / matrix"]))
    out.append(
        f"reference: the N x C float32 matrix at C={hi} is {m['full_matrix_mb_c1000']:.1f} MB, "
        f"one batch's logits {m['batch_logits_mb_c1000']:.1f} MB"
    )
    if "score_pool_small_pool" in m:
        sp = m["score_pool_small_pool"]
        out.append(
            f"score_pool with a 5x smaller pool ({sp['pool_items']:,} items) at C={hi}: "
            f"{sp['peak_extra_mb']:.1f} MB extra"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Speed and memory benchmark (figures to stdout and JSON).")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke check (< 40 s)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "full"
    size = SIZES[mode]
    started = time.perf_counter()

    cfg = compose_cfg(["logger=none", "progress=false"])
    part_seconds = {}

    def part(name, fn, *a):
        t0 = time.perf_counter()
        result = fn(*a)
        part_seconds[name] = time.perf_counter() - t0
        log(f"[bench] {name}: {part_seconds[name]:.1f} s")
        return result

    log(
        f"[bench] {mode}: pool scoring {size['score_items']} items x {size['score_repeats']}; one round "
        f"{size['round_epochs']} epochs x {size['round_repeats']}; peak memory {size['mem_items']} items"
    )
    scoring = part("scoring", bench_scoring, cfg, size["score_items"], size["score_repeats"])
    rnd = part("round", bench_round, size["round_epochs"], size["round_repeats"])
    memory = part(
        "memory", bench_memory, size["mem_items"], int(cfg.dataset.eval_batch_size), size["mem_extra"]
    )

    res = {
        "meta": {
            "mode": mode,
            **machine_meta(),
            "seconds": time.perf_counter() - started,
            "part_seconds": part_seconds,
        },
        "scoring": scoring,
        "round": rnd,
        "memory": memory,
    }
    print(report(res))
    print(f"\n{res['meta']['seconds']:.0f} s")
    write_results(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
