"""Building objects from config nodes, with user mistakes kept as one-line errors."""

from __future__ import annotations

import hydra
from hydra.errors import InstantiationException

from src.errors import UserError


def build(node, **kwargs):
    """``hydra.utils.instantiate(node, **kwargs)``; a UserError raised by the constructor reaches the
    caller as itself, not wrapped in Hydra's multi-line InstantiationException."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise
