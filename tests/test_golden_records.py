"""Refactoring guard: the rounds.jsonl of small runs, byte for byte (timings aside).

``tests/golden/<case>.jsonl`` hold the records of the small runs in
``tests/golden/cases.txt``. A change that alters a selection, a metric, a key or the
key order of a round record fails here. Regenerate them (``python -m
tests.test_golden_records``) only for a change that is meant to alter results, and say
so in its commit.

Float results depend on the processor: torch's kernels for AVX-512 and for AVX2 sum in
different orders, and a few ulps in the first step grow over a fit into other losses
and, where two scores are close, another selection. So the runs are made under
``PINNED_NUMERICS``, which selects the portable code paths of every library that
computes (torch's scalar kernels, MKL's compatible mode, oneDNN at SSE4.1, one
thread); with them a record is the same on every x86-64 machine, and the files were
recorded that way. (History: ``selection.shuffle``'s default became ``round``, every
record gained ``history`` and then ``selected_predictions``, each re-recorded on
purpose; the last re-recording, under the pinned numerics, changed floats only.)
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TIMING_KEYS, cli_env

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = [line.split("|", 1) for line in (GOLDEN / "cases.txt").read_text().splitlines() if line.strip()]
PINNED_NUMERICS = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41",
                   "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def records_without_timings(path: Path) -> bytes:
    lines = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        lines.append(json.dumps({k: v for k, v in record.items() if k not in TIMING_KEYS}, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def run_pinned(args: str, run_dir: Path) -> bytes:
    """The case's records, from a fresh interpreter: the pins must be set before the libraries load."""
    proc = subprocess.run([sys.executable, "-m", "src.run", *args.split(), f"hydra.run.dir={run_dir}"], cwd=REPO,
                          env={**cli_env(), **PINNED_NUMERICS}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return records_without_timings(run_dir / "rounds.jsonl")


@pytest.mark.slow
@pytest.mark.parametrize("name,args", CASES, ids=[c[0] for c in CASES])
def test_rounds_equal_the_recorded_ones(tmp_path, name, args):
    assert run_pinned(args, tmp_path) == (GOLDEN / f"{name}.jsonl").read_bytes()


if __name__ == "__main__":      # re-record every case (see the module's docstring for when)
    import tempfile

    for name, args in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            (GOLDEN / f"{name}.jsonl").write_bytes(run_pinned(args, Path(tmp) / "run"))
        print("recorded", name)
