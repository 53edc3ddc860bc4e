"""trainer=ddp: pool scoring split across 2 gloo processes, and the real CLI with 2 ranks on CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from src.loop.distributed import shard
from tests.conftest import REPO, cli_env, read_jsonl, run_cli, without_timings

FAST = ["debug=fast", "progress=false", "logger=none"]
# logger=csv: the tracker and per-epoch logs are files a second rank must not write; 59 val and test
# items do not split evenly over 2 ranks (a padded sampler would count one of them twice)
CLI = [*FAST, "logger=csv", "dataset.sizes.val=59", "dataset.sizes.test=59"]


def test_shards_cover_every_id_once_without_padding():
    ids = np.arange(100, 111)  # 11 ids on 3 ranks: 4 + 4 + 3, no id repeated to even them out
    shares = [shard(ids, rank, 3) for rank in range(3)]
    assert [len(s) for s in shares] == [4, 4, 3]
    assert np.array_equal(np.concatenate(shares), ids)
    assert [len(shard(ids[:1], rank, 3)) for rank in range(3)] == [1, 0, 0]


def _loop_with_fixed_weights(run_dir):
    """The debug=fast loop, its model moved away from the initial weights by a seeded perturbation
    (so that the scores differ from item to item), built the same in every process."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import src.config.resolvers  # noqa: F401
    from src.experiment.build import build_loop

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=FAST)
    loop = build_loop(cfg, run_dir)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for param in loop.model.parameters():
            param.add_(0.5 * torch.randn(param.shape, generator=gen))
    return loop


def _score_on_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        loop = _loop_with_fixed_weights(os.path.join(out_dir, f"run{rank}"))
        scored_here = []
        adapter = loop.score_batch

        def counting(model, batch, **kw):  # the ids this rank scored itself
            scored_here.extend(batch[-1].tolist())
            return adapter(model, batch, **kw)

        loop.score_batch = counting
        candidates = loop.pool_ids[:-1]  # an odd count: the shares differ in size
        scores, predictions = loop.score_candidates(candidates, True, 1, torch.device("cpu"))
        np.savez(
            os.path.join(out_dir, f"rank{rank}.npz"),
            scores=scores,
            predictions=predictions,
            scored_here=np.asarray(scored_here, dtype=np.int64),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_score_each_pool_id_once_and_match_one_process(tmp_path):
    from lightning_fabric.plugins.environments.lightning import find_free_network_port

    from src.loop.pool import score_pool

    mp.spawn(_score_on_rank, args=(2, find_free_network_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]

    loop = _loop_with_fixed_weights(tmp_path / "single")
    candidates = loop.pool_ids[:-1]
    ids, expected, expected_classes = score_pool(
        loop.model,
        loop.dm.pool_dataloader(candidates),
        loop.score_batch,
        want_predictions=True,
        progress=False,
    )
    assert np.array_equal(ids, candidates)
    assert np.unique(expected).size > len(candidates) // 2  # the scores tell the items apart
    scored = [r["scored_here"] for r in ranks]
    assert sorted(len(s) for s in scored) == [59, 60]
    assert np.array_equal(np.sort(np.concatenate(scored)), np.sort(candidates))  # each id once, no padding
    for r in ranks:  # every rank holds every score, in the candidates' order
        np.testing.assert_allclose(r["scores"], expected, rtol=1e-6, atol=1e-9)
        assert np.array_equal(r["predictions"], expected_classes)


def _files(run_dir) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*")}


@pytest.fixture(scope="module")
def ddp_and_single_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    run_cli(*CLI, "trainer=ddp", f"hydra.run.dir={root / 'ddp'}", timeout=300)
    run_cli(*CLI, f"hydra.run.dir={root / 'single'}", timeout=300)
    return root


@pytest.mark.slow
def test_a_ddp_run_commits_every_round_once_into_the_files_of_a_single_process_run(ddp_and_single_runs):
    ddp, single = ddp_and_single_runs / "ddp", ddp_and_single_runs / "single"
    assert _files(ddp) == _files(single)
    records = read_jsonl(ddp / "rounds.jsonl")
    assert [r["round"] for r in records] == [0, 1]
    assert json.loads((ddp / "state.json").read_text())["completed_rounds"] == 2
    chosen = [i for r in records for i in r["selected_ids"]]
    assert len(chosen) == len(set(chosen)) == 40
    for record in records:  # accuracies over 59 items, each counted once: k/59 (a repeated item gives k/60)
        for key in ("val/acc_top1", "test/acc_top1"):
            assert record[key] * 59 == pytest.approx(round(record[key] * 59), abs=1e-4), (key, record[key])
    log = (ddp / "run.log").read_text()
    assert (
        log.count("round 0 (1 of 2) |") == 1 and log.count("round 1 (2 of 2) |") == 1
    )  # one writer of the log


@pytest.mark.slow
def test_a_killed_ddp_run_resumes_to_the_uninterrupted_records(ddp_and_single_runs, tmp_path):
    killed = tmp_path / "killed"
    env = {**cli_env(), "AL_SELECT_FAULT": "after_state"}  # rank 0 SIGKILLed once round 0's state is written
    proc = subprocess.run(
        [sys.executable, "-m", "src.run", *CLI, "trainer=ddp", f"hydra.run.dir={killed}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert not (killed / "summary.json").exists()
    run_cli(*CLI, "trainer=ddp", "resume=true", f"hydra.run.dir={killed}", timeout=300)
    expected = read_jsonl(ddp_and_single_runs / "ddp" / "rounds.jsonl")
    assert without_timings(read_jsonl(killed / "rounds.jsonl")) == without_timings(expected)


@pytest.mark.parametrize(
    "trainer, expected",
    [
        ({"accelerator": "cpu", "devices": 1}, 1),
        ({"accelerator": "cpu", "devices": 3, "strategy": "ddp"}, 3),
        ({"accelerator": "cpu", "devices": 2, "strategy": "auto"}, 1),  # not DDP: Lightning's own business
    ],
)
def test_processes_wanted_by_the_trainer_config(trainer, expected):
    from omegaconf import OmegaConf

    from src.loop.distributed import wanted_processes

    assert wanted_processes(OmegaConf.create(trainer)) == expected


@pytest.mark.parametrize(
    "trainer, needle",
    [
        ({"strategy": "ddp", "devices": 0}, "trainer.devices=0"),
        ({"strategy": "ddp", "devices": "auto", "accelerator": "cpu"}, "trainer.devices='auto'"),
        ({"strategy": "ddp_spawn", "devices": 2}, "trainer.strategy=ddp_spawn"),
        ({"strategy": "ddp", "devices": 2, "num_nodes": 2}, "trainer.num_nodes=2"),
    ],
)
def test_ddp_settings_the_rounds_cannot_run_are_one_line_errors(trainer, needle):
    from omegaconf import OmegaConf

    from src.errors import UserError
    from src.loop.distributed import wanted_processes

    with pytest.raises(UserError, match=re.escape(needle)):
        wanted_processes(OmegaConf.create(trainer))
