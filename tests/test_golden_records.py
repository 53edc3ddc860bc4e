"""Refactoring guard: the rounds.jsonl of small runs against recorded ones, on any x86-64 CPU.

``tests/golden/<case>.jsonl`` hold the records of the small runs in
``tests/golden/cases.txt``. A change that alters a selection, a metric, a key or the
key order of a round record fails here. Regenerate them (``python -m
tests.test_golden_records``) only for a change that is meant to alter results, and say
so in its commit.

Why the cases run in float64 (``+trainer.precision=64-true``). In float32 a record is
a property of the processor, not only of the code: torch, MKL and oneDNN pick kernels
by instruction set (and block sizes by cache size), so sums are taken in other orders,
the first fit differs in the 5th significant digit, and where two scores are within a
few ulps a later round selects other ids. Pinning the portable paths
(``ATEN_CPU_CAPABILITY=default``, ``MKL_CBWR=COMPATIBLE``, ``ONEDNN_MAX_CPU_ISA=SSE41``,
one thread) did not help: recorded under those pins on an Intel AVX-512 machine, 4 of
5 cases failed under the same pins on an AMD EPYC (AVX2) one, 2 with other ids. In
float64 the same reorderings move results by about 1e-16 relative, far below any gap
between two scores these runs meet, so the selections do not depend on the kernels.
This was measured (``python -m tests.test_golden_records --paths``, ``NUMERIC_PATHS``,
4 minutes) by running every case under five numeric paths on one AMD EPYC machine
(native, 1 and 2 threads; ``ATEN_CPU_CAPABILITY`` default and avx2; oneDNN at SSE4.1 and
AVX2; MKL compatible and AVX2): the ids were the same everywhere and the floats differed
by at most a few float32 ulps (values that torchmetrics and Lightning keep in float32),
but for the detection case's mAP (``MAP_REL_TOL``). In float32 (the same runs without
``FLOAT64``, measured once by hand) the same paths chose other ids (entropy, reselect_div and loss_steps, from round 1 on) and moved the
detection case's metrics by up to 45%. ``test_the_verdict_is_the_same_on_another_
numeric_path`` keeps one such path in the suite as the stand-in for another vendor.

How records are compared (``record_differences``): everything but floats exactly, i.e.
the number of rounds, every key and the key order, the type of every value, rounds,
counts, selection names, the selected ids in rank order, the selecting model's
predictions, epochs, best epoch and the history's columns; floats within ``REL_TOL``
relative (``ABS_TOL`` near zero), 40 times the largest difference measured across the
numeric paths (2.4e-7); the detection case's mAP values within ``MAP_REL_TOL`` (see
there why). ``test_the_guard_fails_on_a_changed_selection_rule`` shows that a small
change to the selection rule still fails the guard; so did, by hand, the pivot window's
tie rule turned the other way in ``src/selection/ranking.py`` (``ceil`` -> ``floor``:
reselect_div's round 1 took one other item).

(History: ``selection.shuffle``'s default became ``round``, every record gained
``history`` and then ``selected_predictions``, each re-recorded on purpose; then the
cases moved to float64 and were re-recorded, which changed floats and, where float32
rounding had decided near-ties, selections; then every record gained ``stopped_by``, and
nothing else changed.)
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TIMING_KEYS, cli_env, run_module

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = [line.split("|", 1) for line in (GOLDEN / "cases.txt").read_text().splitlines() if line.strip()]
CASE_ARGS = dict(CASES)
FLOAT64 = "+trainer.precision=64-true"
REL_TOL, ABS_TOL = 1e-5, 1e-8
# mAP and per-class AP of the detection case: its detector is one epoch old and scores many
# detections alike to 1e-14, and COCO evaluation ranks detections by score, so the order of
# those near-ties (and with it the precision curve) follows the order of float64 sums
# (measured: up to 6.4e-3 relative between numeric paths); a wrong class offset, IoU rule or
# box format moves these values by far more
MAP_KEY = re.compile(r"/(map|ap/)")
MAP_REL_TOL = 5e-2
# the numeric variables that pick kernels; a case runs with none of them set unless a test sets them
NUMERIC_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")
# another vendor's path, simulated: torch's scalar kernels, MKL's compatible mode, oneDNN at SSE4.1, one thread
OTHER_PATH = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def records_without_timings(path: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
        for line in path.read_text().splitlines()
    ]


def record_differences(recorded, got, where: str = "") -> list[str]:
    """Where ``got`` differs from ``recorded``: exactly for structure, keys, key order,
    types, ints, strings and lists; floats within REL_TOL / ABS_TOL. Empty when equal."""
    if type(recorded) is not type(got):
        return [
            f"{where or 'records'}: recorded {recorded!r} ({type(recorded).__name__}), "
            f"got {got!r} ({type(got).__name__})"
        ]
    if isinstance(recorded, dict):
        if list(recorded) != list(got):
            return [f"{where or 'record'}: keys recorded {list(recorded)}, got {list(got)}"]
        return [d for key in recorded for d in record_differences(recorded[key], got[key], f"{where}.{key}")]
    if isinstance(recorded, list):
        if len(recorded) != len(got):
            return [f"{where}: {len(recorded)} values recorded, got {len(got)}: {got!r}"]
        if recorded and not any(isinstance(v, (float, dict, list)) for v in recorded) and recorded != got:
            return [f"{where}: recorded {recorded}, got {got}"]  # ids, predictions: one line per list
        return [
            d
            for i, (r, g) in enumerate(zip(recorded, got))
            for d in record_differences(r, g, f"{where}[{i}]")
        ]
    if isinstance(recorded, float):
        rel_tol = MAP_REL_TOL if MAP_KEY.search(where) else REL_TOL
        if not math.isclose(recorded, got, rel_tol=rel_tol, abs_tol=ABS_TOL):
            return [f"{where}: recorded {recorded!r}, got {got!r}"]
        return []
    return [] if recorded == got else [f"{where}: recorded {recorded!r}, got {got!r}"]


def run_case(args: str, run_dir: Path, env: dict[str, str] | None = None) -> list[dict]:
    """The case's records. On the native path through the test worker's CLI server (a fork of an
    interpreter that imported the libraries with none of ``NUMERIC_ENV`` set); with ``env``, which
    picks other kernels, in a fresh interpreter (the kernels are chosen when the libraries load)."""
    argv = [*args.split(), FLOAT64, f"hydra.run.dir={run_dir}"]
    if env is None:
        assert not any(os.environ.get(k) for k in NUMERIC_ENV), "the test worker must run on the native path"
        proc = run_module("src.run", *argv)
    else:
        base = {k: v for k, v in cli_env().items() if k not in NUMERIC_ENV}
        proc = subprocess.run(
            [sys.executable, "-m", "src.run", *argv],
            cwd=REPO,
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return records_without_timings(run_dir / "rounds.jsonl")


def recorded(name: str) -> list[dict]:
    return records_without_timings(GOLDEN / f"{name}.jsonl")


def first_differences(name: str, got: list[dict]) -> str:
    rec = recorded(name)
    if len(rec) != len(got):
        return f"{len(rec)} rounds recorded, got {len(got)}"
    return "\n".join(
        f"round {i}{d}" for i, (r, g) in enumerate(zip(rec, got)) for d in record_differences(r, g)[:5]
    )


@pytest.mark.slow
@pytest.mark.parametrize("name,args", CASES, ids=[c[0] for c in CASES])
def test_rounds_equal_the_recorded_ones(tmp_path, name, args):
    assert not (diff := first_differences(name, run_case(args, tmp_path))), diff


@pytest.mark.slow
def test_the_verdict_is_the_same_on_another_numeric_path(tmp_path):
    """reselect_div (diversity, pivot, reselection: the case whose float32 selections moved
    first) under the scalar / SSE4.1 / one-thread path agrees with the recording too."""
    got = run_case(CASE_ARGS["reselect_div"], tmp_path, OTHER_PATH)
    assert not (diff := first_differences("reselect_div", got)), diff


@pytest.mark.slow
def test_the_guard_fails_on_a_changed_selection_rule(tmp_path):
    """The entropy case with its pivot window moved down by 2 of 120 ranks (pivot 0.1 centres
    the 20-item window on rank 11.9, so it starts at rank 2, not 0): the guard names the ids."""
    got = run_case(CASE_ARGS["entropy"] + " selection.pivot=0.1", tmp_path)
    diff = first_differences("entropy", got)
    assert "round 0.selected_ids: recorded" in diff, diff


def test_differences_are_exact_but_for_float_noise():
    rec = {
        "round": 0,
        "selected_ids": [3, 1, 2],
        "test/loss": 2.3562734127044678,
        "history": {"epoch": [0, 1]},
    }
    assert record_differences(rec, json.loads(json.dumps(rec))) == []
    # a float32 ulp of the loss (what another processor's kernels move): equal
    assert record_differences(rec, {**rec, "test/loss": 2.3562734127044678 * (1 + 2.4e-7)}) == []
    # a changed metric, ids in another order, another key order, an int become a float: each named
    assert record_differences(rec, {**rec, "test/loss": 2.3563}) == [
        ".test/loss: recorded 2.3562734127044678, got 2.3563"
    ]
    assert record_differences(rec, {**rec, "selected_ids": [1, 3, 2]}) == [
        ".selected_ids: recorded [3, 1, 2], got [1, 3, 2]"
    ]
    reordered = {
        "selected_ids": [3, 1, 2],
        "round": 0,
        "test/loss": 2.3562734127044678,
        "history": {"epoch": [0, 1]},
    }
    assert record_differences(rec, reordered)[0].startswith("record: keys recorded ['round', 'selected_ids'")
    assert record_differences(rec, {**rec, "round": 0.0}) == [".round: recorded 0 (int), got 0.0 (float)"]
    assert record_differences(rec, {**rec, "history": {"epoch": [0]}}) == [
        ".history.epoch: 2 values recorded, got 1: [0]"
    ]
    # mAP keys get the looser tolerance, and only they
    det = {"test/map": 0.0011770499404519796, "test/ap/car": 0.0051, "test/loss": 11.98}
    assert record_differences(det, {**det, "test/map": 0.00118, "test/ap/car": 0.0052}) == []
    assert record_differences(det, {**det, "test/map": 0.0013}) == [
        ".test/map: recorded 0.0011770499404519796, got 0.0013"
    ]
    assert record_differences(det, {**det, "test/loss": 11.99}) == [".test/loss: recorded 11.98, got 11.99"]


# The numeric paths of the portability measurement (the module docstring): kernels by instruction
# set, oneDNN's ISA, MKL's code path and thread count, each set before the libraries load.
NUMERIC_PATHS = {
    "native, 1 thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "native, 2 threads": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
    "scalar, SSE4.1, MKL compatible": OTHER_PATH,
    "avx2 kernels, oneDNN SSE4.1": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "OMP_NUM_THREADS": "1",
    },
    "scalar, oneDNN AVX2, MKL AVX2": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_CBWR": "AVX2",
        "OMP_NUM_THREADS": "1",
    },
}


def measure_paths() -> None:
    """Every case under every ``NUMERIC_PATHS`` entry (fresh interpreters), compared with the
    recording: the guard's verdict, whether the ids are equal, the largest relative float difference."""
    import tempfile

    for name, args in CASES:
        for label, env in NUMERIC_PATHS.items():
            with tempfile.TemporaryDirectory() as tmp:
                got = run_case(args, Path(tmp) / "run", env)
            rec = recorded(name)
            floats = [abs(a - b) / max(abs(a), abs(b), 1e-30) for a, b in _float_pairs(rec, got)]
            ids_equal = [r["selected_ids"] for r in rec] == [g["selected_ids"] for g in got]
            print(
                f"{name:13s} {label:32s} guard {'passes' if not first_differences(name, got) else 'FAILS'}; "
                f"ids {'equal' if ids_equal else 'differ'}; max rel. float diff {max(floats, default=0):.1e}"
            )


def _float_pairs(a, b):
    if isinstance(a, dict) and isinstance(b, dict) and list(a) == list(b):
        for key in a:
            yield from _float_pairs(a[key], b[key])
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for x, y in zip(a, b):
            yield from _float_pairs(x, y)
    elif isinstance(a, float) and isinstance(b, float):
        yield a, b


if __name__ == "__main__":  # re-record every case (see the module's docstring for when), or --paths
    import tempfile

    if sys.argv[1:] == ["--paths"]:
        measure_paths()
        sys.exit(0)
    for name, args in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            records = run_case(args, Path(tmp) / "run")
        (GOLDEN / f"{name}.jsonl").write_text(
            "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        )
        print("recorded", name)
