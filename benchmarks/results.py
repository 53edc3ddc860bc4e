"""What every benchmark shares: the machine it ran on, and one JSON file under bench-results/."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def machine_meta() -> dict:
    """The facts a figure depends on besides the code: torch, threads, CPUs, when."""
    import torch

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_results(out: str | Path, results: dict) -> None:
    """The figures as JSON (bench-results/ by default), and where they went."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out}")
