"""Optimiser and scheduler wiring shared by the task modules."""

from __future__ import annotations


def configure(module, optimizer_factory, scheduler_factory=None, monitor: str = "val/loss"):
    """What ``configure_optimizers`` returns for Hydra-partial optimiser/scheduler factories.

    The scheduler (e.g. ReduceLROnPlateau) watches the same validation loss as early stopping.
    """
    optimizer = optimizer_factory(module.parameters())
    if scheduler_factory is None:
        return optimizer
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler_factory(optimizer), "monitor": monitor},
    }
