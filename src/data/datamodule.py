"""The LightningDataModule the active-learning loop trains on.

It owns the built dataset (all rows in one uint8 tensor) and serves four kinds of
loaders, all indexed by stable ids: train (the current labelled ids), val, test and
pool (any ids the selection wants scored). Batches are gathered with one tensor
index per batch (``__getitems__``), not one Python call per image.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from src.data.recipes import BuiltDataset, build
from src.data.sources import Source
from src.loop.distributed import eval_sampler


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


class RepeatingSampler(Sampler[int]):
    """Exactly ``num_samples`` indices per epoch, cycling through the data.

    For a fixed number of steps per epoch (thesis 4.1.2): a small labelled set is
    repeated, a large one truncated. Shuffled passes draw from ``generator``.
    """

    def __init__(self, n: int, num_samples: int, shuffle: bool, generator: torch.Generator | None):
        self.n, self.num_samples, self.shuffle, self.generator = n, num_samples, shuffle, generator

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        emitted = 0
        while emitted < self.num_samples:
            order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
            take = order[: self.num_samples - emitted].tolist()
            emitted += len(take)
            yield from take


def train_sampler(n: int, batch_size: int, shuffle: bool, seed: int, steps_per_epoch: int | None) -> Sampler[int]:
    """The labelled set's sampling for one fit, shared by every task's datamodule.

    Fixed steps per epoch repeat or truncate the set (thesis 4.1.2); otherwise one pass,
    reshuffled every epoch from a seeded generator, or in labelled order when shuffle
    is off (base first, then each selection in score order: thesis 4.1.1).
    """
    generator = torch.Generator().manual_seed(seed)
    if steps_per_epoch:
        return RepeatingSampler(n, steps_per_epoch * batch_size, shuffle, generator)
    if shuffle:
        return torch.utils.data.RandomSampler(range(n), generator=generator)
    return torch.utils.data.SequentialSampler(range(n))


class LabelledSetDataModule(pl.LightningDataModule):
    """What the loop sets before each fit and the train loader it implies, for every task.

    Subclasses provide ``setup``, ``batch_size`` and ``_loader(ids, batch_size, sampler)``.
    """

    labelled_ids = np.zeros(0, dtype=np.int64)
    shuffle_train = True
    train_seed = 0
    steps_per_epoch: int | None = None

    def set_labelled(self, ids: Sequence[int], shuffle: bool, seed: int, steps_per_epoch: int | None = None):
        self.labelled_ids = np.asarray(ids, dtype=np.int64)
        self.shuffle_train = bool(shuffle)
        self.train_seed = int(seed)
        self.steps_per_epoch = steps_per_epoch

    def train_dataloader(self) -> DataLoader:
        self.setup()
        if len(self.labelled_ids) == 0:
            raise RuntimeError("no labelled ids set: the loop must call set_labelled() before fit")
        sampler = train_sampler(len(self.labelled_ids), self.batch_size, self.shuffle_train, self.train_seed,
                                self.steps_per_epoch)
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
    ):
        super().__init__()
        self.name = name
        self.sources = list(sources)
        self.recipe = dict(sizes=dict(sizes), image_size=int(image_size), channels=int(channels),
                           split_seed=int(split_seed), corruption=dict(corruption) if corruption else None,
                           pool_repeats=int(pool_repeats), repeat_max_degrees=float(repeat_max_degrees))
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
        return DataLoader(RowsDataset(self.data, ids), batch_size=batch_size, sampler=sampler,
                          shuffle=False, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          collate_fn=_keep_batch, persistent_workers=False)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.data.val_ids, self.eval_batch_size, eval_sampler(len(self.data.val_ids)))

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.data.test_ids, self.eval_batch_size, eval_sampler(len(self.data.test_ids)))

    def pool_dataloader(self, ids: Sequence[int]) -> DataLoader:
        self.setup()
        return self._loader(ids, self.eval_batch_size)
