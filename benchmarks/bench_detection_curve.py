"""The default detection run's learning curve and time: ``python -m benchmarks.bench_detection_curve``.

What a user gets from ``python -m src.run task=detection`` on this machine, through the
real CLI (subprocesses, their own start-up included):

1. ``python -m src.pretrain task=detection``: the synthetic baseline that the first
   default run makes (``baseline.make_if_missing``), timed on its own;
2. ``python -m src.run task=detection scorer=<name>`` for every scorer, from that baseline;
3. the test mAP@0.5 of the two starting points, on the same test split: the untrained
   model (``baseline=untrained``) and the synthetic baseline before any round.

Time is reported as wall seconds and as CPU seconds of the child processes (user +
system): on a shared machine the wall time grows with the other jobs' load, the CPU
time much less; the load average is recorded next to them. The first default run
costs pretraining + one run. Not a pass/fail test: the goals (first run < 10 min,
mAP@0.5 >= 0.3 at the last round, every curve above the untrained start) are printed
with the figures. Figures go to stdout and ``bench-results/bench_detection_curve.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench-results" / "bench_detection_curve.json"
SCORERS = ("entropy", "margin", "least_confidence", "loss", "random")
# --quick: the same commands at smoke-test sizes (seconds, not minutes; the figures mean nothing)
QUICK = [
    "dataset.source.n=24",
    "dataset.sizes.pool=12",
    "dataset.sizes.val=4",
    "dataset.sizes.test=4",
    "selection.budget=4",
    "selection.rounds=2",
    "trainer.max_epochs=1",
    "baseline.epochs=1",
    "baseline.dataset.source.n=10",
    "baseline.dataset.sizes.pool=8",
    "baseline.dataset.sizes.val=2",
]


def timed(module: str, args: list[str]) -> dict:
    """Run ``python -m module args`` from the repo root; wall and child CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}


def start_map50(overrides: list[str]) -> float:
    """Test mAP@0.5 of the model every round starts from, before any round trains it."""
    import pytorch_lightning as pl
    from hydra import compose, initialize_config_dir

    import src.config.resolvers  # noqa: F401  (the config's resolvers)
    from src.experiment.build import build_model

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    import hydra

    dm = hydra.utils.instantiate(cfg.dataset)
    dm.setup()
    model, _ = build_model(cfg, dm)
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    return float(trainer.test(model, datamodule=dm, verbose=False)[0]["test/map_50"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (the figures mean nothing)")
    parser.add_argument("--scorers", default=",".join(SCORERS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    scorers = [s for s in args.scorers.split(",") if s]
    work = Path(tempfile.mkdtemp(prefix="bench_det_curve_"))
    common = ["task=detection", f"baseline.dir={work / 'baselines'}", *(QUICK if args.quick else [])]
    load_before = os.getloadavg()

    pretrain = timed("src.pretrain", [*common, f"hydra.run.dir={work / 'pretrain'}"])
    runs = {}
    for name in scorers:
        run_dir = work / f"run_{name}"
        runs[name] = timed(
            "src.run",
            [*common, f"scorer={name}", "logger=none", "progress=false", f"hydra.run.dir={run_dir}"],
        )
        records = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines() if line]
        runs[name]["n_labelled"] = [r["n_labelled"] for r in records]
        runs[name]["test_map_50"] = [round(r["test/map_50"], 4) for r in records]
    # (untrained has no baseline.dataset to resize)
    untrained = start_map50(
        [*[o for o in common if not o.startswith("baseline.dataset.")], "baseline=untrained"]
    )
    synthetic = start_map50(common)

    curves = [r["test_map_50"] for r in runs.values()]
    first = scorers[0]
    result = {
        "meta": {
            "mode": "quick" if args.quick else "full",
            "cpus": os.cpu_count(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
            "work_dir": str(work),
        },
        "pretrain": pretrain,
        "runs": runs,
        "start_map_50": {"untrained": round(untrained, 4), "synthetic_baseline": round(synthetic, 4)},
        "first_default_run": {k: round(pretrain[k] + runs[first][k], 1) for k in ("wall_s", "cpu_s")},
        "last_round_map_50_min": min(c[-1] for c in curves),
        "every_curve_above_untrained": all(min(c) > untrained for c in curves),
    }
    print(
        f"Default detection run (python -m src.run task=detection), {os.cpu_count()} CPUs, load average "
        f"{load_before[0]:.1f} before / {os.getloadavg()[0]:.1f} after"
    )
    print(f"pretrain synthetic baseline: {pretrain['wall_s']:.0f} s wall, {pretrain['cpu_s']:.0f} s CPU")
    print(f"start mAP@0.5: untrained {untrained:.3f}, synthetic baseline {synthetic:.3f}")
    print(f"{'scorer':<18}{'wall s':>8}{'CPU s':>8}  test mAP@0.5 by labelled count")
    for name, r in runs.items():
        curve = "  ".join(f"{n}:{m:.3f}" for n, m in zip(r["n_labelled"], r["test_map_50"]))
        print(f"{name:<18}{r['wall_s']:>8.0f}{r['cpu_s']:>8.0f}  {curve}")
    fr = result["first_default_run"]
    print(
        f"first default run (pretrain + {first}): {fr['wall_s'] / 60:.1f} min wall, {fr['cpu_s'] / 60:.1f} min CPU "
        f"(goal < 10 min); last-round mAP@0.5 >= {result['last_round_map_50_min']:.3f} (goal >= 0.3); "
        f"every curve above the untrained start: {result['every_curve_above_untrained']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
