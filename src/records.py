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
FAULT_POINTS = (
    "setup",
    "fit",
    "pool",
    "after_state",
    "half_record",
    "temp_unrenamed",
    "after_record",
    "tracker_epochs",
    "before_summary",
)
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


# How a fit ended (``RoundRecord.stopped_by``, set by ``src.loop.trainers.how_fit_ended``): early
# stopping ended it before the epoch cap; it ran to ``max_epochs`` although early stopping was
# watching (it did not converge by the cap); it ran a length fixed in advance (no early stopping,
# or min_epochs = max_epochs); it hit ``trainer.max_steps``.
EARLY_STOPPING, EPOCH_CAP, FIXED_LENGTH, STEP_CAP = "early_stopping", "epoch_cap", "fixed_length", "step_cap"
FIT_ENDINGS = (EARLY_STOPPING, EPOCH_CAP, FIXED_LENGTH, STEP_CAP)


@dataclass(frozen=True)
class RoundRecord:
    """One completed round. ``metrics`` holds the ``val/*`` and ``test/*`` values."""

    round: int
    n_labelled: int
    n_selected: int
    selection: str  # "base" or the scorer that chose the round's new items
    selected_ids: list[int]  # in rank order, hardest first
    selected_scores: list[float]  # empty for the base set
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
    # how the fit ended (one of FIT_ENDINGS); None: not recorded (records made before it was), and then absent from the JSON
    stopped_by: str | None = None

    HEAD: ClassVar[tuple[str, ...]] = (
        "round",
        "n_labelled",
        "n_selected",
        "selection",
        "selected_ids",
        "selected_scores",
        "epochs",
        "best_epoch",
    )
    TIMINGS: ClassVar[tuple[str, ...]] = ("select_seconds", "reset_seconds", "fit_seconds", "test_seconds")

    def to_json(self) -> dict:
        """The ``rounds.jsonl`` object: the head fields, the metrics (val/* then test/*, each sorted), timings."""
        metrics = sorted(self.metrics.items(), key=lambda kv: (not kv[0].startswith("val/"), kv[0]))
        predictions = (
            {} if self.selected_predictions is None else {"selected_predictions": self.selected_predictions}
        )
        history = {} if self.history is None else {"history": self.history}
        stopped = {} if self.stopped_by is None else {"stopped_by": self.stopped_by}
        return {
            **{k: getattr(self, k) for k in self.HEAD},
            **stopped,
            **predictions,
            **dict(metrics),
            **history,
            **{k: getattr(self, k) for k in self.TIMINGS},
        }

    @classmethod
    def from_json(cls, obj: dict, where: str = "record") -> RoundRecord:
        """A record from its JSON object; a malformed one (a file from elsewhere, a hand edit) is a
        UserError naming ``where`` and the field: every field's type is checked."""
        if not isinstance(obj, dict):
            raise UserError(f"{where}: a round record must be a JSON object, got {type(obj).__name__}")
        missing = [k for k in cls.HEAD if k not in obj]
        if missing:
            raise UserError(f"{where}: a round record without {', '.join(missing)}")
        problem = _record_problem(obj)
        if problem:
            raise UserError(f"{where}: a round record whose {problem}")
        metrics = {k: v for k, v in obj.items() if "/" in k}
        history = obj.get("history")
        stopped_by = obj.get("stopped_by")
        return cls(
            **{k: obj[k] for k in cls.HEAD},
            metrics=metrics,
            **{k: float(obj.get(k, 0.0)) for k in cls.TIMINGS},
            selected_predictions=obj.get("selected_predictions"),
            history=history,
            stopped_by=stopped_by,
        )

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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _record_problem(obj: dict) -> str | None:
    """What is wrong with the fields of a record's JSON object ("round is 'two', not an integer >= 0"),
    or None: the types ``RoundRecord`` declares and the lengths that go together."""

    def shown(key):
        return f"{key} is {obj[key]!r}"[:120]

    for key in ("round", "n_labelled", "n_selected", "epochs"):
        if not _is_int(obj[key]) or obj[key] < 0:
            return f"{shown(key)}, not an integer >= 0"
    if not (obj["best_epoch"] is None or (_is_int(obj["best_epoch"]) and obj["best_epoch"] >= -1)):
        return f"{shown('best_epoch')}, not an epoch number"
    if not isinstance(obj["selection"], str) or not obj["selection"]:
        return f"{shown('selection')}, not a scorer name or base"
    if not isinstance(obj["selected_ids"], list) or not all(_is_int(i) for i in obj["selected_ids"]):
        return f"{shown('selected_ids')}, not a list of integer ids"
    if len(obj["selected_ids"]) != obj["n_selected"]:
        return f"n_selected is {obj['n_selected']} but selected_ids holds {len(obj['selected_ids'])}"
    if not isinstance(obj["selected_scores"], list) or not all(_is_number(v) for v in obj["selected_scores"]):
        return f"{shown('selected_scores')}, not a list of numbers"
    if len(obj["selected_scores"]) not in (0, obj["n_selected"]):
        return (
            f"selected_scores holds {len(obj['selected_scores'])} scores for {obj['n_selected']} selected ids"
        )
    predictions = obj.get("selected_predictions")
    if predictions is not None and (
        not isinstance(predictions, list)
        or not all(_is_int(c) for c in predictions)
        or len(predictions) != obj["n_selected"]
    ):
        return f"{shown('selected_predictions')}, not one integer class per selected id"
    for key, value in obj.items():
        if "/" in key and not _is_number(value):
            return f"metric {key} is {value!r}, not a number"
    for key in RoundRecord.TIMINGS:
        if key in obj and not _is_number(obj[key]):
            return f"{shown(key)}, not a number of seconds"
    history = obj.get("history")
    if history is not None and not (
        isinstance(history, dict)
        and all(isinstance(v, list) and all(x is None or _is_number(x) for x in v) for v in history.values())
    ):
        return "history is not an object of lists of numbers"
    if history is not None and len({len(v) for v in history.values()}) > 1:
        return "history has columns of different lengths"
    if obj.get("stopped_by") is not None and obj["stopped_by"] not in FIT_ENDINGS:
        return f"{shown('stopped_by')}, not one of {', '.join(FIT_ENDINGS)}"
    return None


def _state_problem(state: dict) -> str | None:
    """What is wrong with the fields of a state object besides ``completed_rounds``, or None."""
    for key in ("base_ids", "labelled_ids"):
        if not isinstance(state.get(key), list) or not all(_is_int(i) for i in state[key]):
            return f"{key} is not a list of integer ids"
    pending = state.get("pending")
    if pending is not None:
        if (
            not isinstance(pending, dict)
            or not isinstance(pending.get("ids"), list)
            or not all(_is_int(i) for i in pending["ids"])
            or not isinstance(pending.get("scores"), list)
            or not all(_is_number(v) for v in pending["scores"])
            or not _is_number(pending.get("seconds"))
        ):
            return "pending is not a selection (ids, scores, seconds)"
    if not isinstance(state.get("fingerprint", {}), dict):
        return "fingerprint is not an object"
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
    A lock file this call created goes again when the block ends in a UserError (a refusal
    leaves nothing of its own behind), removed while the lock is still held.
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    try:
        fd, created = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        fd, created = os.open(path, os.O_RDONLY), False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{run_dir} is in use by another run (pid {flock_holder(path)}); wait for it "
                "to finish or choose another hydra.run.dir"
            ) from None
        try:
            yield
        except UserError:
            if created:
                path.unlink(missing_ok=True)
            raise
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _record_line(record: RoundRecord) -> str:
    return json.dumps(record.to_json(), separators=(",", ":")) + "\n"


def read_records(path: Path) -> list[RoundRecord]:
    """Complete records of a rounds.jsonl; a partial trailing line (a kill mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    return parse_records(path.read_text(), path)


def parse_records(text: str, path) -> list[RoundRecord]:
    """The complete records of ``text``, the content of the rounds.jsonl at ``path``: a partial last
    line (a kill mid-write) is left out; a line that is no record is a UserError naming path:line."""
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # the last line never got its newline: incomplete
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{where}: not a JSON line ({err.msg})") from None
        except RecursionError:
            raise UserError(f"{where}: not a round record (nested too deeply)") from None
        records.append(RoundRecord.from_json(obj, where=where))
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
        """The state file's object; None when there is none; a UserError when it is not one we wrote
        (its other fields: ``check_consistent``)."""
        if not self.state_path.exists():
            return None
        try:
            state = json.loads(self.state_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(
                f"{self.state_path}: not a JSON state file ({err}); the run cannot be resumed"
            ) from None
        if (
            not isinstance(state, dict)
            or not _is_int(state.get("completed_rounds"))
            or state["completed_rounds"] < 0
        ):
            raise UserError(f"{self.state_path}: no integer completed_rounds; the run cannot be resumed")
        return state

    def check_consistent(self) -> None:
        """UserError when the records or the state are malformed or cannot both be true (a
        hand-edited or doubled rounds.jsonl): every record's fields, rounds numbered 0, 1, 2, ..
        and the state's count and last record agreeing with them. Reads only, so a refused resume
        changes nothing; finished runs are checked as well."""
        state = self.read_state()
        records = read_records(self.records_path)
        if state is None:
            if records:
                raise UserError(
                    f"{self.records_path} has {len(records)} rounds but {self.state_path} is "
                    "missing; the run cannot be resumed safely"
                )
            return
        done = int(state["completed_rounds"])
        if done not in (len(records), len(records) + 1):
            raise UserError(
                f"{self.state_path} says {done} rounds are complete but {self.records_path} "
                f"holds {len(records)}; the run directory was edited by hand"
            )
        for number, record in enumerate(records):
            if record.round != number:
                raise UserError(
                    f"{self.records_path}:{number + 1}: round {record.round} where round {number} "
                    "belongs (rounds count 0, 1, 2, .., one line each); the run directory was "
                    "edited by hand"
                )
        problem = _state_problem(state)
        if problem:
            raise UserError(f"{self.state_path}: {problem}; the run cannot be resumed")
        last = state.get("last_record")
        if done == 0:
            return
        if last is None:
            raise UserError(
                f"{self.state_path}: no last_record for its {done} completed rounds; "
                "the run cannot be resumed"
            )
        last = RoundRecord.from_json(last, where=f"{self.state_path} (last_record)")
        if last.round != done - 1:
            raise UserError(
                f"{self.state_path}: its last_record is round {last.round} but it says {done} rounds "
                "are complete; the run directory was edited by hand"
            )
        if done == len(records) and _record_line(last) != _record_line(records[-1]):
            raise UserError(
                f"{self.state_path}: its last_record differs from round {done - 1} of "
                f"{self.records_path}; the run directory was edited by hand"
            )
        if len(state["labelled_ids"]) != last.n_labelled:
            raise UserError(
                f"{self.state_path}: {len(state['labelled_ids'])} labelled ids but round {last.round} "
                f"had {last.n_labelled} labelled; the run directory was edited by hand"
            )

    def recover(self) -> tuple[list[RoundRecord], dict | None]:
        """Records and state, repaired after a kill at any point of a commit."""
        self.check_consistent()
        state = self.read_state()
        records = read_records(self.records_path)
        # rewrite the file when it has a partial line, so the next append starts clean
        if (
            self.records_path.exists()
            and not self.records_path.read_text().endswith("\n")
            and self.records_path.stat().st_size
        ):
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
                fh.write(line[len(line) // 2 :])
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
