"""``python -m src.pretrain task=detection baseline=real``: make a named baseline's weights.

A thin CLI over ``src.pretraining.pretrain`` (what a named baseline is, where its file
goes and when it is made again: ``src.models.named_baselines``). A user mistake
prints one line and exits 2.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import src.config.resolvers  # noqa: F401  (registers the config resolvers)
from src.config.overrides import prepare_argv
from src.errors import UserError
from src.experiment.job_log import HeldJobLog
from src.launch import run_entry_point
from src.loop.trainers import quiet_libraries
from src.pretraining import pretrain
from src.validate import check_pretraining


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    job_log = HeldJobLog()  # the log file opens once nothing can refuse the command
    try:
        check_pretraining(cfg)
        pretrain(cfg, accepted=job_log.release)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        job_log.drop()  # a no-op once released


def cli() -> None:
    prepare_argv(sys.argv)
    run_entry_point(main)  # a refused command leaves no new folder behind


if __name__ == "__main__":
    cli()
