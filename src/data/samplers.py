"""Samplers of the val and test loaders: this process's share of a split when the rounds run
on several processes (``trainer=ddp``), no item counted twice."""

from __future__ import annotations

import torch.distributed as dist


def several_processes() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def eval_sampler(n_items: int):
    """Under trainer=ddp, this rank's share of a val or test split with no item repeated; else None.

    Lightning's default DistributedSampler pads the shares to equal length with repeated items,
    which would count them twice in val/test metrics; its unrepeated sampler (the one it uses for
    predict) lets the shares differ by one item instead, safe because the metrics are torchmetrics
    states summed over the ranks and DDP syncs buffers only on the first evaluation batch."""
    if not several_processes():
        return None
    from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(range(n_items), shuffle=False)
