"""The LightningDataModule the active-learning loop trains on.

It owns the built dataset (all rows in one uint8 tensor) and serves four kinds of
loaders, all indexed by stable ids: train (the current labelled ids), val, test and
pool (any ids the selection wants scored). Batches are gathered with one tensor
index per batch (``__getitems__``), not one Python call per image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from src.data.recipes import BuiltDataset, build
from src.data.samplers import eval_sampler
from src.data.sources import Source


class RowsDataset(Dataset):
    """Rows ``ids`` of the built tensors; an item is (uint8 image, label, id)."""

    def __init__(self, data: BuiltDataset, ids: Sequence[int]):
        self.data = data
        self.ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        row = self.ids[i]
        return self.data.images[row], self.data.labels[row], row

    def __getitems__(self, indices: list[int]):
        rows = self.ids[torch.as_tensor(indices, dtype=torch.long)]
        return self.data.images[rows], self.data.labels[rows], rows


def _keep_batch(batch):
    # __getitems__ already returns stacked tensors
    return batch


# how the labelled set is ordered for training (``selection.shuffle``, thesis 4.1.1)
SHUFFLE_MODES = ("round", "epoch", "none")


def shuffle_mode(shuffle: str | bool) -> str:
    """``selection.shuffle`` as one of SHUFFLE_MODES; the old booleans: true = epoch, false = none."""
    if isinstance(shuffle, bool):
        return "epoch" if shuffle else "none"
    if shuffle not in SHUFFLE_MODES:
        raise ValueError(f"shuffle={shuffle!r}; allowed: {', '.join(SHUFFLE_MODES)}")
    return shuffle


class FixedOrderSampler(Sampler[int]):
    """``order`` (positions in the labelled set), the same every epoch, or ``num_samples`` per epoch
    read on cyclically, so that consecutive epochs take consecutive slices of the repeated order
    (a truncated epoch does not always leave out the same items)."""

    def __init__(self, order: torch.Tensor, num_samples: int | None = None):
        self.order = order.tolist()
        self.num_samples = len(self.order) if num_samples is None else int(num_samples)
        self.position = 0

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        n = len(self.order)
        if self.num_samples == n:
            yield from self.order
            return
        start = self.position
        # moved on before yielding: a consumer may stop at len(self) without exhausting the iterator
        self.position = (start + self.num_samples) % n
        for k in range(self.num_samples):
            yield self.order[(start + k) % n]


class RepeatingSampler(Sampler[int]):
    """Exactly ``num_samples`` indices per epoch, each pass over the data a new permutation.

    For a fixed number of steps per epoch (thesis 4.1.2) with shuffle=epoch: a small
    labelled set is repeated, a large one truncated.
    """

    def __init__(self, n: int, num_samples: int, generator: torch.Generator | None):
        self.n, self.num_samples, self.generator = n, num_samples, generator

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        emitted = 0
        while emitted < self.num_samples:
            take = torch.randperm(self.n, generator=self.generator)[: self.num_samples - emitted].tolist()
            emitted += len(take)
            yield from take


def train_sampler(
    n: int, batch_size: int, shuffle: str | bool, seed: int, steps_per_epoch: int | None
) -> Sampler[int]:
    """The labelled set's sampling for one fit (one round), shared by every task's datamodule.

    ``shuffle`` (thesis 4.1.1): ``round`` draws one permutation from the seeded generator
    when the round's fit starts and keeps it every epoch (the thesis: shuffled after each
    selection step); ``epoch`` draws a new one every epoch; ``none`` keeps the labelled
    order (base first, then each selection in score order). The first epoch of ``round``
    and of ``epoch`` is the same permutation. Fixed steps per epoch repeat or truncate the
    set (thesis 4.1.2).
    """
    mode = shuffle_mode(shuffle)
    generator = torch.Generator().manual_seed(seed)
    num_samples = steps_per_epoch * batch_size if steps_per_epoch else None
    if mode == "epoch":
        if num_samples:
            return RepeatingSampler(n, num_samples, generator)
        return torch.utils.data.RandomSampler(range(n), generator=generator)
    order = torch.randperm(n, generator=generator) if mode == "round" else torch.arange(n)
    return FixedOrderSampler(order, num_samples)


class LabelledSetDataModule(pl.LightningDataModule):
    """What the loop sets before each fit and the train loader it implies, for every task.

    Subclasses provide ``setup``, ``batch_size`` and ``_loader(ids, batch_size, sampler)``.
    """

    labelled_ids = np.zeros(0, dtype=np.int64)
    shuffle_train = "round"
    train_seed = 0
    steps_per_epoch: int | None = None

    def set_labelled(
        self, ids: Sequence[int], shuffle: str | bool, seed: int, steps_per_epoch: int | None = None
    ):
        """The next fit's labelled ids, their order (``train_sampler``'s ``shuffle``) and seed."""
        self.labelled_ids = np.asarray(ids, dtype=np.int64)
        self.shuffle_train = shuffle_mode(shuffle)
        self.train_seed = int(seed)
        self.steps_per_epoch = steps_per_epoch

    def train_dataloader(self) -> DataLoader:
        self.setup()
        if len(self.labelled_ids) == 0:
            raise RuntimeError("no labelled ids set: the loop must call set_labelled() before fit")
        sampler = train_sampler(
            len(self.labelled_ids), self.batch_size, self.shuffle_train, self.train_seed, self.steps_per_epoch
        )
        return self._loader(self.labelled_ids, self.batch_size, sampler)


class ActiveDataModule(LabelledSetDataModule):
    def __init__(
        self,
        name: str,
        sources: list[Source],
        sizes: dict,
        image_size: int = 28,
        channels: int = 1,
        split_seed: int = 0,
        corruption: dict | None = None,
        pool_repeats: int = 1,
        repeat_max_degrees: float = 10.0,
        batch_size: int = 32,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        pin_memory: bool = False,
        skip_corrupt: bool = False,
        part: str = "main",
    ):
        super().__init__()
        self.name = name
        self.sources = list(sources)
        # part="baseline": the sizes.baseline items kept back from pool/val/test (recipes.build)
        self.recipe = dict(
            sizes=dict(sizes),
            image_size=int(image_size),
            channels=int(channels),
            split_seed=int(split_seed),
            corruption=dict(corruption) if corruption else None,
            pool_repeats=int(pool_repeats),
            repeat_max_degrees=float(repeat_max_degrees),
            part=str(part),
        )
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        # one switch for every file-backed source: leave unreadable images out instead of failing
        self.skip_corrupt = bool(skip_corrupt)
        self.data: BuiltDataset | None = None

    # -- building ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            for source in self.sources:
                if hasattr(source, "skip_corrupt"):
                    source.skip_corrupt = self.skip_corrupt
            self.data = build(self.sources, **self.recipe)

    @property
    def num_classes(self) -> int:
        self.setup()
        return self.data.num_classes

    @property
    def class_names(self) -> list[str]:
        self.setup()
        return list(self.data.class_names)

    @property
    def channels(self) -> int:
        return self.recipe["channels"]

    @property
    def pool_ids(self) -> np.ndarray:
        self.setup()
        return self.data.pool_ids

    def labels_of(self, ids: Sequence[int]) -> np.ndarray:
        self.setup()
        return self.data.labels[torch.as_tensor(np.asarray(ids, dtype=np.int64))].numpy()

    def save_class_distribution(self, out_dir, title: str = ""):
        """class_distribution.png/.json of the pool, val and test splits (thesis figures 4.19-4.20)."""
        from src.data.plots import save_class_distribution

        self.setup()
        return save_class_distribution(self.data, out_dir, title=title)

    # -- loaders --------------------------------------------------------------------------
    def _loader(self, ids, batch_size: int, sampler=None) -> DataLoader:
        return DataLoader(
            RowsDataset(self.data, ids),
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=_keep_batch,
            persistent_workers=False,
        )

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.data.val_ids, self.eval_batch_size, eval_sampler(len(self.data.val_ids)))

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.data.test_ids, self.eval_batch_size, eval_sampler(len(self.data.test_ids)))

    def pool_dataloader(self, ids: Sequence[int]) -> DataLoader:
        self.setup()
        return self._loader(ids, self.eval_batch_size)
