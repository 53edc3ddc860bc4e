"""A run directory: whether a config may write into it (new, or resumed with the same result
settings), the Hydra files recorded once it is accepted, and the summary read back."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src.errors import UserError
from src.loop.active_loop import check_fingerprint
from src.records import RunStore, read_records

log = logging.getLogger("src.run")

# the config groups whose values change results: a resumed run must share all of them
RESULT_GROUPS = (
    "seed",
    "source",
    "dataset",
    "model",
    "scorer",
    "selection",
    "fit",
    "trainer",
    "callbacks",
    "baseline",
)


def result_fingerprint(cfg: DictConfig) -> dict:
    """The settings a resumed run must share with the original, flattened: all that changes results."""
    # resolved in the whole config: data roots interpolate paths.*, which is not kept here
    resolved = OmegaConf.to_container(cfg, resolve=True)
    flat = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = node

    walk("", {k: resolved[k] for k in RESULT_GROUPS if k in resolved})
    return flat


def accept_run_dir(cfg: DictConfig, run_dir: Path) -> None:
    """UserError unless ``cfg`` may write into ``run_dir``: a new run into an empty directory, or
    ``resume=true`` on a run with the same result settings. Reads only; runs under the lock."""
    store = RunStore(run_dir)
    if store.started() and not cfg.resume:
        raise UserError(
            f"{run_dir} already holds a run; pass resume=true to continue it, "
            "or choose another hydra.run.dir / hydra.sweep.dir"
        )
    if cfg.resume and store.started() and not store.exists():
        log.info("resume=true: %s was killed before its first round; starting it over", run_dir)
    if cfg.resume and not store.started():
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise UserError(
                f"resume=true: {run_dir} holds no run to resume (no {store.records_path.name}, "
                f"{store.state_path.name} or .hydra/config.yaml); drop resume=true to start a new run"
            )
        log.info(
            "resume=true: job %s never started; starting it fresh in %s", HydraConfig.get().job.num, run_dir
        )
    store.check_consistent()  # a hand-edited or doubled record file is refused before anything else
    if store.exists() and (run_dir / "summary.json").exists():  # a finished run: its summary as well
        read_summary(run_dir / "summary.json", n_rounds=len(read_records(store.records_path)))
    state = store.read_state()
    if state is not None:
        check_fingerprint(state, result_fingerprint(cfg), run_dir)


def record_hydra_files(run_dir: Path, cfg: DictConfig) -> None:
    """``.hydra/{config,hydra,overrides}.yaml`` as Hydra writes them, once the run is accepted
    (``hydra.output_subdir`` is null so that Hydra itself never writes them before)."""
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(exist_ok=True)
    hc = HydraConfig.get()
    files = {
        "config.yaml": cfg,
        "hydra.yaml": OmegaConf.create({"hydra": hc}),
        "overrides.yaml": hc.overrides.task,
    }
    for name, node in files.items():
        tmp = hydra_dir / f".{name}.tmp"
        tmp.write_text(OmegaConf.to_yaml(node))
        tmp.replace(hydra_dir / name)


def remove_refused_run_dir(run_dir: Path) -> None:
    """A refused command leaves no trace of the run directory it would have started: the directory
    goes when it is empty (``lock_run_dir`` took away the lock file it made; a UserError raised
    after the run began, which wrote ``.hydra/`` first, leaves everything in place)."""
    with contextlib.suppress(OSError):  # gone, or another process's files appeared meanwhile
        run_dir.rmdir()


def read_summary(path: Path, n_rounds: int) -> dict:
    """A finished run's ``summary.json``; a UserError naming it when it is not the summary of its
    ``n_rounds`` committed rounds (a JSON object of numbers, ``al/rounds`` equal to the count)."""
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(
            f"{path}: not a JSON summary ({err}); remove it and resume to write it again"
        ) from None
    if not isinstance(summary, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in summary.values()
    ):
        raise UserError(
            f"{path}: not a summary (an object of numbers); remove it and resume to write it again"
        )
    if summary.get("al/rounds", n_rounds) != n_rounds:
        raise UserError(
            f"{path} counts {summary.get('al/rounds')!r} rounds but {n_rounds} are committed; "
            "remove it and resume to write it again"
        )
    return summary
