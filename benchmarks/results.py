"""Where a benchmark's figures go: one JSON file under bench-results/."""
from __future__ import annotations

import json
from pathlib import Path


def write_results(out: str | Path, results: dict) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
