"""One active-learning experiment from a composed config: build everything, run, summarise.

The CLI (``src/run.py``) composes the config with Hydra and calls ``run_experiment``;
tests and benchmarks call ``build_loop`` on a config from Hydra's compose API. Order
matters: the config is validated before anything is built, the data before the
model, and every user mistake surfaces as a ``UserError`` before the first fit.
"""

from __future__ import annotations

import functools
import logging
import secrets
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from src.analysis.curves import curve_summary
from src.errors import UserError
from src.experiment.build import build_loop, make_tracker
from src.experiment.console import data_title, format_table
from src.experiment.job_log import HeldJobLog
from src.experiment.run_dir import accept_run_dir, read_summary, record_hydra_files, remove_refused_run_dir
from src.labelling.trained import save_trained_model
from src.launch import made_by_this_process, prepare_job
from src.loop import distributed
from src.loop.trainers import quiet_libraries
from src.records import RunStore, fault_point, lock_run_dir, read_records, write_json_atomic
from src.tasks import get_task
from src.validate import validate

log = logging.getLogger("src.run")


def run_experiment(cfg: DictConfig) -> dict:
    """Run (or resume) the experiment of ``cfg`` in Hydra's output directory; returns the curve summary.

    Nothing is written into the directory until the run is accepted (``accept_run_dir``) and
    the UserErrors of building the loop are past; the writer lock is held throughout.
    """
    if distributed.is_follower():  # rank 1..N-1 of a trainer=ddp run: rank 0 accepted the run and writes it
        return distributed.run_follower(cfg, build_loop)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    # Hydra made the directory already: new when this command made it (known for a single run and
    # a new sweep), else when it holds nothing (a job of an existing sweep, in a worker process)
    was_new = made_by_this_process(run_dir)
    if was_new is None:
        was_new = not run_dir.exists() or not any(run_dir.iterdir())
    job_log = HeldJobLog()
    try:
        prepare_job(
            cfg
        )  # a sweep job's thread share and GPU; a requeued cluster job resumes (sets cfg.resume)
        validate(cfg)
        distributed.wanted_processes(cfg.trainer)  # a UserError for DDP settings the rounds cannot run
        quiet_libraries()
        with lock_run_dir(run_dir):
            accept_run_dir(cfg, run_dir)
            return _run_accepted(cfg, run_dir, job_log)
    except UserError:
        if was_new:
            remove_refused_run_dir(run_dir)
        raise
    finally:
        job_log.drop()  # a no-op once released


def _run_accepted(cfg: DictConfig, run_dir: Path, job_log: HeldJobLog) -> dict:
    store = RunStore(run_dir)
    if store.exists() and (run_dir / "summary.json").exists():
        # a finished job: nothing to run, nothing to log (no empty tracker run); its records and
        # summary were checked when it was accepted
        summary = read_summary(run_dir / "summary.json", n_rounds=len(read_records(store.records_path)))
        log.info("%s is already complete; nothing to do", run_dir)
        return summary
    progress = sys.stderr.isatty() if cfg.progress == "auto" else bool(cfg.progress)
    task = get_task(cfg.task_type)
    tracker = make_tracker(cfg)
    loop = build_loop(cfg, run_dir, progress=progress, tracker=tracker)  # UserErrors before anything trains
    if task.save_data_summary is not None:  # written only once nothing can refuse the run
        task.save_data_summary(loop.dm, run_dir, title=data_title(cfg, loop.dm))
    record_hydra_files(run_dir, cfg)
    fault_point("setup")
    job_log.release()

    id_file = run_dir / "run_id"
    run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
    run_dir.mkdir(parents=True, exist_ok=True)
    id_file.write_text(run_id)
    tracker.start(
        OmegaConf.to_container(cfg, resolve=True),
        run_dir,
        run_id,
        item_view=functools.partial(task.item_view, loop.dm, model=loop.model),
    )
    tracker.replay(loop.store.recover()[0])
    log.info(
        "run %s: %s, %d pool items, %d rounds, %s %s -> %s",
        cfg.run_name,
        loop.dm.name,
        len(loop.pool_ids),
        loop.n_rounds,
        "kept" if loop.sel.mode == "prune" else "budgets",
        loop.budgets,
        run_dir,
    )
    records, failed = [], True
    ranks = distributed.start_ranks(cfg, run_dir)  # trainer=ddp: ranks 1..N-1 join from here
    try:
        records = loop.run()
        failed = False
    finally:
        if ranks is not None:
            ranks.close(failed)
        if not failed:
            fault_point("before_summary")
        summary = curve_summary(records)
        tracker.finish(summary, failed=failed)
    if cfg.get("save_model") and not failed:  # before the summary: a finished run always has its model
        # a detection datamodule names its classes itself; a classification one through its built data
        names = getattr(loop.dm, "class_names", None) or loop.dm.data.class_names
        save_trained_model(
            run_dir,
            loop.model,
            cfg.task_type,
            names,
            loop.dm.channels,
            overrides=list(HydraConfig.get().overrides.task),
            leave_out=loop.scorer.attached,
        )
    write_json_atomic(run_dir / "summary.json", summary)
    log.info("per-round results:\n%s", format_table(records, task))
    log.info(
        "results: %s (rounds.jsonl, summary.json)%s",
        run_dir,
        f"; tracker: {tracker.location}" if tracker.location else "",
    )
    return summary
