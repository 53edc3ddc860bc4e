"""Parallel sweeps: a sweep's seeds on K joblib workers against the same seeds one after another.

    python -m benchmarks.bench_parallel            # 2 interleaved repetitions (a few minutes)
    python -m benchmarks.bench_parallel --quick    # 1 repetition, shorter jobs
    python -m benchmarks.bench_parallel --seeds 4 --epochs 12 --reps 1   # longer jobs, 2 per worker

Both sides run the real CLI, ``python -m src.run --multirun seed=1,...,K`` with a fixed
amount of work per job (small CNN on the embedded digits, fixed epochs, no early stop,
no logger), start-up and imports included:

- sequential: the basic launcher, one job at a time, each with torch's default threads
  (every core) -- what a sweep does without a launcher choice;
- parallel: ``hydra/launcher=joblib hydra.launcher.n_jobs=K``, each job with
  cores // K threads (src/launch.py);
- sequential, one thread: the basic launcher with ``OMP_NUM_THREADS=1``, the same jobs at
  the parallel side's thread count: parallel efficiency = its wall time / (K x the parallel
  wall time), 1 when running side by side costs nothing.

Throughput ratio = sequential wall time / parallel wall time (same jobs): K would be
perfect scaling; the goal is >= 0.8 K. The machine may be shared with other work, so each
repetition runs every side back to back in rotating order, the ratio is the median of
the per-repetition ratios, and the CPU seconds the sweeps used (all their processes) and
the load average are reported beside it: CPU seconds per job show whether running side by
side made the jobs themselves more expensive, and CPU / wall shows how many cores the
sweep actually got. Figures to stdout and ``bench-results/bench_parallel.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import write_results

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench-results" / "bench_parallel.json"
# a fixed amount of work per job: fixed epochs (no early stop), no logger, no progress bars
JOB = [
    "logger=none",
    "progress=false",
    "callbacks=none",
    "dataset.sizes.pool=600",
    "dataset.sizes.val=200",
    "dataset.sizes.test=200",
    "selection.budget=100",
]
SIZES = {"full": dict(reps=2, rounds=3, epochs=6), "quick": dict(reps=1, rounds=2, epochs=3)}


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_sweep(k: int, seeds: int, side: str, work: list[str], sweep_dir: Path) -> dict:
    """Wall and CPU seconds of one ``--multirun`` of ``seeds`` jobs, k at once on the parallel side
    (every process of it, waited for)."""
    args = [
        sys.executable,
        "-m",
        "src.run",
        "--multirun",
        *JOB,
        *work,
        "seed=" + ",".join(str(s) for s in range(1, seeds + 1)),
        f"hydra.sweep.dir={sweep_dir}",
    ]
    if side == "parallel":
        args += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={k}"]
    env = {key: v for key, v in os.environ.items() if not key.startswith(("WANDB_", "OMP_", "MKL_"))}
    if side == "sequential_1thread":
        env["OMP_NUM_THREADS"] = "1"
    cpu0, load0, start = children_cpu_seconds(), os.getloadavg()[0], time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"sweep failed:\n{proc.stderr[-3000:]}")
    done = [p for p in sweep_dir.iterdir() if (p / "summary.json").exists()]
    if len(done) != seeds:
        raise RuntimeError(f"{sweep_dir}: {len(done)} of {seeds} jobs finished")
    cpu = children_cpu_seconds() - cpu0
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_s_per_job": cpu / seeds,
        "cores_used": cpu / wall,
        "jobs_per_min": 60 * seeds / wall,
        "load_avg_before": load0,
        "load_avg_after": os.getloadavg()[0],
    }


def measure(k: int, seeds: int, reps: int, work: list[str]) -> dict:
    sides = ["sequential", "parallel", "sequential_1thread"]
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    ratios, efficiencies = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(reps):
            this = {}
            for side in sides[rep % 3 :] + sides[: rep % 3]:  # rotating order
                this[side] = run_sweep(k, seeds, side, work, Path(tmp) / f"{side}-{rep}")
                runs[side].append(this[side])
            ratios.append(this["sequential"]["wall_s"] / this["parallel"]["wall_s"])
            efficiencies.append(this["sequential_1thread"]["wall_s"] / (k * this["parallel"]["wall_s"]))
    summary = {
        side: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for side, rs in runs.items()
    }
    return {
        "k": k,
        "seeds": seeds,
        "cores": len(os.sched_getaffinity(0)),
        "repetitions": runs,
        "median": summary,
        "throughput_ratios": ratios,
        "throughput_ratio": statistics.median(ratios),
        "parallel_efficiencies": efficiencies,
        "parallel_efficiency": statistics.median(efficiencies),
        "goal": 0.8 * k,
        "cpu_per_job_ratio": summary["parallel"]["cpu_s_per_job"] / summary["sequential"]["cpu_s_per_job"],
    }


def print_table(res: dict) -> None:
    k = res["k"]
    print(
        f"\nParallel sweep: {res['seeds']} seeds, {k} at once, {res['cores']} cores; medians of {len(res['throughput_ratios'])} "
        "interleaved repetitions"
    )
    print("| launcher | wall s | jobs/min | CPU s per job | cores used (CPU s / wall s) | load avg |")
    print("| --- | --- | --- | --- | --- | --- |")
    for side, label in (
        ("sequential", "basic, one job at a time, all cores each"),
        ("parallel", f"joblib, {k} jobs at once, {max(1, res['cores'] // k)} thread(s) each"),
        ("sequential_1thread", "basic, one job at a time, 1 thread each"),
    ):
        m = res["median"][side]
        print(
            f"| {label} | {m['wall_s']:.1f} | {m['jobs_per_min']:.2f} | {m['cpu_s_per_job']:.1f} | "
            f"{m['cores_used']:.2f} | {m['load_avg_before']:.1f} |"
        )
    print(
        f"throughput ratio parallel / sequential: {res['throughput_ratio']:.2f} "
        f"(per repetition: {', '.join(f'{r:.2f}' for r in res['throughput_ratios'])}; "
        f"goal >= {res['goal']:.1f}); CPU s per job parallel / sequential: {res['cpu_per_job_ratio']:.2f}; "
        f"parallel efficiency against 1-thread jobs one at a time: {res['parallel_efficiency']:.2f} "
        f"(per repetition: {', '.join(f'{r:.2f}' for r in res['parallel_efficiencies'])})"
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repetition of shorter jobs")
    parser.add_argument("--k", type=int, default=2, help="parallel jobs (default 2)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="jobs of the sweep (default: k); more than k "
        "shows a worker's start-up spread over several jobs, as in a real sweep",
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs per round (job length)")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    work = [f"selection.rounds={size['rounds']}", f"trainer.max_epochs={args.epochs or size['epochs']}"]
    res = measure(args.k, args.seeds or args.k, args.reps or size["reps"], work)
    res["meta"] = {"mode": "quick" if args.quick else "full", "job": JOB + work}
    print_table(res)
    write_results(args.out, res)
    return res


if __name__ == "__main__":
    main()
