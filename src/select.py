"""``python -m src.select [overrides]``: rank unlabelled images for labelling, or prune a labelled set.

A thin CLI over ``src.labelling.select`` (``conf/select.yaml``). A user mistake prints
one line ``error: ...`` and exits 2.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import src.config.resolvers  # noqa: F401  (the resolvers a run's config uses)
from src.config.overrides import check_override_syntax
from src.errors import UserError
from src.labelling.select import run_select


@hydra.main(version_base="1.3", config_path="../conf", config_name="select")
def main(cfg: DictConfig) -> None:
    try:
        out = run_select(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {out}")


def cli() -> None:
    message = check_override_syntax(sys.argv[1:])  # an unparsable override: one line, not Hydra's three
    if message:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
