"""source=folders: the thesis' V2 / Mixed / Noisy / Hard recipes over a user's own folder roots."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from src.config.instantiate import build
from src.errors import UserError
from src.validate import validate


def make_tree(root, shade: int, per_class: int = 10):
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for k in range(per_class):
            Image.new("RGB", (12, 10), (shade, 8 * k, 30 if cls == "cat" else 220)).save(
                root / cls / f"{k}.png"
            )
    return root


@pytest.fixture
def roots(tmp_path):
    return [make_tree(tmp_path / "studio", 40), make_tree(tmp_path / "phone", 160)]


def folder_cfg(compose_cfg, tmp_path, roots, *overrides):
    return compose_cfg(
        "source=folders",
        f"source.roots=[{','.join(str(r) for r in roots)}]",
        "source.image_size=8",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "debug=fast",
        "dataset.sizes.pool=null",
        "dataset.sizes.val=null",
        "dataset.sizes.test=null",
        *overrides,
    )


def test_mixed_takes_an_equal_share_of_every_root(compose_cfg, tmp_path, roots):
    cfg = folder_cfg(compose_cfg, tmp_path, roots, "dataset=mixed")
    dm = build(cfg.dataset)
    dm.setup()
    data = dm.data
    assert data.source_names == ["studio", "phone"] and data.class_names == ["cat", "dog"]
    # 20 images per root, 10% each for val and test: 16 / 2 / 2 per root
    assert len(data.pool_ids) == 32 and len(data.val_ids) == 4 and len(data.test_ids) == 4
    assert np.bincount(data.source_index[data.pool_ids], minlength=2).tolist() == [16, 16]
    # the first image channel carries the root's shade: every row came from its own root
    red = data.images[:, 0].float().mean(dim=(1, 2)).numpy()
    assert np.all(np.where(data.source_index == 0, red < 100, red > 100))


def test_v2_is_the_first_root_and_hard_repeats_the_pool(compose_cfg, tmp_path, roots):
    v2 = build(folder_cfg(compose_cfg, tmp_path, roots, "dataset=v2").dataset)
    v2.setup()
    assert v2.data.source_names == ["studio"]
    hard = build(folder_cfg(compose_cfg, tmp_path, roots, "dataset=hard").dataset)
    hard.setup()
    assert len(hard.data.pool_ids) == 4 * 32  # Hard: every pool image 4 times


def test_no_roots_is_one_line(compose_cfg):
    with pytest.raises(UserError, match="source.roots is empty"):
        validate(compose_cfg("source=folders", "dataset=mixed", "debug=fast"))
