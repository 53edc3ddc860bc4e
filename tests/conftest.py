"""Shared fixtures: Hydra's compose API over the real conf/, and the real CLI in processes of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import src.config.resolvers  # noqa: F401  (registers the config resolvers)
from src.records import RoundRecord

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


def _share_the_cores_between_workers() -> None:
    """Under ``pytest -n N`` every worker (and each process it starts) gets its 1/N of the cores.

    Left alone, each of the N workers runs torch with one thread per core, so the 2-core
    machine runs 4 busy threads whose OpenMP spin-waits take turns with the other
    worker's work. A variable the caller set is kept.
    """
    import torch

    from src.launch import THREAD_ENV_VARS, available_cores

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return
    share = str(max(1, available_cores() // workers))
    for var in THREAD_ENV_VARS:
        os.environ.setdefault(var, share)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_share_the_cores_between_workers()


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides) -> the composed job config, as `python -m src.run` would see it."""

    def _compose(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    yield _compose
    GlobalHydra.instance().clear()


def compose_select(*overrides: str):
    """``conf/select.yaml`` composed with ``overrides``, as ``python -m src.select`` would see it."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="select", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def tiny_scenes():
    """12 embedded street scenes at 128x72 (pool 8, val 2, test 2), set up: a detector's smallest data."""
    from src.data.detection.datamodule import DetectionDataModule, SceneSource

    dm = DetectionDataModule(
        "scenes",
        SceneSource(n=12, seed=5),
        {"pool": 8, "val": 2, "test": 2},
        image_size=(128, 72),
        eval_batch_size=4,
    )
    dm.setup()
    return dm


def cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    # offline whatever credentials the machine has: tests never talk to a server
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    return env


class CliServer:
    """This test worker's ``tests/cli_server.py``: runs ``python -m <module> ARGS`` in a process of its
    own (forked after the imports), so that a command costs its work, not 4 s of imports each time."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "cli_server.py")],
            cwd=REPO,
            env=cli_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def run(
        self, module: str, args, env: dict, timeout: float, cwd: Path = REPO
    ) -> subprocess.CompletedProcess:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        request = {"module": module, "argv": list(args), "env": env, "cwd": str(cwd), "timeout": timeout}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        command = [sys.executable, "-m", module, *args]
        if answer["timed_out"]:
            raise subprocess.TimeoutExpired(command, timeout, answer["stdout"], answer["stderr"])
        return subprocess.CompletedProcess(command, answer["returncode"], answer["stdout"], answer["stderr"])


_SERVER = CliServer()


def run_module(
    module: str, *args: str, env: dict | None = None, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """``python -m module ARGS`` from the repo root (or ``cwd``, with the repo on the module path) with
    the test environment (``cli_env``) plus ``env``."""
    full_env = {**cli_env(), **(env or {})}
    if os.environ.get("AL_TESTS_FRESH_CLI") == "1":
        if cwd is not None:
            full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [full_env.get("PYTHONPATH")])])
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=cwd or REPO,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    return _SERVER.run(module, args, full_env, timeout, cwd=cwd or REPO)


def run_cli(
    *args: str, timeout: float = 300, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python -m src.run ARGS` from the repo root, as a user runs it (see ``run_module``)."""
    proc = run_module("src.run", *args, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"src.run {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


# A detection run in seconds: the embedded scenes at their smallest, one epoch a round, and
# baseline=none (the task's default pretrains a synthetic baseline first, which takes minutes).
DETECTION_TINY = [
    "task=detection",
    "baseline=none",
    "logger=none",
    "progress=false",
    "dataset.source.n=24",
    "dataset.sizes.pool=16",
    "dataset.sizes.val=4",
    "dataset.sizes.test=4",
    "dataset.image_size=[96,54]",
    "selection.budget=4",
    "selection.rounds=2",
    "trainer.max_epochs=1",
]


def made_once(tmp_path_factory, name: str, make):
    """``make(folder)`` run once per test session, also when pytest-xdist spreads the tests that
    need it over several workers: the first worker makes it under a file lock, the others read
    its JSON result (and use the files it wrote under ``folder``)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the session's shared folder
    folder, result = root / f"shared-{name}", root / f"shared-{name}.json"
    with FileLock(str(result) + ".lock"):
        if not result.exists():
            folder.mkdir()
            result.write_text(json.dumps(make(folder)))
        return json.loads(result.read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


TIMING_KEYS = set(RoundRecord.TIMINGS)


def without_timings(records: list) -> list[dict]:
    """Records (RoundRecord or their JSON objects) without the wall-clock fields, for equality checks."""
    return [
        {k: v for k, v in (r.to_json() if isinstance(r, RoundRecord) else r).items() if k not in TIMING_KEYS}
        for r in records
    ]
