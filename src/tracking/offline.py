"""Read an offline W&B run back from its ``run-<id>.wandb`` transaction log.

The log is a sequence of the SDK's own protobuf ``Record`` messages framed in
LevelDB's log format (32 KiB blocks; each chunk has a 7-byte header: crc32, length,
type FULL/FIRST/MIDDLE/LAST) after a 7-byte W&B file header. Decoding uses
``wandb.proto``, so what comes back is what ``wandb sync`` would upload: the run's
config, its history rows and its summary, without a server.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

_BLOCK = 32 * 1024
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_records(path: str | Path):
    # wandb's protobuf module is imported here, not at the top: importing wandb takes seconds
    # and the report imports this module whether or not it reads a W&B log
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0 and length == 0:  # zero padding up to the end of the block
            pos += left
            continue
        if pos + _HEADER + length > len(data):
            break  # the tail of a log whose writer was killed: not a record
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (_FULL, _FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class OfflineRun:
    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    step_metrics: dict = field(default_factory=dict)  # metric name or glob -> its x-axis metric


def read_offline_run(run_dir: str | Path) -> OfflineRun:
    """Parse the single ``run-*.wandb`` file in an ``offline-run-*`` directory."""
    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if len(files) != 1:
        raise FileNotFoundError(f"{run_dir}: expected one run-*.wandb file, found {len(files)}")
    run = OfflineRun()
    for record in iter_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.name, run.group, run.job_type = r.run_id, r.display_name, r.run_group, r.job_type
            run.config.update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "config":
            run.config.update({_key(u): json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            run.summary.update({_key(u): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "metric":
            m = record.metric
            if m.step_metric:
                run.step_metrics[m.name or m.glob_name] = m.step_metric
    return run


def wait_until_finished(run_dir: str | Path, timeout: float = 60.0) -> bool:
    """Wait until the run's log holds its ``exit`` record.

    ``wandb.finish()`` hands the last records to the SDK's service process, which writes
    them a moment later; reading the log right away (a test, a script after a run) may
    otherwise see a log without its history.
    """
    deadline = time.monotonic() + timeout
    while True:
        for path in Path(run_dir).glob("run-*.wandb"):
            try:
                if any(r.WhichOneof("record_type") == "exit" for r in iter_records(path)):
                    return True
            except Exception:  # a chunk still being written
                pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def media(row: dict, key: str) -> dict:
    """A logged image or table of a history row, as one dict.

    The SDK flattens a media value into nested keys (``al/selection`` ->
    ``al/selection/_type``, ``al/selection/path``, ...); this gathers them back.
    """
    if isinstance(row.get(key), dict):
        return row[key]
    prefix = key + "/"
    found = {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)}
    if "_type" not in found:
        raise KeyError(f"{key}: no logged media in this history row")
    return found


def media_files(run_dir: str | Path, value: dict) -> list[Path]:
    """The files a logged table, image or image list was saved to, under the run's ``files/``."""
    names = value.get("filenames") or [value["path"]]
    return [Path(run_dir) / "files" / n for n in names]


def read_table(run_dir: str | Path, value: dict) -> tuple[list[str], list[list]]:
    """Columns and rows of a logged ``wandb.Table`` (``_type: table-file``)."""
    data = json.loads(media_files(run_dir, value)[0].read_text())
    return list(data["columns"]), [list(row) for row in data["data"]]
