"""Refactoring guard: the rounds.jsonl of small runs, byte for byte (timings aside).

``tests/golden/<case>.jsonl`` were written by the code *before* the restructuring
of the entry point, loop and record type, from the overrides in
``tests/golden/cases.txt``. A change that alters a selection, a metric, a key or
the key order of a round record fails here. Regenerate them only for a change
that is meant to alter results, and say so in its commit.

Re-recorded on purpose: ``selection.shuffle``'s default became ``round`` (thesis 4.1.1:
one permutation per selection step instead of one per epoch), which changed
``random_base`` and ``loss_steps`` from their second epoch on; ``entropy`` (its best
epoch is the first), ``detection`` (one epoch) and ``reselect_div`` (``shuffle=none``,
formerly ``false``) kept their bytes. Then every record gained its per-epoch ``history``
(after the metrics, before the timings); all other fields were checked equal to the
previous files. Then the records of model-scored rounds gained ``selected_predictions``
(the selecting model's class for each pick, after the scores); again every other field
and the key order were checked equal to the previous files.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TIMING_KEYS, run_cli

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = [line.split("|", 1) for line in (GOLDEN / "cases.txt").read_text().splitlines() if line.strip()]


def records_without_timings(path: Path) -> bytes:
    lines = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        lines.append(json.dumps({k: v for k, v in record.items() if k not in TIMING_KEYS}, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.slow
@pytest.mark.parametrize("name,args", CASES, ids=[c[0] for c in CASES])
def test_rounds_equal_the_recorded_ones(tmp_path, name, args):
    run_cli(*args.split(), f"hydra.run.dir={tmp_path}")
    assert records_without_timings(tmp_path / "rounds.jsonl") == (GOLDEN / f"{name}.jsonl").read_bytes()
