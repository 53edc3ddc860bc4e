"""``python -m src.pretrain task=detection baseline=real``: make a named baseline's weights.

A thin CLI over ``src.models.named_baselines.pretrain`` (what a named baseline is,
where its file goes and when it is made again is documented there). A user mistake
prints one line and exits 2.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import src.config.resolvers  # noqa: F401  (registers the config resolvers)
from src.config.overrides import prepare_argv
from src.errors import UserError
from src.loop.trainers import quiet_libraries
from src.models.named_baselines import pretrain


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    try:
        pretrain(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def cli() -> None:
    prepare_argv(sys.argv)
    main()


if __name__ == "__main__":
    cli()
