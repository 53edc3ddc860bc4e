"""Start-up: what a run spends in imports before its first round, and which imports the
classification path could do without.

    python -m benchmarks.bench_startup            # 5 fresh processes per figure
    python -m benchmarks.bench_startup --quick    # 2

Three measurements, each in fresh Python processes (median wall and CPU seconds):

1. ``import src.run`` against the bare interpreter and against ``import torch`` alone (the
   part no entry point can avoid);
2. the extra cost of each import that only some paths need (W&B, matplotlib, the report,
   detection), imported after ``src.run``;
3. a real classification run (``debug=fast logger=none``) under ``python -X importtime``:
   which of those optional modules it loaded and what they cost there (cumulative import
   time as Python reports it), beside the run's whole wall time.

Figures to stdout and ``bench-results/bench_startup.json``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import write_results

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench-results" / "bench_startup.json"
BASELINES = {"bare interpreter": "pass", "import torch": "import torch", "import src.run": "import src.run"}
# modules only some paths need: logging to W&B, figures, the report, detection
OPTIONAL = {
    "wandb": "wandb",
    "matplotlib (pyplot)": "matplotlib.pyplot",
    "report (src.report)": "src.report",
    "detection (src.models.detector)": "src.models.detector",
    "torchvision detection models": "torchvision.models.detection",
    "pycocotools": "pycocotools.coco",
}
TIMER = "import time, resource; t0 = time.perf_counter(); c0 = resource.getrusage(resource.RUSAGE_SELF)\n"
REPORT = (
    "c1 = resource.getrusage(resource.RUSAGE_SELF)\n"
    "print(time.perf_counter() - t0, c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)"
)


def env() -> dict:
    out = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    out.update(WANDB_MODE="offline", WANDB_SILENT="true")
    return out


def python_seconds(code: str, reps: int) -> dict:
    """Median wall and CPU seconds of ``code`` in fresh processes, interpreter start included."""
    walls, cpus = [], []
    for _ in range(reps):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True
        )
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        walls.append(time.perf_counter() - start)
        cpus.append(float(proc.stdout.split()[-1]) if proc.stdout.strip() else float("nan"))
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


def extra_seconds(module: str, reps: int) -> dict:
    """Median wall and CPU seconds of importing ``module`` in a process that already imported src.run."""
    walls, cpus = [], []
    for _ in range(reps):
        code = f"import src.run\n{TIMER}import {module}\n{REPORT}"
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True
        )
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        wall, cpu = (float(v) for v in proc.stdout.split()[-2:])
        walls.append(wall)
        cpus.append(cpu)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


def classification_run_imports() -> dict:
    """A real ``debug=fast`` classification run under -X importtime: its wall time and loaded modules."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "src.run",
                "debug=fast",
                "logger=none",
                f"hydra.run.dir={tmp}/run",
            ],
            cwd=REPO,
            env=env(),
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    # "import time:  self [us] | cumulative | imported package"
    cumulative = {}
    for m in re.finditer(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", proc.stderr):
        cumulative.setdefault(m.group(4), int(m.group(2)) / 1e6)
    loaded = {label: cumulative.get(module) for label, module in OPTIONAL.items()}
    total = sum(int(m.group(1)) for m in re.finditer(r"import time:\s+(\d+) \|", proc.stderr)) / 1e6
    return {"run_wall_s": wall, "all_imports_s": total, "optional_loaded_s": loaded}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 processes per figure instead of 5")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    reps = 2 if args.quick else 5
    res: dict = {
        "meta": {
            "mode": "quick" if args.quick else "full",
            "processes_per_figure": reps,
            "load_avg": os.getloadavg()[0],
        }
    }
    res["baselines"] = {
        label: python_seconds(f"{TIMER}{code}\n{REPORT}", reps) for label, code in BASELINES.items()
    }
    res["optional_after_src_run"] = {label: extra_seconds(module, reps) for label, module in OPTIONAL.items()}
    res["classification_run"] = classification_run_imports()
    res["meta"]["load_avg_after"] = os.getloadavg()[0]

    torch_s = res["baselines"]["import torch"]
    print("\nStart-up, fresh processes (wall includes the interpreter's own start; CPU is the import alone)")
    print("| what | wall s | CPU s | CPU share of `import torch` |")
    print("| --- | --- | --- | --- |")
    for label, r in res["baselines"].items():
        print(f"| {label} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['cpu_s'] / torch_s['cpu_s']:.2f} |")
    print(
        "\n| optional import, after `import src.run` | extra wall s | extra CPU s | "
        "loaded by a classification run? (its cumulative import s) |"
    )
    print("| --- | --- | --- | --- |")
    run = res["classification_run"]
    for label, r in res["optional_after_src_run"].items():
        seen = run["optional_loaded_s"][label]
        print(
            f"| {label} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
            f"{'no' if seen is None else f'yes ({seen:.2f})'} |"
        )
    print(
        f"\nclassification run (debug=fast logger=none): {run['run_wall_s']:.1f} s wall, of which imports "
        f"{run['all_imports_s']:.1f} s (-X importtime, its own overhead included)"
    )
    write_results(args.out, res)
    return res


if __name__ == "__main__":
    main()
