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
"""
from __future__ import annotations

import fcntl
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from hydra.experimental.callback import Callback

from src.errors import UserError

log = logging.getLogger(__name__)

# read by OpenMP / BLAS libraries when they start: set so that processes this job starts
# (and libraries loaded later) keep to the same share as torch's own pool
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# the id of the cluster job that last ran in a run directory (a requeued job has the same id)
JOB_MARKER = ".launcher_job_id"
GPU_LOCK_DIR = ".gpu_locks"

_held_gpu: tuple[str, object] | None = None   # (GPU id, open lock file) of this worker process


def available_cores() -> int:
    """CPUs this process may run on (the affinity mask, which SLURM and taskset restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:    # not on Linux
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
        workers = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)   # joblib: -1 = all cores
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
    driver = Path("/proc/driver/nvidia/gpus")   # one entry per GPU of the NVIDIA driver
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
    raise UserError(f"hydra.launcher.n_jobs: more parallel jobs than GPUs ({len(gpus)} visible: "
                    f"{','.join(gpus)}); set hydra.launcher.n_jobs <= {len(gpus)}")


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
        _sweep_before.update(path=path, started=time.time_ns(), dir_existed=path.parent.is_dir(),
                             bytes=path.read_bytes() if path.is_file() else None)


_sweep_before: dict = {}


def restore_sweep_record() -> None:
    """Undo the sweeper's ``multirun.yaml`` write of a command whose jobs were all refused."""
    if not _sweep_before:
        return
    path: Path = _sweep_before["path"]
    accepted = any(p.stat().st_mtime_ns >= _sweep_before["started"]
                   for p in path.parent.glob("*/.hydra/config.yaml"))
    if accepted:
        return
    if _sweep_before["bytes"] is not None:
        tmp = path.with_name(".multirun.yaml.tmp")
        tmp.write_bytes(_sweep_before["bytes"])
        tmp.replace(path)
    else:
        path.unlink(missing_ok=True)
        if not _sweep_before["dir_existed"] and not any(path.parent.iterdir()):
            path.parent.rmdir()
