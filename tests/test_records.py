"""rounds.jsonl / state.json: atomic commits and recovery after a kill at any point."""
from __future__ import annotations

import json

import pytest

from src.loop.records import RunStore, read_records


def _state(done, record):
    return {"completed_rounds": done, "labelled_ids": list(range(done)), "pending": None}


def test_commit_appends_one_line_per_round(tmp_path):
    store = RunStore(tmp_path)
    for r in range(3):
        store.commit({"round": r, "x": r * 1.5}, _state(r + 1, None))
    lines = (tmp_path / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 1, 2]
    records, state = store.recover()
    assert [r["x"] for r in records] == [0.0, 1.5, 3.0] and state["completed_rounds"] == 3
    assert state["last_record"] == {"round": 2, "x": 3.0}


def test_partial_last_line_is_cut_and_rewritten(tmp_path):
    store = RunStore(tmp_path)
    store.commit({"round": 0}, _state(1, None))
    store.commit({"round": 1}, _state(2, None))
    # simulate a kill in the middle of writing round 1's line
    text = (tmp_path / "rounds.jsonl").read_text()
    (tmp_path / "rounds.jsonl").write_text(text[: len(text) - 5])
    assert read_records(tmp_path / "rounds.jsonl") == [{"round": 0}]
    records, state = store.recover()
    assert records == [{"round": 0}, {"round": 1}]
    assert (tmp_path / "rounds.jsonl").read_text() == '{"round":0}\n{"round":1}\n'


def test_state_ahead_of_records_appends_the_missing_record(tmp_path):
    store = RunStore(tmp_path)
    store.commit({"round": 0}, _state(1, None))
    # kill after the state was replaced but before the record was appended
    state = {**_state(2, None), "last_record": {"round": 1}}
    (tmp_path / "state.json").write_text(json.dumps(state))
    records, _ = store.recover()
    assert records == [{"round": 0}, {"round": 1}]
    assert len((tmp_path / "rounds.jsonl").read_text().splitlines()) == 2


def test_inconsistent_files_are_refused(tmp_path):
    store = RunStore(tmp_path)
    store.commit({"round": 0}, _state(1, None))
    (tmp_path / "state.json").write_text(json.dumps({**_state(5, None), "last_record": {}}))
    with pytest.raises(RuntimeError, match="says 5 rounds are complete but .* holds 1"):
        store.recover()
    (tmp_path / "state.json").unlink()
    with pytest.raises(RuntimeError, match="state.json is missing"):
        store.recover()


def test_no_files_means_a_fresh_run(tmp_path):
    assert RunStore(tmp_path / "new").recover() == ([], None)
