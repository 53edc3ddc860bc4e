"""ImageNet-V2/-R/-A and folder sources: layouts, labels, recipes, the decode cache, bad input.

Every test writes its own tiny trees of small JPEGs in the publishers' layouts. Each
image encodes what it is: the red channel is a constant per class (``CLASS_RED``),
green a horizontal gradient and blue a vertical one shifted per item, so a row of a
built dataset can be traced back to its class folder without trusting the code under
test, and rotations change pixels.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.data.cache import cached_images, decode_image
from src.data.datamodule import ActiveDataModule
from src.data.folder import ImageFolderSource
from src.data.imagenet import ImageNetA, ImageNetR, ImageNetV2
from src.data.plots import save_class_distribution
from src.data.recipes import build
from src.errors import UserError

# ImageNet-1k classes used below, with their index as published (tench, goldfish, ...).
WNID_INDEX = {"n01440764": 0, "n01443537": 1, "n01484850": 2, "n01491361": 3, "n15075141": 999}


def class_red(label: int) -> int:
    return 20 + (label * 37) % 220


def write_jpeg(path: Path, red: int, item: int, size=(40, 30)) -> None:
    w, h = size
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = (np.linspace(0, 200, h)[:, None].repeat(w, 1) + 7 * item) % 256
    rgb = np.stack([np.full((h, w), red), x, y], -1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)


def make_tree(root: Path, folders: dict[str, int], per_class: int, suffix=".jpg") -> Path:
    """root/<folder>/<k>.jpg for each folder name, red channel = class_red(label)."""
    for folder, label in folders.items():
        for k in range(per_class):
            write_jpeg(root / folder / f"{k:03d}{suffix}", class_red(label), k)
    return root


def v2_tree(root, per_class=8):
    return make_tree(
        root / "imagenetv2-matched-frequency-format-val", {"0": 0, "1": 1, "999": 999}, per_class, ".jpeg"
    )


def r_tree(root, per_class=8):
    return make_tree(
        root / "imagenet-r", {w: i for w, i in WNID_INDEX.items() if i in (1, 2, 3, 999)}, per_class
    )


def a_tree(root, per_class=8):
    tree = make_tree(
        root / "imagenet-a", {w: i for w, i in WNID_INDEX.items() if i in (0, 3, 999)}, per_class
    )
    (tree / "README.txt").write_text("ImageNet-A")  # ships beside the class folders; must be ignored
    return tree


def red_of(images) -> np.ndarray:
    return np.asarray(images)[:, 0].reshape(len(images), -1).mean(1)


def sources(tmp_path, size=32, **kw):
    cache = tmp_path / "cache"
    return [
        cls(tree, image_size=size, cache_dir=cache, **kw)
        for cls, tree in (
            (ImageNetV2, v2_tree(tmp_path)),
            (ImageNetR, r_tree(tmp_path)),
            (ImageNetA, a_tree(tmp_path)),
        )
    ]


# -- labels ------------------------------------------------------------------------------------
def test_labels_land_on_the_imagenet_index_for_all_three_sources(tmp_path):
    import torchvision

    published_names = torchvision.models.VGG16_Weights.IMAGENET1K_V1.meta["categories"]
    expected_labels = {"imagenet_v2": {0, 1, 999}, "imagenet_r": {1, 2, 3, 999}, "imagenet_a": {0, 3, 999}}
    for source in sources(tmp_path):
        data = source.load()
        assert len(data.class_names) == 1000
        assert data.class_names[0] == published_names[0] == "tench"
        assert data.class_names[999] == published_names[999]
        assert set(data.labels.tolist()) == expected_labels[source.name]
        assert np.bincount(data.labels).max() == 8 and len(data.labels) == 8 * len(
            expected_labels[source.name]
        )
        # each row's pixels come from the folder its label names
        np.testing.assert_allclose(red_of(data.images), [class_red(int(y)) for y in data.labels], atol=3)


# -- recipes -----------------------------------------------------------------------------------
def test_mixed_splits_are_sized_disjoint_equal_shares_and_val_test_fixed(tmp_path):
    srcs = sources(tmp_path)
    data = build(srcs, sizes={"pool": 12, "val": 6, "test": 6}, image_size=32, channels=3)
    assert (len(data.pool_ids), len(data.val_ids), len(data.test_ids)) == (12, 6, 6)
    assert tuple(data.images.shape[1:]) == (3, 32, 32)
    all_ids = np.concatenate([data.pool_ids, data.val_ids, data.test_ids])
    assert len(set(all_ids.tolist())) == 24
    for ids, share in ((data.pool_ids, 4), (data.val_ids, 2), (data.test_ids, 2)):
        assert np.bincount(data.source_index[ids], minlength=3).tolist() == [share] * 3
    # no image is used twice: (source, pixels) pairs are unique
    keys = {(int(s), data.images[i].numpy().tobytes()) for i, s in zip(all_ids, data.source_index[all_ids])}
    assert len(keys) == 24
    np.testing.assert_allclose(red_of(data.images.numpy()), [class_red(int(y)) for y in data.labels], atol=3)
    bigger = build(srcs, sizes={"pool": 30, "val": 6, "test": 6}, image_size=32, channels=3)
    for split in ("val_ids", "test_ids"):
        assert torch.equal(data.images[getattr(data, split)], bigger.images[getattr(bigger, split)])


def test_noisy_is_identical_across_two_loads_and_differs_from_clean(tmp_path):
    sizes = {"pool": 12, "val": 3, "test": 3}
    noise = {"kind": "gaussian_noise", "severity": 2, "seed": 0}
    clean = build(sources(tmp_path), sizes=sizes, image_size=32, channels=3)
    first = build(sources(tmp_path), sizes=sizes, image_size=32, channels=3, corruption=noise)
    second = build(
        sources(tmp_path), sizes=sizes, image_size=32, channels=3, corruption=noise
    )  # from the cache
    assert torch.equal(first.images, second.images)
    assert ((first.images.float() - clean.images.float()).abs().flatten(1).mean(1) > 5).all()
    assert torch.equal(first.labels, clean.labels)


def test_hard_has_four_rotated_copies_of_the_pool_and_unrepeated_val_test(tmp_path):
    sizes = {"pool": 9, "val": 3, "test": 3}
    noisy = build(
        sources(tmp_path),
        sizes=sizes,
        image_size=32,
        channels=3,
        corruption={"kind": "gaussian_blur", "severity": 1},
    )
    hard = build(
        sources(tmp_path),
        sizes=sizes,
        image_size=32,
        channels=3,
        corruption={"kind": "gaussian_blur", "severity": 1},
        pool_repeats=4,
        repeat_max_degrees=10,
    )
    assert len(hard.pool_ids) == 36 and (len(hard.val_ids), len(hard.test_ids)) == (3, 3)
    assert torch.equal(hard.images[hard.val_ids], noisy.images[noisy.val_ids])
    assert torch.equal(hard.images[hard.test_ids], noisy.images[noisy.test_ids])
    parents = hard.original_id[hard.pool_ids]
    assert sorted(np.bincount(parents)[noisy.pool_ids].tolist()) == [4] * 9
    for parent in noisy.pool_ids:
        copies = hard.images[hard.pool_ids[parents == parent]]
        assert len({c.numpy().tobytes() for c in copies}) == 4  # each its own angle
        assert not any(torch.equal(c, noisy.images[parent]) for c in copies)  # all rotated
        assert (hard.labels[hard.pool_ids[parents == parent]] == noisy.labels[parent]).all()


# -- cache -------------------------------------------------------------------------------------
def test_the_cache_gives_the_same_tensors_as_decoding_the_files(tmp_path):
    from torchvision import datasets, transforms

    tree = r_tree(tmp_path)
    source = ImageNetR(tree, image_size=24, resize_size=28, cache_dir=tmp_path / "cache")
    data = source.load()
    # independent decoding: torchvision's ImageFolder with the ImageNet evaluation transform
    reference = datasets.ImageFolder(
        str(tree),
        transform=transforms.Compose(
            [transforms.Resize(28), transforms.CenterCrop(24), transforms.PILToTensor()]
        ),
    )
    assert len(reference) == len(data.labels)
    by_file = {Path(p).relative_to(tree).as_posix(): i for i, (p, _) in enumerate(reference.samples)}
    files, _, _, _ = source.scan()
    for row, path in enumerate(files):
        expected, _ = reference[by_file[path.relative_to(tree).as_posix()]]
        assert torch.equal(torch.from_numpy(np.asarray(data.images[row])), expected), path
    assert isinstance(data.images, np.memmap)


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path):
    tree = make_tree(tmp_path / "t", {"a": 0, "b": 1}, 3)
    files = sorted(tree.rglob("*.jpg"))
    first = cached_images(tree, files, 16, tmp_path / "cache")
    again = cached_images(tree, files, 16, tmp_path / "cache")
    assert first.built and not again.built and first.path == again.path
    write_jpeg(files[0], 250, 9)  # new content: size and mtime change
    changed = cached_images(tree, files, 16, tmp_path / "cache")
    assert changed.built and changed.path != first.path and not first.path.exists()
    np.testing.assert_array_equal(changed.images[0], decode_image(files[0], 16))
    other_size = cached_images(tree, files, 20, tmp_path / "cache")
    assert other_size.built and changed.path.exists()  # another resolution is another cache


# -- folder source -----------------------------------------------------------------------------
def test_folder_source_without_pre_split_draws_every_split(tmp_path):
    tree = make_tree(tmp_path / "mine", {"cat": 0, "dog": 1, "emu": 2}, 10)
    source = ImageFolderSource(tree, image_size=16, cache_dir=tmp_path / "cache")
    data = build([source], sizes={"pool": None, "val": None, "test": None}, image_size=16, channels=3)
    assert data.class_names == ["cat", "dog", "emu"]
    assert (len(data.val_ids), len(data.test_ids), len(data.pool_ids)) == (3, 3, 24)  # 10% + 10% + rest
    np.testing.assert_allclose(red_of(data.images.numpy()), [class_red(int(y)) for y in data.labels], atol=3)


def test_folder_source_with_pre_split_sub_trees_keeps_them(tmp_path):
    root = tmp_path / "mine"
    # the split is encoded in the item number: train 0-5, val 20-22, test 40-43
    for split, first, n in (("train", 0, 6), ("val", 20, 3), ("test", 40, 4)):
        for folder, label in (("cat", 0), ("dog", 1)):
            for k in range(first, first + n):
                write_jpeg(root / split / folder / f"{k}.jpg", class_red(label), k)
    dm = ActiveDataModule(
        name="f",
        sources=[ImageFolderSource(root, image_size=16, cache_dir=tmp_path / "c")],
        sizes={"pool": None, "val": None, "test": None},
        image_size=16,
        channels=3,
    )
    dm.setup()
    assert (len(dm.data.pool_ids), len(dm.data.val_ids), len(dm.data.test_ids)) == (12, 6, 8)
    source = dm.sources[0]
    files, _, splits, _ = source.scan()
    decoded = source.load().images  # row i = files[i] (nothing skipped)
    item_of = {
        np.asarray(decoded[i]).tobytes(): (int(f.stem), s) for i, (f, s) in enumerate(zip(files, splits))
    }
    for split, ids, lo, hi in (
        ("pool", dm.data.pool_ids, 0, 6),
        ("val", dm.data.val_ids, 20, 23),
        ("test", dm.data.test_ids, 40, 44),
    ):
        found = [item_of[dm.data.images[i].numpy().tobytes()] for i in ids]
        assert all(lo <= k < hi and s == split for k, s in found), (split, found)
    # a fixed size draws from the sub-tree; a tree without val/ takes val from train/
    fixed = build(
        [ImageFolderSource(root, image_size=16, cache_dir=tmp_path / "c")],
        sizes={"pool": 5, "val": 2, "test": 3},
        image_size=16,
        channels=3,
    )
    assert (len(fixed.pool_ids), len(fixed.val_ids), len(fixed.test_ids)) == (5, 2, 3)
    shutil.rmtree(root / "val")
    no_val = build(
        [ImageFolderSource(root, image_size=16, cache_dir=tmp_path / "c")],
        sizes={"pool": None, "val": 2, "test": None},
        image_size=16,
        channels=3,
    )
    assert (len(no_val.pool_ids), len(no_val.val_ids), len(no_val.test_ids)) == (10, 2, 8)


# -- bad input ---------------------------------------------------------------------------------
def test_a_truncated_jpeg_is_named_or_skipped_with_a_count(tmp_path, caplog):
    tree = r_tree(tmp_path, per_class=4)
    bad = tree / "n01484850" / "001.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncated mid-scan
    (tree / "n01484850" / "002.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(UserError, match=r"cannot read image .*n01484850/00[12]\.jpg"):
        ImageNetR(tree, image_size=16, cache_dir=tmp_path / "cache").load()
    dm = ActiveDataModule(
        name="r",
        sources=[ImageNetR(tree, image_size=16, cache_dir=tmp_path / "cache")],
        sizes={"pool": 10, "val": 2, "test": 2},
        image_size=16,
        channels=3,
        skip_corrupt=True,
    )
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert "skipped 2 unreadable image(s)" in caplog.text
    assert len(dm.sources[0].load().labels) == 14
    # the cache built with skipping does not hide the bad files from a run without it
    with pytest.raises(UserError, match=r"cannot read image .*n01484850.*dataset\.skip_corrupt=true"):
        ImageNetR(tree, image_size=16, cache_dir=tmp_path / "cache").load()


def test_unknown_class_folders_are_named(tmp_path):
    tree = r_tree(tmp_path, per_class=1)
    make_tree(tree, {"n99999999": 5}, 1)
    with pytest.raises(UserError, match=r"class folder .*n99999999 is not a known ImageNet wnid"):
        ImageNetR(tree, cache_dir=tmp_path / "c").load()
    v2 = v2_tree(tmp_path, per_class=1)
    make_tree(v2, {"1000": 5}, 1)
    with pytest.raises(UserError, match=r"class folder .*/1000 is not a known class index \(0\.\.999\)"):
        ImageNetV2(v2, cache_dir=tmp_path / "c").load()
    mine = make_tree(tmp_path / "mine", {"cat": 0, "owl": 1}, 2)
    with pytest.raises(UserError, match=r"class folder .*owl is not a known class"):
        ImageFolderSource(mine, classes=["cat", "dog"], cache_dir=tmp_path / "c").load()


def test_an_empty_split_is_an_error(tmp_path):
    root = tmp_path / "mine"
    make_tree(root / "train", {"cat": 0, "dog": 1}, 3)
    (root / "val" / "cat").mkdir(parents=True)
    with pytest.raises(UserError, match=r"split 'val' \(.*mine/val\) holds no images"):
        ImageFolderSource(root, cache_dir=tmp_path / "c").load()
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    (empty / "dog").mkdir(parents=True)
    with pytest.raises(UserError, match=r"root .*empty holds no images"):
        ImageFolderSource(empty, cache_dir=tmp_path / "c").load()


def test_a_missing_or_misplaced_root_names_path_layout_and_publisher(tmp_path):
    with pytest.raises(UserError) as err:
        ImageNetA(tmp_path / "nowhere" / "imagenet-a", cache_dir=tmp_path / "c").load()
    message = str(err.value)
    assert f"not found at {tmp_path / 'nowhere' / 'imagenet-a'}" in message
    assert "<wnid>/<image>.jpg" in message and "github.com/hendrycks/natural-adv-examples" in message
    assert "source.roots.imagenet_a" in message and "\n" not in message
    # the parent of the right folder: every sub-folder is wrong, and the message points at the right one
    v2_tree(tmp_path / "data", per_class=1)
    with pytest.raises(
        UserError,
        match=r"ImageNet-V2 .* not laid out as expected.*class index"
        r".*github.com/modestyachts/ImageNetV2",
    ):
        ImageNetV2(tmp_path / "data", cache_dir=tmp_path / "c").load()


# -- plot ----------------------------------------------------------------------------------------
def test_class_distribution_plot_and_counts(tmp_path):
    import json

    data = build(sources(tmp_path), sizes={"pool": 12, "val": 6, "test": 6}, image_size=32, channels=3)
    png = save_class_distribution(data, tmp_path / "run", title="mixed")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    counts = json.loads((tmp_path / "run" / "class_distribution.json").read_text())["counts"]
    labels = data.labels.numpy()
    for split, ids in (("pool", data.pool_ids), ("val", data.val_ids), ("test", data.test_ids)):
        assert len(counts[split]) == 1000 and sum(counts[split]) == len(ids)
        for cls in (0, 1, 2, 3, 999):
            assert counts[split][cls] == int((labels[ids] == cls).sum())
