"""``python -m src.run [overrides]``: run one active-learning experiment (or a ``--multirun`` sweep).

A thin CLI: the renamed-key and group-option checks run before Hydra, Hydra composes
``conf/config.yaml`` with the overrides, and ``src.experiment.run_experiment`` does
the rest under the run directory (``hydra.run.dir`` / ``hydra.sweep.dir``). A user
mistake prints one line ``error: ...`` and exits 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import os
import sys

# Quieter start-up: set before the libraries that read them are imported.
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("PYTORCH_LIGHTNING_DISABLE_TIPS", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import src.config.resolvers  # noqa: E402,F401  (registers the config resolvers)
from src.config.overrides import prepare_argv  # noqa: E402
from src.errors import UserError  # noqa: E402
from src.experiment import run_experiment  # noqa: E402
from src.launch import run_entry_point  # noqa: E402
from src.tasks import get_task  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        summary = run_experiment(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    return summary.get(f"auc/{get_task(cfg.task_type).headline_metric}")


def cli() -> None:
    prepare_argv(sys.argv)
    # a refused command leaves no new folder behind, and a refused --multirun its sweep's multirun.yaml as it was
    run_entry_point(main)


if __name__ == "__main__":
    cli()
