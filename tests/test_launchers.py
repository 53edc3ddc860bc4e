"""Parallel and cluster sweeps: the thread share, GPU claims and requeue detection of
src/launch.py, the SLURM settings as sbatch sees them, and end to end through the real
CLI: a sweep under joblib and under submitit's local executor equals the sequential sweep,
a re-submitted sweep finishes only its unfinished jobs, a requeued job resumes by itself."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from src import launch
from src.errors import UserError
from src.tracking.offline import read_offline_run, wait_until_finished
from tests.conftest import CONF, REPO, cli_env, made_once, read_jsonl, run_cli, without_timings

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT_LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"


# -- thread share --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "launcher,cores,expected",
    [
        ({"_target_": JOBLIB, "n_jobs": 2}, 2, 1),
        ({"_target_": JOBLIB, "n_jobs": 4}, 16, 4),
        ({"_target_": JOBLIB, "n_jobs": 3}, 16, 5),  # 16 // 3
        ({"_target_": JOBLIB, "n_jobs": 3}, 2, 1),  # more workers than cores: still one thread each
        ({"_target_": JOBLIB, "n_jobs": -1}, 16, 1),  # joblib's -1: one worker per core
        ({"_target_": JOBLIB, "n_jobs": -2}, 16, 1),  # -2: 15 workers
        ({"_target_": JOBLIB, "n_jobs": -9}, 16, 2),  # -9: 8 workers
        ({"_target_": SUBMITIT_LOCAL, "cpus_per_task": 4}, 16, 4),
        ({"_target_": SUBMITIT_LOCAL, "cpus_per_task": 32}, 16, 16),
        ({"_target_": SUBMITIT_LOCAL, "cpus_per_task": None}, 8, 8),
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 8, None),
        (None, 8, None),
    ],
)
def test_thread_share(launcher, cores, expected):
    assert launch.thread_share(launcher, cores) == expected


def test_configure_threads_sets_torch_and_the_openmp_variables(monkeypatch):
    for var in launch.THREAD_ENV_VARS:
        monkeypatch.setenv(var, "99")
    before = torch.get_num_threads()
    try:
        share = launch.configure_threads({"_target_": JOBLIB, "n_jobs": 2})
        assert share == max(1, len(os.sched_getaffinity(0)) // 2)
        assert torch.get_num_threads() == share
        assert all(os.environ[var] == str(share) for var in launch.THREAD_ENV_VARS)
        assert launch.configure_threads({"_target_": "basic"}) is None  # nothing changed
        assert torch.get_num_threads() == share
    finally:
        torch.set_num_threads(before)


# -- one GPU per joblib worker ----------------------------------------------------------------
def test_each_worker_claims_its_own_gpu_and_extra_workers_are_refused(monkeypatch, tmp_path):
    held = []
    for expected in ("3", "5"):
        # each claim as a new worker process would make it: no GPU held, both GPUs listed
        monkeypatch.setattr(launch, "_held_gpu", None)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
        assert launch.claim_gpu(tmp_path) == expected
        assert os.environ["CUDA_VISIBLE_DEVICES"] == expected
        held.append(launch._held_gpu)  # keeps the lock file open, as a live worker does
        assert launch.claim_gpu(tmp_path) == expected  # the same worker keeps its GPU for its next job
    monkeypatch.setattr(launch, "_held_gpu", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with pytest.raises(UserError, match=r"hydra.launcher.n_jobs: more parallel jobs than GPUs \(2 visible"):
        launch.claim_gpu(tmp_path)
    held[0][1].close()  # the first worker exits: its GPU is free again
    assert launch.claim_gpu(tmp_path) == "3"
    launch._held_gpu[1].close()
    held[1][1].close()


def test_no_visible_gpu_claims_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(launch, "_held_gpu", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert launch.visible_gpus() == [] and launch.claim_gpu(tmp_path) is None


# -- requeue detection ---------------------------------------------------------------------------
def test_a_submitit_job_running_again_in_its_run_dir_is_a_requeue(monkeypatch, tmp_path):
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")
    assert launch.requeued(tmp_path) is False  # first start of the job
    assert launch.requeued(tmp_path) is True  # the same job started again (requeued)
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4343")
    assert launch.requeued(tmp_path) is False  # a new submission: resume only with resume=true
    monkeypatch.delenv("SUBMITIT_EXECUTOR")
    assert launch.requeued(tmp_path / "other") is False and not (tmp_path / "other").exists()


@pytest.mark.parametrize("count,expected", [("1", True), ("3", True), ("0", False), ("", False)])
def test_slurm_restart_count_marks_a_requeue(monkeypatch, tmp_path, count, expected):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    monkeypatch.setenv("SLURM_RESTART_COUNT", count)
    assert launch.requeued(tmp_path) is expected


# -- SLURM settings -------------------------------------------------------------------------------
def test_slurm_settings_reach_the_sbatch_script(tmp_path, monkeypatch):
    from submitit import AutoExecutor
    from submitit.slurm.slurm import _make_sbatch_string

    # submitit builds a SLURM executor only where `srun` is on PATH; this one is never run:
    # nothing is submitted, the test reads the sbatch script that would be
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            return_hydra_config=True,
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.gpus_per_node=2",
                "hydra.launcher.cpus_per_task=6",
                "hydra.launcher.mem_gb=64",
                "hydra.launcher.timeout_min=90",
                "hydra.launcher.array_parallelism=3",
                "+hydra.launcher.additional_parameters.qos=high",
                f"hydra.sweep.dir={tmp_path}",
                "hydra.job.name=pivot",
            ],
        )
    GlobalHydra.instance().clear()
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    # the launcher plugin's mapping: its shared keys as they are, SLURM's own with a prefix
    executor = AutoExecutor(
        cluster="slurm",
        folder=params.pop("submitit_folder"),
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    params.pop("_target_")
    shared = {
        "timeout_min",
        "cpus_per_task",
        "gpus_per_node",
        "tasks_per_node",
        "mem_gb",
        "nodes",
        "name",
        "stderr_to_stdout",
    }
    executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
    script = _make_sbatch_string(
        command="python -m src.run", folder=tmp_path, map_count=60, **executor._executor.parameters
    ).splitlines()
    for flag in (
        "--partition=gpu",
        "--gpus-per-node=2",
        "--cpus-per-task=6",
        "--mem=64GB",
        "--time=90",
        "--array=0-59%3",
        "--requeue",
        "--qos=high",
        "--job-name=pivot",
        "--signal=USR2@120",
    ):
        assert f"#SBATCH {flag}" in script, flag
    assert executor._executor.max_num_timeout == 10


# -- end to end: the real CLI ----------------------------------------------------------------
SWEEP = ["debug=fast", "logger=wandb", "seed=1,2"]
JOB_DIRS = ["0_entropy-p0-b20-base0-s1", "1_entropy-p0-b20-base0-s2"]
# The records of a parallel sweep are compared with a sequential one exactly, and float sums
# depend on the thread count in their last bits: the sequential sweep runs one thread per job,
# and the launcher of a parallel sweep is held to two CPUs, so that each of its two joblib
# workers gets one thread on any machine (``thread_share`` divides the CPUs it may use).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def on_two_cpus() -> None:
    """preexec_fn: this process and its children may use two of the CPUs (fewer if there are fewer)."""
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])


def src_run(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "src.run", *args],
        cwd=REPO,
        env={**cli_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=on_two_cpus,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"src.run {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def sequential_sweep(tmp_path_factory) -> Path:
    def make(folder: Path) -> str:
        src_run("--multirun", *SWEEP, f"hydra.sweep.dir={folder / 'sweep'}", env=ONE_THREAD)
        return str(folder / "sweep")

    return Path(made_once(tmp_path_factory, "sequential-sweep", make))


@pytest.fixture(scope="module")
def sequential_report(sequential_sweep) -> dict[str, str]:
    return report_tables(sequential_sweep)


def report_tables(sweep: Path) -> dict[str, str]:
    subprocess.run(
        [sys.executable, "-m", "src.report", str(sweep)],
        cwd=REPO,
        env=cli_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (sweep / "report" / "report.html").exists()
    return {p.name: p.read_text() for p in sorted((sweep / "report").glob("*auc*.csv"))}


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        ["hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10"],
    ],
)
def test_a_parallel_sweep_equals_the_sequential_sweep(
    sequential_sweep, sequential_report, tmp_path, launcher
):
    sweep = tmp_path / "sweep"
    src_run("--multirun", *SWEEP, *launcher, f"hydra.sweep.dir={sweep}")
    assert sorted(p.name for p in sweep.iterdir() if (p / "rounds.jsonl").exists()) == JOB_DIRS
    groups = set()
    for job in JOB_DIRS:
        records = read_jsonl(sweep / job / "rounds.jsonl")
        assert len(records) == 2 and (sweep / job / "summary.json").exists()
        assert without_timings(records) == without_timings(
            read_jsonl(sequential_sweep / job / "rounds.jsonl")
        )
        assert "1 CPU thread(s)" in (sweep / job / "run.log").read_text()
        (run,) = (sweep / job / "wandb").glob("offline-run-*")  # one W&B run per job
        assert wait_until_finished(run)
        wb = read_offline_run(run)
        assert wb.name == job.split("_", 1)[1] and len([h for h in wb.history if "al/n_labelled" in h]) == 2
        groups.add(wb.group)
    assert groups == {"al/sweep"}  # one group per sweep
    tables = report_tables(sweep)
    assert tables and tables == sequential_report


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL the process group of ``proc`` (launcher, workers, jobs) as soon as ``ready()``."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def rounds_done(job_dir: Path) -> int:
    path = job_dir / "rounds.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_a_resubmitted_sweep_finishes_only_its_unfinished_jobs(sequential_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "--multirun",
        *SWEEP,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.run", *args],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=on_two_cpus,
    )
    # the node dies while job 1 is in its second round
    kill_when(proc, lambda: rounds_done(sweep / JOB_DIRS[1]) >= 1)
    assert rounds_done(sweep / JOB_DIRS[1]) == 1 and not (sweep / JOB_DIRS[1] / "summary.json").exists()
    shutil.rmtree(sweep / JOB_DIRS[0])  # and job 0's directory is lost

    src_run(*args, "resume=true")
    for job in JOB_DIRS:
        assert without_timings(read_jsonl(sweep / job / "rounds.jsonl")) == without_timings(
            read_jsonl(sequential_sweep / job / "rounds.jsonl")
        ), job
        assert (sweep / job / "summary.json").exists()
    # job 1 was continued after its first round, not started again
    assert "resuming" in (sweep / JOB_DIRS[1] / "run.log").read_text()

    # a finished sweep re-submitted again passes over its jobs: no record, no W&B run changes
    def files():
        return {
            job: (
                (sweep / job / "rounds.jsonl").read_bytes(),
                sorted((sweep / job / "wandb").glob("offline-*")),
            )
            for job in JOB_DIRS
        }

    before = files()
    # (the basic launcher: passing over a finished job is the job's decision, whichever launcher
    # started it, and the joblib workers' start-up would only add their imports)
    run_cli(
        *[a for a in args if not a.startswith("hydra/launcher") and not a.startswith("hydra.launcher")],
        "resume=true",
    )
    assert files() == before


@pytest.mark.slow
def test_a_requeued_job_continues_its_run_dir_by_itself(sequential_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    job_dir = sweep / JOB_DIRS[0]
    args = ["--multirun", "debug=fast", "logger=none", "seed=1", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.run", *args],
        cwd=REPO,
        env={**cli_env(), **ONE_THREAD},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    kill_when(proc, lambda: rounds_done(job_dir) >= 1)  # preempted in its second round
    assert rounds_done(job_dir) == 1
    # the same job started again without resume=true: refused outside a cluster...
    # (refused before any work: the tests' fork server saves a fresh interpreter's imports)
    refused = run_cli(*args, check=False)
    assert refused.returncode == 2 and "pass resume=true" in refused.stderr
    # ...continued when SLURM says it is a requeue
    src_run(*args, env={**ONE_THREAD, "SLURM_RESTART_COUNT": "1"})
    assert without_timings(read_jsonl(job_dir / "rounds.jsonl")) == without_timings(
        read_jsonl(sequential_sweep / JOB_DIRS[0] / "rounds.jsonl")
    )
