"""What a sweep job settles first when it shares a machine or runs on a cluster.

- Its share of the CPU threads: K jobs of a joblib sweep run side by side on one machine,
  so each takes ``cores // K`` threads instead of every job asking for all cores and
  the K of them fighting over them. A submitit job takes ``hydra.launcher.cpus_per_task``
  (on SLURM the CPUs it was given; on the local executor the cap of each job).
- Its own GPU (joblib with ``trainer=gpu``): each worker process locks one of the visible
  GPUs for its lifetime and sees only that one.
- Whether it is a requeued job: SLURM requeues a preempted, timed-out (submitit's
  checkpoint) or node-failed job with the same arguments, so it would start its run
  directory again without ``resume=true``; a requeue is detected and treated as a resume,
  so it costs at most the round in progress.

``prepare_job(cfg)`` does all three and is the one call the entry point makes, first
thing in each job. Outside a multirun (or with the basic launcher) it changes nothing.

And what the command around the jobs settles, through Hydra callbacks (conf/hydra/default.yaml)
and ``run_entry_point``: the output directory is checked before Hydra makes it and a refused
command takes away the folders it made (``OutputDirGuard``), a refused ``--multirun`` keeps its
sweep's ``multirun.yaml`` (``SweepRecordGuard``), and a joblib sweep's workers end with their
launcher (``WorkersEndWithLauncher``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from src.errors import UserError

log = logging.getLogger(__name__)

# read by OpenMP / BLAS libraries when they start: set so that processes this job starts
# (and libraries loaded later) keep to the same share as torch's own pool
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# the id of the cluster job that last ran in a run directory (a requeued job has the same id)
JOB_MARKER = ".launcher_job_id"
GPU_LOCK_DIR = ".gpu_locks"

_held_gpu: tuple[str, object] | None = None  # (GPU id, open lock file) of this worker process


def available_cores() -> int:
    """CPUs this process may run on (the affinity mask, which SLURM and taskset restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def launcher_kind(launcher: Mapping | None) -> str:
    """'joblib', 'submitit' or 'basic', from the launcher config's target."""
    target = str((launcher or {}).get("_target_", ""))
    if "joblib_launcher" in target:
        return "joblib"
    if "submitit_launcher" in target:
        return "submitit"
    return "basic"


def thread_share(launcher: Mapping | None, cores: int) -> int | None:
    """CPU threads for one job of a sweep on ``cores`` CPUs; None leaves torch's default alone."""
    kind = launcher_kind(launcher)
    if kind == "joblib":
        n_jobs = int(launcher.get("n_jobs") or 1)
        workers = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 = all cores
        return max(1, cores // workers)
    if kind == "submitit":
        cpus = launcher.get("cpus_per_task")
        return max(1, min(int(cpus), cores)) if cpus else cores
    return None


def configure_threads(launcher: Mapping | None = None) -> int | None:
    """Give this job its share of the CPU threads (torch and the OMP/MKL/OpenBLAS variables).

    ``launcher`` is the ``hydra.launcher`` config (default: the running job's). Returns the
    thread count set, or None when nothing was changed (single run, basic launcher).
    """
    if launcher is None:
        launcher = _running_launcher()
    threads = thread_share(launcher, available_cores())
    if threads is None:
        return None
    import torch

    torch.set_num_threads(threads)
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(threads)
    return threads


def visible_gpus() -> list[str]:
    """GPU ids this process may use, found without initialising CUDA (which would fix them)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    driver = Path("/proc/driver/nvidia/gpus")  # one entry per GPU of the NVIDIA driver
    return [str(i) for i in range(len(list(driver.iterdir())))] if driver.is_dir() else []


def claim_gpu(lock_dir: Path) -> str | None:
    """Lock one visible GPU for this worker process and make it the only one CUDA sees.

    Joblib's workers are processes that run job after job, so the lock is per process and
    held until it exits; with n_jobs <= GPUs every worker has its own GPU. None without GPUs.
    """
    global _held_gpu
    if _held_gpu is not None:
        return _held_gpu[0]
    gpus = visible_gpus()
    if not gpus:
        return None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        log.warning("CUDA was initialised before the job chose its GPU; the job shares all visible GPUs")
        return None
    lock_dir.mkdir(parents=True, exist_ok=True)
    for gpu in gpus:
        handle = open(lock_dir / f"gpu{gpu}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held_gpu = (gpu, handle)
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        return gpu
    raise UserError(
        f"hydra.launcher.n_jobs: more parallel jobs than GPUs ({len(gpus)} visible: "
        f"{','.join(gpus)}); set hydra.launcher.n_jobs <= {len(gpus)}"
    )


def cluster_job_id() -> str | None:
    """The submitit job id (SLURM: <array job>_<task>), kept across requeues; None outside submitit."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit

    return str(submitit.JobEnvironment().job_id)


def requeued(run_dir: Path) -> bool:
    """True when this job is a requeue of the cluster job that already ran in ``run_dir``.

    SLURM counts restarts (``SLURM_RESTART_COUNT``: preemption, node failure, submitit's
    requeue after a time-out); submitit's local executor restarts a job under the same id,
    which the run directory records. Records the current job id for the next check.
    """
    restarts = os.environ.get("SLURM_RESTART_COUNT", "").strip()
    job_id = cluster_job_id()
    marker = Path(run_dir) / JOB_MARKER
    same_job = job_id is not None and marker.is_file() and marker.read_text().strip() == job_id
    if job_id is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(job_id)
    return same_job or (restarts.isdigit() and int(restarts) > 0)


def prepare_job(cfg) -> None:
    """First thing in every job: thread share, GPU of a parallel worker, resume when requeued."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    launcher = hydra_cfg.launcher
    # the GPU first: it must be chosen before anything initialises CUDA
    if launcher_kind(launcher) == "joblib" and str(cfg.trainer.get("accelerator")) in ("gpu", "cuda", "auto"):
        gpu = claim_gpu(Path(hydra_cfg.sweep.dir) / GPU_LOCK_DIR)
        if gpu is not None:
            log.info("job %s runs on GPU %s", hydra_cfg.job.num, gpu)
    threads = configure_threads(launcher)
    if threads is not None:
        log.info("job %s uses %d CPU thread(s)", hydra_cfg.job.num, threads)
    if requeued(Path(hydra_cfg.runtime.output_dir)) and not cfg.resume:
        log.info("requeued job: continuing %s (resume=true)", hydra_cfg.runtime.output_dir)
        cfg.resume = True


def _running_launcher() -> Mapping | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().launcher if HydraConfig.initialized() else None


class SweepRecordGuard(Callback):
    """Keeps a sweep directory's ``multirun.yaml`` as it was when every job of a command is refused.

    Hydra's sweeper rewrites ``multirun.yaml`` before any job starts, so a refused
    ``--multirun`` into an existing sweep (changed settings without ``resume=true``, a
    locked job) would relabel the sweep with settings it never ran. The callback notes the
    file's bytes before the sweep; ``restore_sweep_record`` (called by the CLI when the
    command fails) puts them back unless some job was accepted, i.e. wrote its
    ``.hydra/config.yaml``, during this command.
    """

    def on_multirun_start(self, config, **kwargs) -> None:
        path = Path(str(config.hydra.sweep.dir)) / "multirun.yaml"
        _sweep_before.update(
            path=path,
            started=time.time_ns(),
            dir_existed=path.parent.is_dir(),
            bytes=path.read_bytes() if path.is_file() else None,
        )


_sweep_before: dict = {}


def restore_sweep_record() -> None:
    """Undo the sweeper's ``multirun.yaml`` write of a command whose jobs were all refused."""
    if not _sweep_before:
        return
    path: Path = _sweep_before["path"]
    accepted = any(
        p.stat().st_mtime_ns >= _sweep_before["started"] for p in path.parent.glob("*/.hydra/config.yaml")
    )
    if accepted:
        return
    if _sweep_before["bytes"] is not None:
        tmp = path.with_name(".multirun.yaml.tmp")
        tmp.write_bytes(_sweep_before["bytes"])
        tmp.replace(path)
    else:
        path.unlink(missing_ok=True)
        if not _sweep_before["dir_existed"] and path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()


class OutputDirGuard(Callback):
    """Checks the run's (or sweep's) output directory before Hydra makes it, and notes which of its
    folders this command creates, so that a refused command can take them away again.

    ``hydra.run.dir`` (``hydra.sweep.dir``) as composed, e.g. ``outputs/<task>/<run name>/<time>``
    from ``paths.output_dir``: a file in its way or a read-only parent is one line and exit status 2
    (Hydra's own mkdir would end in a traceback). ``remove_new_dirs`` (called by the CLI when the
    command fails) removes the noted folders that are still empty, deepest first.
    """

    def on_run_start(self, config, **kwargs) -> None:
        _guard_output_dir(config, "hydra.run.dir")

    def on_multirun_start(self, config, **kwargs) -> None:
        _guard_output_dir(config, "hydra.sweep.dir")


# directory Hydra makes for this command -> the topmost of its folders that did not exist before
# (None: it existed)
_noted_dirs: dict[Path, Path | None] = {}


def _guard_output_dir(config, key: str) -> None:
    from src.config.overrides import output_dir_problem

    try:
        value = OmegaConf.select(config, key, throw_on_missing=True)
    except Exception:  # noqa: BLE001  (what cannot be resolved here, Hydra reports itself)
        return
    if value is None:
        return
    problem = output_dir_problem(key, value)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    note_new_dirs(Path(str(value)))


def note_new_dirs(path: Path) -> None:
    """Note, before it is made, which folders of ``path`` this process is about to create."""
    path = Path(path).absolute()
    top = None
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():
            break
        top = folder
    _noted_dirs[path] = top


def made_by_this_process(path: Path) -> bool | None:
    """Whether the folder ``path`` was created for this command: True / False for a noted output
    directory or a folder below a noted one that this process created (a sweep's job directory);
    None when unknown (a sweep job in a worker process, below an existing sweep directory)."""
    path = Path(path).absolute()
    for noted, top in _noted_dirs.items():
        if path == noted:
            return top is not None
        if noted in path.parents and top is not None:
            return True
    return None


def remove_new_dirs() -> None:
    """Remove the folders this process created for its output directories (``note_new_dirs``)
    that are empty, from the deepest up; a folder that holds anything stays, with its parents."""
    for noted, top in reversed(list(_noted_dirs.items())):
        if top is None:
            continue
        for folder in (noted, *noted.parents):
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): what is above it stays too
                if folder.exists():
                    break
            if folder == top:
                break
    _noted_dirs.clear()


def run_entry_point(main: Callable[[], object]) -> None:
    """Run a Hydra entry point (``main``); when the command fails, undo what was done for it before
    any run was accepted: the sweep's ``multirun.yaml`` (``restore_sweep_record``) and the output
    folders Hydra made that are still empty (``remove_new_dirs``)."""
    try:
        main()
    except BaseException as failure:
        if not (isinstance(failure, SystemExit) and failure.code in (0, None)):
            restore_sweep_record()
            remove_new_dirs()
        raise


class WorkersEndWithLauncher(Callback):
    """A joblib sweep's worker processes end with the process that launched them.

    Loky's workers outlive a launcher killed with ``kill -9``: they finish the job in hand and take
    the queued ones, with nobody waiting for the results. Here the launcher, before its sweep,
    gives every worker it starts an initializer (``end_with_launcher``) that watches it: once the
    worker's parent is no longer the launcher, the worker ends itself and what it started (a job's
    W&B process, data loader workers) at once, as a kill would. The job it was running is then a
    killed job, continued by ``resume=true``.
    """

    def on_multirun_start(self, config, **kwargs) -> None:
        if launcher_kind(OmegaConf.select(config, "hydra.launcher")) == "joblib":
            bind_workers_to_launcher()


WATCH_INTERVAL_S = 0.1  # how often a worker looks for its launcher


def bind_workers_to_launcher() -> None:
    """Make joblib's loky backend start its workers with ``end_with_launcher`` (this process's pid).

    The joblib launcher asks for ``backend="loky"`` by name and takes no initializer, so the name
    is registered again (``joblib.register_parallel_backend``) for loky's own backend class with
    the initializer added to the executor it configures.
    """
    import joblib
    from joblib.parallel import BACKENDS

    loky = BACKENDS["loky"]
    if getattr(loky, "binds_workers_to_launcher", False):
        return

    class LauncherBoundLoky(loky):
        binds_workers_to_launcher = True

        def configure(self, *args, **kwargs):
            kwargs.setdefault("initializer", end_with_launcher)
            kwargs.setdefault("initargs", (os.getpid(),))
            return super().configure(*args, **kwargs)

    joblib.register_parallel_backend("loky", LauncherBoundLoky)


def end_with_launcher(launcher_pid: int) -> None:
    """Loky worker initializer: a daemon thread that ends this worker once ``launcher_pid`` is no
    longer its parent (the launcher died and the worker was handed to init or a subreaper)."""

    def watch() -> None:
        while os.getppid() == launcher_pid:
            time.sleep(WATCH_INTERVAL_S)
        end_process_tree()

    if os.getppid() != launcher_pid:
        end_process_tree()
    threading.Thread(target=watch, name="end-with-launcher", daemon=True).start()


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children, theirs, ...), from Linux's ``/proc``; [] elsewhere."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # ended meanwhile
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def end_process_tree() -> None:
    """SIGKILL what this process started, then this process."""
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    os.kill(os.getpid(), signal.SIGKILL)
