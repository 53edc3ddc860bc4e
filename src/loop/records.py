"""The round record and the durable run files: ``rounds.jsonl`` and ``state.json``.

``RoundRecord`` is the one type of a completed round: the loop makes it, the store
writes it, the trackers log it, the report reads it back. Its JSON form (key order
included) is the line format of ``rounds.jsonl``.

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

import contextlib
import fcntl
import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from src.errors import UserError

RECORDS_FILE = "rounds.jsonl"
STATE_FILE = "state.json"
LOCK_FILE = ".lock"

# Testing hook (tests/test_faults.py): AL_SELECT_FAULT=<point>[:<n>] makes the process SIGKILL
# itself the n-th time (default 1st) it reaches the named point, to prove what survives a kill
# at exactly that place. Unset, it costs one dict lookup per point.
FAULT_ENV = "AL_SELECT_FAULT"
FAULT_POINTS = ("setup", "fit", "pool", "after_state", "half_record", "temp_unrenamed", "after_record",
                "tracker_epochs", "before_summary")
_fault_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process here when ``AL_SELECT_FAULT`` names this point (and its count is reached)."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class RoundRecord:
    """One completed round. ``metrics`` holds the ``val/*`` and ``test/*`` values."""

    round: int
    n_labelled: int
    n_selected: int
    selection: str                      # "base" or the scorer that chose the round's new items
    selected_ids: list[int]             # in rank order, hardest first
    selected_scores: list[float]        # empty for the base set
    epochs: int
    best_epoch: int
    metrics: dict[str, float] = field(default_factory=dict)
    select_seconds: float = 0.0
    reset_seconds: float = 0.0
    fit_seconds: float = 0.0
    test_seconds: float = 0.0
    # the model's predicted class of each selected id (parallel to selected_ids); None: not recorded,
    # and then absent from the JSON, so records without it stay byte-identical
    selected_predictions: list | None = None
    # the fit's per-epoch train/* and val/* metrics as columns ({"epoch": [..], "val/loss": [..], ..};
    # loop.callbacks.EpochHistory); None: not recorded, and then absent from the JSON
    history: dict | None = None
    # how the fit ended (src.loop.trainers.FIT_ENDINGS: early_stopping, epoch_cap, fixed_length,
    # step_cap); None: not recorded (records made before it was), and then absent from the JSON
    stopped_by: str | None = None

    HEAD: ClassVar[tuple[str, ...]] = ("round", "n_labelled", "n_selected", "selection", "selected_ids",
                                       "selected_scores", "epochs", "best_epoch")
    TIMINGS: ClassVar[tuple[str, ...]] = ("select_seconds", "reset_seconds", "fit_seconds", "test_seconds")

    def to_json(self) -> dict:
        """The ``rounds.jsonl`` object: the head fields, the metrics (val/* then test/*, each sorted), timings."""
        metrics = sorted(self.metrics.items(), key=lambda kv: (not kv[0].startswith("val/"), kv[0]))
        predictions = {} if self.selected_predictions is None else {"selected_predictions": self.selected_predictions}
        history = {} if self.history is None else {"history": self.history}
        stopped = {} if self.stopped_by is None else {"stopped_by": self.stopped_by}
        return {**{k: getattr(self, k) for k in self.HEAD}, **stopped, **predictions, **dict(metrics), **history,
                **{k: getattr(self, k) for k in self.TIMINGS}}

    @classmethod
    def from_json(cls, obj: dict, where: str = "record") -> "RoundRecord":
        """A record from its JSON object; a malformed one (a file from elsewhere) is a UserError naming ``where``."""
        if not isinstance(obj, dict):
            raise UserError(f"{where}: a round record must be a JSON object, got {type(obj).__name__}")
        missing = [k for k in cls.HEAD if k not in obj]
        if missing:
            raise UserError(f"{where}: a round record without {', '.join(missing)}")
        metrics = {k: v for k, v in obj.items() if "/" in k}
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()):
            raise UserError(f"{where}: a round record with a non-numeric metric")
        history = obj.get("history")
        if history is not None and not (isinstance(history, dict)
                                        and all(isinstance(v, list) for v in history.values())):
            raise UserError(f"{where}: a round record whose history is not an object of lists")
        stopped_by = obj.get("stopped_by")
        if stopped_by is not None and not isinstance(stopped_by, str):
            raise UserError(f"{where}: a round record whose stopped_by is not a string")
        return cls(**{k: obj[k] for k in cls.HEAD}, metrics=metrics,
                   **{k: float(obj.get(k, 0.0)) for k in cls.TIMINGS},
                   selected_predictions=obj.get("selected_predictions"), history=history, stopped_by=stopped_by)

    def value(self, key: str):
        """A field or a metric by its ``rounds.jsonl`` key; None when the record has no such value.
        A ``train/*`` key reads the history at the tested epoch (``best_epoch``)."""
        if key in self.metrics:
            return self.metrics[key]
        if key in self.HEAD or key in self.TIMINGS:
            return getattr(self, key)
        if key.startswith("train/") and self.history and key in self.history:
            epochs = self.history.get("epoch", [])
            return self.history[key][epochs.index(self.best_epoch)] if self.best_epoch in epochs else None
        return None


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
    fault_point("temp_unrenamed")
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def flock_holder(path: Path) -> str:
    """The pid holding a flock on ``path`` per the kernel's lock table (Linux ``/proc/locks``), else "unknown"."""
    st = os.stat(path)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        table = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "unknown"
    for line in table:
        fields = line.split()
        if "FLOCK" in fields and device in fields:
            return fields[fields.index(device) - 1]
    return "unknown"


@contextlib.contextmanager
def lock_run_dir(run_dir: str | Path):
    """Hold the run directory's writer lock (``.lock``) for the block; a second writer is a UserError.

    An ``fcntl.flock`` on an open file: the kernel drops it when the holder exits, so a
    killed run never blocks its own resume. The lock file stays empty (a refused command
    changes no byte of the directory); the refusal names the holder from the kernel's table.
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{run_dir} is in use by another run (pid {flock_holder(path)}); wait for it "
                            "to finish or choose another hydra.run.dir") from None
        yield
    finally:
        os.close(fd)   # closing the descriptor releases the flock


def _record_line(record: RoundRecord) -> str:
    return json.dumps(record.to_json(), separators=(",", ":")) + "\n"


def read_records(path: Path) -> list[RoundRecord]:
    """Complete records of a rounds.jsonl; a partial trailing line (a kill mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]   # the last line never got its newline: incomplete
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: not a JSON line ({err.msg})") from None
        records.append(RoundRecord.from_json(obj, where=f"{path}:{number}"))
    return records


class RunStore:
    """The run directory's round records and resumable state."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.records_path = self.run_dir / RECORDS_FILE
        self.state_path = self.run_dir / STATE_FILE

    def exists(self) -> bool:
        return self.state_path.exists() or self.records_path.exists()

    def started(self) -> bool:
        """A run was accepted here (its config recorded), possibly killed before its first round."""
        return self.exists() or (self.run_dir / ".hydra" / "config.yaml").exists()

    def read_state(self) -> dict | None:
        """The state file's object; None when there is none; a UserError when it is not one we wrote."""
        if not self.state_path.exists():
            return None
        try:
            state = json.loads(self.state_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{self.state_path}: not a JSON state file ({err}); the run cannot be resumed") from None
        if not isinstance(state, dict) or not isinstance(state.get("completed_rounds"), int):
            raise UserError(f"{self.state_path}: no integer completed_rounds; the run cannot be resumed")
        return state

    def check_consistent(self) -> None:
        """UserError when records and state cannot both be true (a hand-edited or doubled
        rounds.jsonl); reads only, so a refused resume changes nothing."""
        state = self.read_state()
        records = read_records(self.records_path)
        if state is None:
            if records:
                raise UserError(f"{self.records_path} has {len(records)} rounds but {self.state_path} is "
                                "missing; the run cannot be resumed safely")
            return
        done = int(state["completed_rounds"])
        if done not in (len(records), len(records) + 1):
            raise UserError(f"{self.state_path} says {done} rounds are complete but {self.records_path} "
                            f"holds {len(records)}; the run directory was edited by hand")

    def recover(self) -> tuple[list[RoundRecord], dict | None]:
        """Records and state, repaired after a kill at any point of a commit."""
        self.check_consistent()
        state = self.read_state()
        records = read_records(self.records_path)
        # rewrite the file when it has a partial line, so the next append starts clean
        if self.records_path.exists() and not self.records_path.read_text().endswith("\n") \
                and self.records_path.stat().st_size:
            self._rewrite(records)
        if state is not None and int(state["completed_rounds"]) == len(records) + 1:
            last = RoundRecord.from_json(state["last_record"], where=str(self.state_path))
            self._append(last)
            records.append(last)
        return records, state

    def commit(self, record: RoundRecord, state: dict) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.state_path, {**state, "last_record": record.to_json()})
        fault_point("after_state")
        self._append(record)
        fault_point("after_record")

    def _append(self, record: RoundRecord) -> None:
        with open(self.records_path, "a") as fh:
            line = _record_line(record)
            if os.environ.get(FAULT_ENV, "").startswith("half_record"):
                fh.write(line[: len(line) // 2])
                fh.flush()
                os.fsync(fh.fileno())
                fault_point("half_record")
                fh.write(line[len(line) // 2:])
            else:
                fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def _rewrite(self, records: list[RoundRecord]) -> None:
        tmp = self.records_path.with_name(f".{self.records_path.name}.tmp")
        with open(tmp, "w") as fh:
            fh.writelines(_record_line(r) for r in records)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.records_path)
