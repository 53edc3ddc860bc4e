"""Active-learning rounds on several processes (``trainer=ddp``): Lightning's DDP for fit and test,
the pool split across the ranks for scoring, one selection shared by all, one writer.

How the ranks start. The run's first process (rank 0) composes the config, takes the run
directory's lock, accepts the run and starts its tracker exactly as a single-process run; only
then does ``start_ranks`` start ranks 1..N-1 as ``python -m src.run <the job's overrides>
hydra.run.dir=<this run directory>``, with ``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_ADDR``/
``MASTER_PORT`` set, and open the process group. Lightning's own launcher is not used, because
it starts the other ranks inside the first ``fit`` (a run without a base set scores the pool
before any fit) and re-runs ``sys.argv``, which for a ``--multirun`` job is the whole sweep. With
``LOCAL_RANK`` set Lightning takes the processes as started by the user (its documented
contract for torchrun and the like) and every round's fresh Trainer joins the open group.

A follower rank (``is_follower()``) builds the same loop, writes nothing (``FollowerStore``, no
tracker, no log file) and runs the rounds in step with rank 0: same fit (DDP keeps the weights
identical), same test, its share of the pool scored. Rank 0 alone commits rounds.jsonl,
state.json, the tracker and the summary.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.data.samplers import several_processes
from src.errors import UserError
from src.records import RoundRecord, RunStore

log = logging.getLogger(__name__)

STRATEGIES = ("ddp", "ddp_find_unused_parameters_true")  # started by start_ranks; spawn/fork variants are not
RANK_ENV = "LOCAL_RANK"


def wanted_processes(trainer_cfg: DictConfig) -> int:
    """How many processes the ``trainer`` config asks for: 1 unless its strategy is DDP.

    A UserError for DDP settings this module cannot run (another DDP flavour, several nodes,
    a device count that is not a positive integer or -1 on GPUs)."""
    strategy = trainer_cfg.get("strategy", "auto")
    if not (isinstance(strategy, str) and strategy.startswith("ddp")):
        return 1
    if strategy not in STRATEGIES:
        raise UserError(f"trainer.strategy={strategy}: the rounds run with one of {', '.join(STRATEGIES)}")
    if int(trainer_cfg.get("num_nodes", 1)) != 1:
        raise UserError(
            f"trainer.num_nodes={trainer_cfg.num_nodes}: trainer=ddp runs on one machine; use num_nodes: 1"
        )
    devices = trainer_cfg.get("devices", 1)
    on_gpu = trainer_cfg.get("accelerator") in ("gpu", "cuda")
    if on_gpu and devices in (-1, "auto"):
        return max(1, torch.cuda.device_count())
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise UserError(
            f"trainer.devices={devices!r}: trainer=ddp takes a number of processes >= 1"
            + (" or -1 (all GPUs)" if on_gpu else "")
        )
    return devices


def is_follower() -> bool:
    """This process is rank 1..N-1 of a run started by ``start_ranks``."""
    return int(os.environ.get(RANK_ENV, "0")) > 0 and os.environ.get("AL_DDP_RUN") == "1"


def active() -> bool:
    return several_processes()


class Ranks:
    """Ranks 1..N-1 of this run, started from rank 0; ``close()`` waits for them and puts this
    process's environment back (the next job of a sweep in this process may run on one)."""

    def __init__(self, procs: list[subprocess.Popen], saved_env: dict[str, str | None]):
        self.procs, self.saved_env = procs, saved_env
        self.closing = False
        threading.Thread(target=self._watch, daemon=True, name="ddp-rank-watch").start()

    def _watch(self) -> None:
        """A rank that fails ends the run at once (this process by SIGKILL: left as a killed run,
        which resume=true continues) instead of leaving rank 0 waiting in a collective."""
        while not self.closing:
            if any(proc.poll() not in (None, 0) for proc in self.procs) and not self.closing:
                for proc in self.procs:
                    proc.kill()
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.5)

    def close(self, failed: bool) -> None:
        self.closing = True
        if failed:  # a follower blocked in a collective would wait for rank 0 forever
            for proc in self.procs:
                proc.kill()
        codes = [proc.wait() for proc in self.procs]
        if dist.is_initialized():
            dist.destroy_process_group()
        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if not failed and any(codes):
            raise RuntimeError(f"trainer=ddp: ranks 1..{len(codes)} exited with {codes}")


def start_ranks(cfg: DictConfig, run_dir: Path) -> Ranks | None:
    """Rank 0: start the other ranks of an accepted DDP run and open the process group.

    None (nothing started) when the trainer asks for one process."""
    n = wanted_processes(cfg.trainer)
    if n == 1:
        return None
    from lightning_fabric.plugins.environments.lightning import find_free_network_port

    env = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(find_free_network_port()),
        "WORLD_SIZE": str(n),
        "NODE_RANK": "0",
        RANK_ENV: "0",
        "AL_DDP_RUN": "1",
    }
    saved_env = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # Lightning now takes this process as rank 0 of a group started by the user
    hc = HydraConfig.get()
    command = [sys.executable, "-m", "src.run", *hc.overrides.task, f"hydra.run.dir={run_dir.resolve()}"]
    procs = [
        subprocess.Popen(command, env={**os.environ, RANK_ENV: str(rank)}, cwd=hc.runtime.cwd)
        for rank in range(1, n)
    ]
    log.info("trainer=ddp: %d processes (ranks 1..%d: pids %s)", n, n - 1, [p.pid for p in procs])
    ranks = Ranks(procs, saved_env)
    try:
        open_group(cfg)
    except BaseException:
        ranks.close(failed=True)
        raise
    return ranks


def open_group(cfg: DictConfig) -> None:
    """Join the process group: gloo on CPU, nccl on GPUs (Lightning's choice for DDP)."""
    on_gpu = cfg.trainer.get("accelerator") in ("gpu", "cuda")
    if on_gpu:
        torch.cuda.set_device(int(os.environ[RANK_ENV]))
    dist.init_process_group(
        "nccl" if on_gpu else "gloo",
        init_method="env://",
        rank=int(os.environ[RANK_ENV]),
        world_size=int(os.environ["WORLD_SIZE"]),
    )


def follow_parent() -> None:
    """A follower exits when rank 0 is gone (killed), instead of waiting in a collective."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="ddp-parent-watch").start()


class FollowerStore(RunStore):
    """A follower rank's view of the run directory: reads what rank 0 wrote, writes nothing."""

    def commit(self, record: RoundRecord, state: dict) -> None:
        pass

    def _append(self, record: RoundRecord) -> None:
        pass

    def _rewrite(self, records: list[RoundRecord]) -> None:
        pass


# -- pool scoring and selection ---------------------------------------------------------------
def shard(ids: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s contiguous share of ``ids``: every id in exactly one share, no padding."""
    return np.array_split(ids, world)[rank]


def _gather(values: np.ndarray, device: torch.device) -> np.ndarray:
    """All ranks' 1-d arrays of different lengths, concatenated in rank order, on every rank."""
    world = dist.get_world_size()
    local = torch.as_tensor(values).to(device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(local)], dtype=torch.int64, device=device))
    longest = int(max(s.item() for s in sizes))
    # all_gather needs equal shapes: pad to the longest share here and cut the padding off below
    padded = torch.zeros(longest, dtype=local.dtype, device=device)
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)]).cpu().numpy()


def score_sharded(candidates: np.ndarray, score: Callable[[np.ndarray], tuple], device: torch.device):
    """(ids, scores, predictions or None) of all ``candidates``, each scored by one rank only.

    ``score(ids)`` scores this rank's share (``score_pool`` over a loader of those ids)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    comm = device if dist.get_backend() == "nccl" else torch.device("cpu")
    ids, scores, predictions = score(shard(candidates, rank, world))
    gathered_ids = _gather(ids, comm)
    gathered_scores = _gather(scores, comm)
    gathered_predictions = None if predictions is None else _gather(predictions, comm)
    return gathered_ids, gathered_scores, gathered_predictions


def made_once(make: Callable[[], object]):
    """``make()`` run on rank 0 alone and its result shared with every rank (``make()`` when alone)."""
    if not active():
        return make()
    box = [make() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_follower(cfg: DictConfig, build_loop: Callable) -> dict:
    """Rank 1..N-1: the same rounds as rank 0, in step with it, writing nothing into the run directory.

    ``build_loop(cfg, run_dir)`` is ``src.experiment.build.build_loop``. Its console lines are left to
    rank 0 (warnings still show) and Hydra's job log file is detached (rank 0 writes run.log)."""
    from src.loop.trainers import quiet_libraries

    follow_parent()
    quiet_libraries()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    open_group(cfg)
    try:
        loop = build_loop(cfg, run_dir)
        loop.store = FollowerStore(run_dir)
        loop.run()
    finally:
        dist.destroy_process_group()
    return {}
