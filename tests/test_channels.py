"""dataset.channels / source.channels: folder and ImageNet-layout images decoded as grey (1) or RGB (3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch import nn

from src.config.instantiate import build
from src.data.cache import cached_images
from src.data.folder import ImageFolderSource
from src.errors import UserError
from src.experiment.build import build_model
from src.validate import validate
from tests.conftest import read_jsonl, run_cli, run_module

SIZE = 8


def grey_and_rgb_tree(root: Path, classes=("cat", "dog"), per_class: int = 6, size: int = SIZE) -> Path:
    """``root/<class>/*.png``: in each class half the files RGB noise, half grey ("L") noise, at
    ``size`` px so that decoding does not resize and the pixels can be compared exactly."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            rng = np.random.default_rng(100 * c + k)
            if k % 2:
                Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L").save(
                    root / name / f"g{k}.png"
                )
            else:
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB").save(
                    root / name / f"c{k}.png"
                )
    return root


def pil(path: Path, mode: str) -> np.ndarray:
    """PIL's own conversion of a file, as [C, H, W]."""
    with Image.open(path) as im:
        a = np.asarray(im.convert(mode))
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.fixture
def tree(tmp_path):
    return grey_and_rgb_tree(tmp_path / "photos")


# -- decoding --------------------------------------------------------------------------------------
def test_a_folder_source_decodes_grey_and_rgb_as_pil_converts_them(tree, tmp_path):
    files = ImageFolderSource(tree).scan()[0]
    modes = {Image.open(f).mode for f in files}
    assert modes == {"L", "RGB"}  # both kinds of file are in the tree
    grey = ImageFolderSource(tree, image_size=SIZE, cache_dir=tmp_path / "cache", channels=1).load()
    rgb = ImageFolderSource(tree, image_size=SIZE, cache_dir=tmp_path / "cache", channels=3).load()
    assert grey.images.shape == (12, 1, SIZE, SIZE) and rgb.images.shape == (12, 3, SIZE, SIZE)
    for i, f in enumerate(files):
        np.testing.assert_array_equal(grey.images[i], pil(f, "L"))
        np.testing.assert_array_equal(rgb.images[i], pil(f, "RGB"))
    # the luma of an RGB file is none of its channels (a decode that kept one channel would pass above
    # only by accident): the noise makes them differ
    colour = next(i for i, f in enumerate(files) if f.name.startswith("c"))
    assert all(not np.array_equal(grey.images[colour, 0], rgb.images[colour, c]) for c in range(3))
    # a grey file read as RGB is its grey value three times
    g = next(i for i, f in enumerate(files) if f.name.startswith("g"))
    assert all(np.array_equal(rgb.images[g, c], grey.images[g, 0]) for c in range(3))


def test_dataset_folder_with_channels_1_builds_grey_data_and_a_1_channel_model(compose_cfg, tree, tmp_path):
    cfg = compose_cfg(
        "dataset=folder",
        f"dataset.root={tree}",
        "dataset.channels=1",
        f"dataset.image_size={SIZE}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "debug=fast",
        "dataset.sizes.pool=null",
        "dataset.sizes.val=null",
        "dataset.sizes.test=null",
    )
    validate(cfg)
    dm = build(cfg.dataset)
    dm.setup()
    assert dm.channels == 1 and tuple(dm.data.images.shape) == (12, 1, SIZE, SIZE)
    # every row is one file's PIL "L" conversion (the recipe shuffles rows, so compared as sets)
    expected = sorted(pil(f, "L").tobytes() for f in ImageFolderSource(tree).scan()[0])
    assert sorted(row.numpy().tobytes() for row in dm.data.images) == expected
    model, _ = build_model(cfg, dm)
    assert first_conv(model).in_channels == 1


def test_the_default_stays_rgb(compose_cfg, tree, tmp_path):
    cfg = compose_cfg(
        "dataset=folder",
        f"dataset.root={tree}",
        f"dataset.image_size={SIZE}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "debug=fast",
        "dataset.sizes.pool=null",
        "dataset.sizes.val=null",
        "dataset.sizes.test=null",
    )
    assert cfg.dataset.channels == 3
    dm = build(cfg.dataset)
    dm.setup()
    assert tuple(dm.data.images.shape) == (12, 3, SIZE, SIZE)
    assert first_conv(build_model(cfg, dm)[0]).in_channels == 3


@pytest.mark.parametrize("source", ["folders", "imagenet"])
def test_imagenet_layout_sources_decode_grey_into_grey_caches(compose_cfg, tmp_path, source):
    if source == "folders":
        roots = [grey_and_rgb_tree(tmp_path / "studio"), grey_and_rgb_tree(tmp_path / "phone")]
        where = ["source=folders", f"source.roots=[{','.join(str(r) for r in roots)}]", "dataset=mixed"]
    else:  # ImageNet-V2's layout: class index folders
        roots = [
            grey_and_rgb_tree(tmp_path / "data" / "imagenetv2-matched-frequency-format-val", ("0", "999"))
        ]
        where = ["source=imagenet", f"paths.data_dir={tmp_path / 'data'}", "dataset=v2"]
    cfg = compose_cfg(
        *where,
        "source.channels=1",
        f"source.image_size={SIZE}",
        f"source.resize_size={SIZE}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "debug=fast",
        "dataset.sizes.pool=null",
        "dataset.sizes.val=null",
        "dataset.sizes.test=null",
    )
    assert cfg.dataset.channels == 1
    dm = build(cfg.dataset)
    dm.setup()
    assert tuple(dm.data.images.shape) == (12 * len(roots), 1, SIZE, SIZE)
    expected = sorted(pil(f, "L").tobytes() for r in roots for f in ImageFolderSource(r).scan()[0])
    assert sorted(row.numpy().tobytes() for row in dm.data.images) == expected
    # decoded grey from the files, not RGB reduced afterwards: only 1-channel caches were written
    shapes = [json.loads((d / "meta.json").read_text())["shape"] for d in (tmp_path / "cache").iterdir()]
    assert shapes == [[1, SIZE, SIZE]] * len(roots)


# -- the decode cache ---------------------------------------------------------------------------------
def test_grey_and_rgb_caches_of_one_root_are_separate(tree, tmp_path):
    files = ImageFolderSource(tree).scan()[0]
    cache = tmp_path / "cache"
    rgb = cached_images(tree, files, SIZE, cache, channels=3)
    grey = cached_images(tree, files, SIZE, cache, channels=1)
    assert rgb.built and grey.built and rgb.path != grey.path  # the grey build did not reuse RGB bytes
    assert rgb.images.shape[1] == 3 and grey.images.shape[1] == 1
    assert sorted(p.name for p in cache.iterdir()) == sorted([rgb.path.name, grey.path.name])  # none evicted
    rgb_again, grey_again = (
        cached_images(tree, files, SIZE, cache, channels=3),
        cached_images(tree, files, SIZE, cache, channels=1),
    )
    assert not rgb_again.built and not grey_again.built
    np.testing.assert_array_equal(rgb_again.images, np.stack([pil(f, "RGB") for f in files]))
    np.testing.assert_array_equal(grey_again.images, np.stack([pil(f, "L") for f in files]))


def test_a_cache_folder_of_the_other_channel_count_is_refused(tree, tmp_path):
    files = ImageFolderSource(tree).scan()[0]
    cache = tmp_path / "cache"
    rgb = cached_images(tree, files, SIZE, cache, channels=3).path
    grey = cached_images(tree, files, SIZE, cache, channels=1).path
    # swapped by hand: each name now holds the other's bytes
    rgb.rename(cache / "swap")
    grey.rename(rgb)
    (cache / "swap").rename(grey)
    for channels, shape in ((3, [1, SIZE, SIZE]), (1, [3, SIZE, SIZE])):
        with pytest.raises(UserError, match=rf"holds images of shape \{shape}"):
            cached_images(tree, files, SIZE, cache, channels=channels)


# -- bad values ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["2", "0", "true", "grey"])
def test_other_channel_counts_are_one_line(compose_cfg, tree, value):
    cfg = compose_cfg("dataset=folder", f"dataset.root={tree}", f"dataset.channels={value}", "debug=fast")
    with pytest.raises(UserError, match=r"^dataset\.channels=.*; allowed: 1 \(grey.*or 3 \(RGB\)$"):
        validate(cfg)


def test_source_channels_2_is_refused_through_the_recipe(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "source=folders", f"source.roots=[{tmp_path}]", "dataset=v2", "source.channels=2", "debug=fast"
    )
    with pytest.raises(UserError, match=r"^dataset\.channels=2; allowed: 1"):
        validate(cfg)


# -- end to end ------------------------------------------------------------------------------------------
QUICK = [
    "debug=fast",
    "logger=none",
    "progress=false",
    "selection.budget=10",
    "selection.rounds=2",
    "trainer.max_epochs=2",
    "dataset.sizes.pool=null",
    "dataset.sizes.val=null",
    "dataset.sizes.test=null",
]


def test_channels_2_on_the_command_line_is_one_line_before_any_decoding(tree, tmp_path):
    proc = run_cli(
        "dataset=folder",
        f"dataset.root={tree}",
        "dataset.channels=2",
        *QUICK,
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == ['error: dataset.channels=2; allowed: 1 (grey, decoded as PIL\'s "L") or 3 (RGB)']
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "rounds.jsonl").exists()


def test_a_digits_model_starts_a_grey_folder_run_and_the_report_draws_its_grids(tmp_path):
    """The issue's case: a small CNN trained on the embedded (1-channel) digits, saved, is the starting
    checkpoint of a run on a folder of grey images with the same ten classes."""
    digits_run = tmp_path / "digits"
    run_cli("debug=fast", "save_model=true", "trainer.max_epochs=1", f"hydra.run.dir={digits_run}")
    checkpoint = digits_run / "model.pt"
    assert json.loads((digits_run / "model.json").read_text())["channels"] == 1

    tree = grey_and_rgb_tree(tmp_path / "scans", classes=[str(d) for d in range(10)], per_class=6, size=16)
    common = [
        "dataset=folder",
        f"dataset.root={tree}",
        "dataset.image_size=16",
        f"model.init.checkpoint={checkpoint}",
        *QUICK,
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    # RGB (the default) builds a 3-channel first convolution: the 1-channel checkpoint does not fit
    proc = run_cli(*common, f"hydra.run.dir={tmp_path / 'rgb'}", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: model.init.checkpoint={checkpoint}: does not fit the model")
    assert "net.features.0.weight (32, 1, 3, 3) vs (32, 3, 3, 3)" in line

    run_dir = tmp_path / "grey"
    run_cli(*common, "dataset.channels=1", f"hydra.run.dir={run_dir}")
    records = read_jsonl(run_dir / "rounds.jsonl")
    assert [r["n_labelled"] for r in records] == [10, 20]
    counts = json.loads((run_dir / "class_distribution.json").read_text())
    assert counts["class_names"] == [str(d) for d in range(10)]
    assert [sum(counts["counts"][s]) for s in ("pool", "val", "test")] == [48, 6, 6]
    assert (run_dir / "class_distribution.png").stat().st_size > 1000

    # the report rebuilds the grey dataset from the run's recorded config for its selection grid
    out = tmp_path / "report"
    proc = run_module(
        "src.report",
        str(run_dir),
        "--out",
        str(out),
        "--data-cache",
        str(tmp_path / "report-cache"),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "figures" / "selection_00.png").stat().st_size > 1000
    shapes = [
        json.loads((d / "meta.json").read_text())["shape"] for d in (tmp_path / "report-cache").iterdir()
    ]
    assert shapes == [[1, 16, 16]]
