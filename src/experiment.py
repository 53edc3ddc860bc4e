"""One active-learning experiment from a composed config: build everything, run, summarise.

The CLI (``src/run.py``) composes the config with Hydra and calls ``run_experiment``;
tests and benchmarks call ``build_loop`` on a config from Hydra's compose API. Order
matters: the config is validated before anything is built, the data before the
model, and every user mistake surfaces as a ``UserError`` before the first fit.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import secrets
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src.analysis.curves import curve_summary
from src.config.instantiate import build
from src.errors import UserError
from src.labelling.trained import save_trained_model
from src.launch import made_by_this_process, prepare_job
from src.loop import distributed
from src.loop.active_loop import ActiveLearningLoop, SelectionSettings, check_fingerprint, round_label
from src.loop.trainers import TrainerFactory, quiet_libraries
from src.models.named_baselines import named_baseline_checkpoint
from src.models.weights import WeightSnapshot, load_into
from src.pretraining import make_if_missing
from src.records import RoundRecord, RunStore, fault_point, lock_run_dir, read_records, write_json_atomic
from src.selection.schedule import steps_per_epoch
from src.selection.scorers import Scorer, build_scorer
from src.tasks import Task, get_task
from src.tracking import Tracker
from src.validate import check_pool, validate

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


def build_model(
    cfg: DictConfig, datamodule, scorer: Scorer | None = None
) -> tuple[torch.nn.Module, WeightSnapshot]:
    """The model with its starting weights, adapted by ``scorer`` (dropout, a loss-prediction
    module), and the snapshot every round restores."""
    # A seeded construction makes the random init (the start of a scratch model) reproducible.
    torch.manual_seed(int(cfg.model.init.init_seed))
    model = build(cfg.model.module, num_classes=datamodule.num_classes, in_channels=datamodule.channels)
    if cfg.model.init.get("checkpoint"):
        source, key = cfg.model.init.checkpoint, "model.init.checkpoint"
    else:
        source, key = named_baseline_checkpoint(cfg), f"baseline={cfg.baseline.name}"
    if source is not None:
        # another class count: the file's backbone under this run's seeded head (thesis 4.3.3)
        head = load_into(model, source, key=key, new_head=True)
        if head:
            log.info(
                "%s: the file's class head does not fit %d classes; loaded everything else and kept "
                "the seeded init for %s",
                key,
                datamodule.num_classes,
                ", ".join(head),
            )
    if scorer is not None:
        scorer.prepare_model(model, datamodule)
    if cfg.get("fit", {}).get("channels_last"):  # before the snapshot: a reset copies into these tensors
        model = model.to(memory_format=torch.channels_last)
    return model, WeightSnapshot(model)


def make_tracker(cfg: DictConfig) -> Tracker:
    """The tracker of ``cfg.logger``; a W&B group left null becomes the task (and sweep) name."""
    if "group" in cfg.logger and cfg.logger.group is None:
        group = cfg.task_name
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            group = f"{cfg.task_name}/{Path(hc.sweep.dir).name}"
        return hydra.utils.instantiate(cfg.logger, group=group)
    return hydra.utils.instantiate(cfg.logger)


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


def format_table(records: list[RoundRecord], task: Task) -> str:
    """The per-round console table: the task's columns that any record has."""
    cols = [c for c in task.columns if any(r.value(c[1]) is not None for r in records)]
    rows = [[c[0] for c in cols]] + [
        [c[2].format(r.value(c[1])) if r.value(c[1]) is not None else "-" for c in cols] for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def round_line(task: Task, record: RoundRecord, n_rounds: int) -> str:
    """The one console line of a completed round."""
    parts = [round_label(record.round, n_rounds), f"labelled {record.n_labelled}", f"epochs {record.epochs}"]
    shown = ["test/loss"] + [key for _, key, _ in task.console_columns]
    parts += [f"{k} {record.metrics[k]:.4f}" for k in shown if k in record.metrics]
    parts.append(f"select {record.select_seconds:.1f}s fit {record.fit_seconds:.1f}s")
    return " | ".join(parts)


def build_loop(
    cfg: DictConfig, run_dir: Path, progress: bool = False, tracker: Tracker | None = None
) -> ActiveLearningLoop:
    """Datamodule, model, starting weights and loop from a config that ``validate`` passed (the run
    validates once, before this; here only the selection plan meets the pool the data gave)."""
    task = get_task(cfg.task_type)
    datamodule = build(cfg.dataset)
    datamodule.setup()
    check_pool(cfg, len(datamodule.pool_ids))
    scorer_cfg = OmegaConf.to_container(cfg.scorer, resolve=True)
    scorer = build_scorer(scorer_cfg, ignore=task.scorer_options)
    make_if_missing(cfg)  # a missing named baseline with baseline.make_if_missing: trained first
    model, snapshot = build_model(cfg, datamodule, scorer)
    options = {k: scorer_cfg[k] for k in task.scorer_options if k in scorer_cfg}
    new_trainer = TrainerFactory(
        cfg.trainer,
        cfg.callbacks,
        run_dir,
        progress=progress,
        epoch_logs=not cfg.logger._target_.endswith(".NoTracker"),
        epochs=cfg.fit.epochs,
    )
    fixed_steps = steps_per_epoch(cfg.fit.steps_per_epoch, len(datamodule.pool_ids), datamodule.batch_size)
    loop = ActiveLearningLoop(
        datamodule=datamodule,
        model=model,
        snapshot=snapshot,
        scorer=scorer,
        score_batch=functools.partial(task.score_batch, **options),
        selection=SelectionSettings(**OmegaConf.to_container(cfg.selection, resolve=True)),
        new_trainer=new_trainer,
        seed=cfg.seed,
        store=RunStore(run_dir),
        tracker=tracker,
        steps_per_epoch=fixed_steps,
        progress=progress,
        fingerprint=result_fingerprint(cfg),
        round_line=functools.partial(round_line, task),
    )
    return loop


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


class HeldJobLog(logging.Handler):
    """Hydra's job log files, held off the root logger until the run is accepted.

    The set-up lines logged meanwhile (which baseline was loaded, a resume notice) are kept
    here and written to the files on ``release``, so a refused run writes nothing and an
    accepted one has its whole story in ``run.log``.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        root = logging.getLogger()
        self.files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        self.held: list[logging.LogRecord] = []
        for handler in self.files:
            root.removeHandler(handler)
        root.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.held.append(record)

    def release(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        for handler in self.files:
            for record in self.held:
                if record.levelno >= handler.level:
                    handler.handle(record)
            root.addHandler(handler)
        self.held.clear()

    def drop(self) -> None:
        """A refused run: the held lines went to the console already; the files get none."""
        logging.getLogger().removeHandler(self)
        self.held.clear()


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


def data_title(cfg: DictConfig, datamodule) -> str:
    """``<dataset> (<source>)``, as the class-distribution figure is titled: the source group where
    the dataset draws on it (v2, mixed, noisy, hard: ``v2 (imagenet)``), else the sources the
    datamodule was built with, by their root where they have one (``folder (/data/my_images)``)."""
    raw = json.dumps(OmegaConf.to_container(cfg.dataset, resolve=False), default=str)
    if "${source." in raw:
        return f"{cfg.dataset.name} ({cfg.source.name})"
    sources = [
        str(getattr(s, "root", None) or getattr(s, "name", type(s).__name__))
        for s in getattr(datamodule, "sources", [])
    ]
    return f"{cfg.dataset.name} ({', '.join(sources)})" if sources else str(cfg.dataset.name)


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
