"""rounds.jsonl / state.json: the record type, atomic commits and recovery after a kill at any point."""

from __future__ import annotations

import json

import pytest

from src.errors import UserError
from src.records import RoundRecord, RunStore, read_records


def rec(r: int, **metrics) -> RoundRecord:
    return RoundRecord(
        round=r,
        n_labelled=10 * (r + 1),
        n_selected=10,
        selection="entropy",
        selected_ids=list(range(10 * r, 10 * r + 10)),
        selected_scores=[0.5] * 10,
        epochs=3,
        best_epoch=1,
        metrics={"test/acc_top1": 0.5 + r / 10, "val/loss": 1.0 - r / 10, **metrics},
        select_seconds=0.1,
        reset_seconds=0.0,
        fit_seconds=1.0,
        test_seconds=0.2,
    )


def _state(done):
    # as the loop writes it: round r (rec(r)) ends with 10 * (r + 1) labelled ids
    return {"completed_rounds": done, "base_ids": [], "labelled_ids": list(range(10 * done)), "pending": None}


def test_json_form_has_the_documented_key_order_and_round_trips():
    record = rec(1, **{"test/loss": 0.3, "val/acc_top1": 0.4})
    obj = record.to_json()
    # head fields, then val/* sorted, then test/* sorted, then timings (the rounds.jsonl format)
    assert list(obj) == [
        "round",
        "n_labelled",
        "n_selected",
        "selection",
        "selected_ids",
        "selected_scores",
        "epochs",
        "best_epoch",
        "val/acc_top1",
        "val/loss",
        "test/acc_top1",
        "test/loss",
        "select_seconds",
        "reset_seconds",
        "fit_seconds",
        "test_seconds",
    ]
    assert RoundRecord.from_json(json.loads(json.dumps(obj))) == record
    assert (
        record.value("n_labelled") == 20 and record.value("test/loss") == 0.3 and record.value("nope") is None
    )


def test_malformed_records_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="x.jsonl:1: a round record without selection, selected_ids"):
        RoundRecord.from_json(
            {
                "round": 0,
                "n_labelled": 1,
                "n_selected": 1,
                "epochs": 1,
                "best_epoch": 0,
                "selected_scores": [],
            },
            where="x.jsonl:1",
        )
    path = tmp_path / "rounds.jsonl"
    path.write_text("{not json\n")
    with pytest.raises(UserError, match=r"rounds.jsonl:1: not a JSON line"):
        read_records(path)


def test_commit_appends_one_line_per_round(tmp_path):
    store = RunStore(tmp_path)
    for r in range(3):
        store.commit(rec(r), _state(r + 1))
    lines = (tmp_path / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 1, 2]
    records, state = store.recover()
    assert records == [rec(0), rec(1), rec(2)] and state["completed_rounds"] == 3
    assert state["last_record"] == rec(2).to_json()


def test_partial_last_line_is_cut_and_rewritten(tmp_path):
    store = RunStore(tmp_path)
    store.commit(rec(0), _state(1))
    store.commit(rec(1), _state(2))
    # simulate a kill in the middle of writing round 1's line
    full = (tmp_path / "rounds.jsonl").read_text()
    (tmp_path / "rounds.jsonl").write_text(full[: len(full) - 5])
    assert read_records(tmp_path / "rounds.jsonl") == [rec(0)]
    records, _ = store.recover()
    assert records == [rec(0), rec(1)]
    assert (tmp_path / "rounds.jsonl").read_text() == full


def test_state_ahead_of_records_appends_the_missing_record(tmp_path):
    store = RunStore(tmp_path)
    store.commit(rec(0), _state(1))
    # kill after the state was replaced but before the record was appended
    (tmp_path / "state.json").write_text(json.dumps({**_state(2), "last_record": rec(1).to_json()}))
    records, _ = store.recover()
    assert records == [rec(0), rec(1)]
    assert len((tmp_path / "rounds.jsonl").read_text().splitlines()) == 2


def test_inconsistent_files_are_refused(tmp_path):
    store = RunStore(tmp_path)
    store.commit(rec(0), _state(1))
    (tmp_path / "state.json").write_text(json.dumps({**_state(5), "last_record": {}}))
    with pytest.raises(UserError, match="says 5 rounds are complete but .* holds 1"):
        store.recover()
    (tmp_path / "state.json").unlink()
    with pytest.raises(UserError, match="state.json is missing"):
        store.recover()


def test_no_files_means_a_fresh_run(tmp_path):
    assert RunStore(tmp_path / "new").recover() == ([], None)
