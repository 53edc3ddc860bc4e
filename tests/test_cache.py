"""The shared decode cache: keyed by what determines its bytes, never evicting another source's cache."""

from __future__ import annotations

import numpy as np
from PIL import Image

from src.data.folder import ImageFolderSource


def _tree(root, colour):
    for cls in ("a", "b"):
        for k in range(2):
            path = root / cls / f"{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 16), (colour, 10 * k, 40 if cls == "a" else 200)).save(path)
    return root


def _caches(cache):
    """{cache folder: (inode, mtime) of its pixel file}: a rebuild shows as a new or changed entry."""
    return {
        p.name: ((p / "images.u8").stat().st_ino, (p / "images.u8").stat().st_mtime_ns)
        for p in cache.iterdir()
        if (p / "images.u8").exists()
    }


def _load(root, cache, **kw):
    """(whether this load decoded the files, the loaded data, the cache folders after it)."""
    before = _caches(cache) if cache.exists() else {}
    data = ImageFolderSource(root, image_size=8, cache_dir=cache, **kw).load()
    after = _caches(cache)
    return any(before.get(name) != stamp for name, stamp in after.items()), data, after


def test_three_folder_sources_at_one_resolution_keep_their_own_caches(tmp_path):
    """Every folder source used to be named 'folder': building one deleted the others' caches,
    so three sources re-decoded on every pass (6 builds in 2 passes)."""
    roots = [_tree(tmp_path / f"tree{i}", 60 * i) for i in range(3)]
    cache = tmp_path / "cache"
    builds = [_load(root, cache)[0] for _ in range(2) for root in roots]
    assert builds == [True, True, True, False, False, False]
    assert len(_caches(cache)) == 3
    # each cache holds its own tree's pixels (red channel = 60 * i)
    for i, root in enumerate(roots):
        assert np.all(np.asarray(_load(root, cache)[1].images)[:, 0] == 60 * i)


def test_the_resize_setting_is_part_of_the_key_and_keeps_both_caches(tmp_path):
    root = _tree(tmp_path / "t", 0)
    cache = tmp_path / "cache"
    built = [_load(root, cache, **kw)[0] for kw in ({}, {"resize_size": 12}, {}, {"resize_size": 12})]
    assert built == [True, True, False, False]


def test_a_changed_tree_replaces_only_its_own_stale_cache(tmp_path):
    one, two = _tree(tmp_path / "one", 10), _tree(tmp_path / "two", 20)
    cache = tmp_path / "cache"
    _, _, first = _load(one, cache)
    _, _, both = _load(two, cache)
    Image.new("RGB", (20, 16), (99, 0, 0)).save(one / "a" / "2.png")  # a file added to tree one
    built, data, after = _load(one, cache)
    assert built and len(data.labels) == 5 and len(after) == 2
    assert set(first) - set(after) == set(first)  # tree one's stale cache is gone
    assert set(both) - set(first) <= set(after)  # tree two's cache untouched
    assert not _load(two, cache)[0]
