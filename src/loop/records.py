"""Durable run files: ``rounds.jsonl`` (one record per completed round) and ``state.json``.

A round is committed in two steps, each atomic:
  1. ``state.json`` is replaced (write to a temp file, fsync, rename) with the state
     after the round, which also carries the round's record;
  2. the record is appended to ``rounds.jsonl`` with a single write and fsync.
A kill between the two leaves a state one round ahead of the records: ``recover``
appends the missing record from the state. A kill during step 2 leaves a partial
last line: ``recover`` cuts it off and re-appends the record. So the records on disk
always equal those of an uninterrupted run, and nothing completed is ever lost.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

RECORDS_FILE = "rounds.jsonl"
STATE_FILE = "state.json"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_records(path: Path) -> list[dict]:
    """Complete records of a rounds.jsonl; a partial trailing line (a kill mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]   # the last line never got its newline: incomplete
    return [json.loads(line) for line in lines if line.strip()]


class RunStore:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.records_path = self.run_dir / RECORDS_FILE
        self.state_path = self.run_dir / STATE_FILE

    def exists(self) -> bool:
        return self.state_path.exists() or self.records_path.exists()

    def read_state(self) -> dict | None:
        if not self.state_path.exists():
            return None
        return json.loads(self.state_path.read_text())

    def recover(self) -> tuple[list[dict], dict | None]:
        """Records and state, repaired after a kill at any point of a commit."""
        state = self.read_state()
        records = read_records(self.records_path)
        # rewrite the file when it has a partial line, so the next append starts clean
        if self.records_path.exists() and not self.records_path.read_text().endswith("\n") \
                and self.records_path.stat().st_size:
            self._rewrite(records)
        if state is None:
            if records:
                raise RuntimeError(f"{self.records_path} has {len(records)} rounds but {self.state_path} is "
                                   "missing; the run cannot be resumed safely")
            return records, None
        done = int(state["completed_rounds"])
        if done == len(records) + 1:
            self._append(state["last_record"])
            records.append(state["last_record"])
        elif done != len(records):
            raise RuntimeError(f"{self.state_path} says {done} rounds are complete but {self.records_path} "
                               f"holds {len(records)}; the run directory was edited by hand")
        return records, state

    def commit(self, record: dict, state: dict) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.state_path, {**state, "last_record": record})
        self._append(record)

    def _append(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with open(self.records_path, "a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def _rewrite(self, records: list[dict]) -> None:
        tmp = self.records_path.with_name(f".{self.records_path.name}.tmp")
        with open(tmp, "w") as fh:
            for record in records:
                fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.records_path)
