"""Dataset recipes (thesis 4.2.1): how sources become a pool / val / test split.

One function, ``build``, expresses all four thesis datasets by its arguments:

* V2:    one source.
* Mixed: equal shares of several sources, in every split.
* Noisy: Mixed plus a deterministic per-image corruption.
* Hard:  Noisy with every pool image present ``pool_repeats`` times, each copy with
         its own small fixed rotation; val and test are not repeated.

Val and test are drawn first from each source's seeded permutation, so they do not
change when the pool size (or the base set, which the loop draws from the pool)
changes. ``sizes.baseline`` items are kept back from the end of each permutation for a
starting model to learn from (``baseline=held_back``): the main part never draws them,
and ``part="baseline"`` builds those rows alone, so the two are disjoint by construction.
Every stored row has a stable integer id (its row number); the loop, the
scores and the saved state speak only in ids. No Lightning, no files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from src.data.corruptions import corrupt, rotate
from src.data.sources import Source, SourceData
from src.errors import UserError

SPLITS = ("test", "val", "pool")
# what a recipe builds: the pool / val / test of a run, or the items kept back for its baseline
PARTS = ("main", "baseline")

# Seed streams under ``split_seed`` (numpy SeedSequence entropy [split_seed, stream, ...]):
# stream j < INTERLEAVE_STREAM is source j's permutation (``split_rows``), so a recipe may
# mix up to a thousand sources before streams could meet.
INTERLEAVE_STREAM = 1000  # + split index k: the order that mixes the sources within split k
ROTATION_STREAM = 7  # with (pool row, copy): the Hard recipe's fixed rotation of that copy
# Rows resized (float32) or rotated at once: bounds the temporary float memory, which at
# 224 px is 0.6 MB per row, to a few hundred MB.
GATHER_CHUNK = 512
ROTATE_CHUNK = 256


@dataclass
class BuiltDataset:
    images: torch.Tensor  # uint8 [M, C, H, W], row = id
    labels: torch.Tensor  # int64 [M]
    source_index: np.ndarray  # int [M]: which source the row came from
    original_id: np.ndarray  # int [M]: the row it was copied from (itself unless repeated)
    source_row: np.ndarray  # int [M]: the item's row within its source
    pool_ids: np.ndarray
    val_ids: np.ndarray
    test_ids: np.ndarray
    class_names: list[str]
    source_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def label_name(self, label: int) -> str:
        """The class name of a label index (the index itself past the end of the list)."""
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)


def equal_shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` integers differing by at most one, larger first."""
    return [total // parts + (1 if j < total % parts else 0) for j in range(parts)]


def _to_shape(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    x = torch.from_numpy(images)
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1:  # ITU-R 601 luma
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().to(torch.uint8)
        else:
            raise UserError(
                f"dataset.channels={channels}: cannot convert {x.shape[1]}-channel images to "
                f"{channels} channels; allowed: 1 or 3"
            )
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(x.numpy())


# Share of an unsplit source that a null dataset.sizes.val / .test takes.
DEFAULT_HELD_OUT = 0.1


def split_rows(data, j: int, wanted: dict, split_seed: int, part: str = "main") -> dict[str, np.ndarray]:
    """Rows of source ``data`` (the j-th) for each split, in a seeded random order.

    Test is drawn first, then val, then pool, each from the front of the source's
    permutation, so val and test do not depend on the pool size. A pre-split source
    draws each split from its own sub-tree (a missing val or test sub-tree from the
    train rows). ``wanted[split]`` None takes the whole sub-tree, the rest of the
    data for the pool, or DEFAULT_HELD_OUT of an unsplit source for val and test.
    ``wanted["baseline"]`` rows (the train sub-tree's of a pre-split source) are kept
    back from the end of the permutation first; ``part="baseline"`` returns them
    alone, a tenth as val (for the baseline's own validation) and the rest as pool.
    """
    perm = np.random.default_rng(np.random.SeedSequence([split_seed, j])).permutation(len(data.labels))
    reserve = int(wanted.get("baseline") or 0)
    if data.splits is None:
        groups = {"pool": perm}
        asked = [wanted[s] for s in SPLITS] + [reserve]
        if all(v is not None for v in asked) and sum(asked) > len(perm):
            raise UserError(
                f"dataset.sizes: source {data.name!r} must supply {sum(asked)} items "
                f"({', '.join(f'{s} {wanted[s]}' for s in SPLITS)}, baseline {reserve}) but has {len(perm)}; "
                "lower dataset.sizes.pool/val/test/baseline"
            )
    else:
        groups = {s: perm[data.splits[perm] == s] for s in SPLITS}
    if reserve > len(groups["pool"]):
        raise UserError(
            f"dataset.sizes.baseline: source {data.name!r} must keep back {reserve} items for the "
            f"baseline but has {len(groups['pool'])}; lower dataset.sizes.baseline"
        )
    kept_back = groups["pool"][len(groups["pool"]) - reserve :]
    groups["pool"] = groups["pool"][: len(groups["pool"]) - reserve]
    if part == "baseline":
        n_val = int(round(0.1 * reserve)) if reserve > 1 else 0
        return {"test": kept_back[:0], "val": kept_back[:n_val], "pool": kept_back[n_val:]}
    taken = {s: 0 for s in groups}
    out = {}
    for split in SPLITS:  # test, val, pool
        group = split if len(groups.get(split, ())) else "pool"
        available = groups[group][taken[group] :]
        n = wanted[split]
        if n is None:
            n = (
                len(available)
                if (split == "pool" or group == split)
                else max(1, int(round(DEFAULT_HELD_OUT * len(perm))))
            )
        if n > len(available):
            where = f"its {group} sub-tree" if data.splits is not None else "it"
            raise UserError(
                f"dataset.sizes.{split}: source {data.name!r} must supply {n} {split} items but "
                f"{where} has only {len(available)} left; lower dataset.sizes.{split} "
                "(null takes what there is)"
            )
        out[split] = available[:n]
        taken[group] += n
    return out


def _gather(
    images: np.ndarray, rows: np.ndarray, size: int, channels: int, chunk: int = GATHER_CHUNK
) -> np.ndarray:
    """``images[rows]`` at the recipe's shape. Rows are read in ascending order (sequential
    reads from a memory-mapped cache) and in chunks (bounded float memory when resizing)."""
    order = np.argsort(rows, kind="stable")
    out = None
    for start in range(0, len(rows), chunk):
        idx = order[start : start + chunk]
        block = _to_shape(np.asarray(images[rows[idx]]), size, channels)
        if out is None:
            out = np.empty((len(rows),) + block.shape[1:], dtype=np.uint8)
        out[idx] = block
    if out is None:
        c = channels
        out = np.zeros((0, c, size, size), dtype=np.uint8)
    return out


def _load_sources(sources: list[Source], channels: int) -> list[SourceData]:
    if not sources:
        raise UserError("dataset.sources is empty; name at least one source")
    for s in sources:
        s.decode_channels(channels)
    loaded = [s.load() for s in sources]
    for d in loaded[1:]:
        if d.class_names != loaded[0].class_names:
            raise UserError(
                f"sources {loaded[0].name!r} and {d.name!r} have different class lists; "
                "a mixed recipe needs one label space"
            )
    return loaded


def _split_parts(
    loaded: list[SourceData], sizes: dict, image_size: int, channels: int, split_seed: int, part: str = "main"
) -> dict[str, list[tuple[np.ndarray, ...]]]:
    """Per split, per source: (images at the recipe's shape, labels, source index, source rows)."""
    if part not in PARTS:
        raise UserError(f"dataset.part={part!r}; allowed: {', '.join(PARTS)}")
    if part == "baseline" and not sizes.get("baseline"):
        raise UserError(
            "dataset.sizes.baseline is 0: no items are kept back for a baseline to learn from; "
            "set dataset.sizes.baseline (e.g. 1000)"
        )
    keys = (*SPLITS, "baseline")
    shares = {
        split: (
            equal_shares(int(sizes[split]), len(loaded))
            if sizes.get(split) is not None
            else [None] * len(loaded)
        )
        for split in keys
    }
    parts: dict[str, list[tuple[np.ndarray, ...]]] = {s: [] for s in SPLITS}
    for j, data in enumerate(loaded):
        rows_of = split_rows(data, j, {s: shares[s][j] for s in keys}, split_seed, part)
        for split in SPLITS:
            rows = rows_of[split]
            parts[split].append(
                (
                    _gather(data.images, rows, image_size, channels),
                    data.labels[rows],
                    np.full(len(rows), j),
                    rows,
                )
            )
    # a baseline's part has no test split (it is evaluated on the run's own test set)
    for split in SPLITS if part == "main" else ("pool",):
        if sum(len(p[1]) for p in parts[split]) == 0:
            raise UserError(
                f"dataset split {split!r} is empty: dataset.sizes.{split} is 0 or the sources "
                f"have no items for it"
            )
    return parts


def _interleave(parts: dict, split_seed: int):
    """(images, labels, source index, source row, ids per split): test rows first, then val, then
    pool, the sources of each split shuffled together so that storage order carries no source blocks."""
    images, labels, origin, source_rows, split_ids = [], [], [], [], {}
    offset = 0
    for k, split in enumerate(SPLITS):
        x = np.concatenate([p[0] for p in parts[split]])
        y = np.concatenate([p[1] for p in parts[split]])
        o = np.concatenate([p[2] for p in parts[split]])
        r = np.concatenate([p[3] for p in parts[split]])
        stream = np.random.SeedSequence([split_seed, INTERLEAVE_STREAM + k])
        order = np.random.default_rng(stream).permutation(len(y))
        images.append(x[order])
        labels.append(y[order])
        origin.append(o[order])
        source_rows.append(r[order])
        split_ids[split] = np.arange(offset, offset + len(y), dtype=np.int64)
        offset += len(y)
    return (
        np.concatenate(images),
        np.concatenate(labels),
        np.concatenate(origin),
        np.concatenate(source_rows).astype(np.int64),
        split_ids,
    )


def _repeat_pool(
    images: np.ndarray,
    labels: np.ndarray,
    origin: np.ndarray,
    split_ids: dict,
    split_seed: int,
    pool_repeats: int,
    max_degrees: float,
):
    """The Hard recipe: every pool row ``pool_repeats`` times, each copy rotated by its own fixed angle;
    val and test kept once. Returns (images, labels, origin, original row, split ids)."""
    pool = split_ids["pool"]
    parent = np.repeat(pool, pool_repeats)
    copy = np.tile(np.arange(pool_repeats), len(pool))
    degrees = np.array(
        [
            np.random.default_rng(
                np.random.SeedSequence([split_seed, ROTATION_STREAM, int(p), int(c)])
            ).uniform(-max_degrees, max_degrees)
            for p, c in zip(parent, copy)
        ]
    )
    keep = np.concatenate([split_ids["test"], split_ids["val"]])  # rows [0, n_test + n_val)
    repeated = np.empty((len(keep) + len(parent),) + images.shape[1:], dtype=np.uint8)
    repeated[: len(keep)] = images[keep]
    for start in range(0, len(parent), ROTATE_CHUNK):
        stop = min(start + ROTATE_CHUNK, len(parent))
        repeated[len(keep) + start : len(keep) + stop] = rotate(
            images[parent[start:stop]], degrees[start:stop]
        )
    split_ids = dict(split_ids, pool=np.arange(len(keep), len(keep) + len(parent), dtype=np.int64))
    return (
        repeated,
        np.concatenate([labels[keep], labels[parent]]),
        np.concatenate([origin[keep], origin[parent]]),
        np.concatenate([keep, parent]),
        split_ids,
    )


def build(
    sources: list[Source],
    sizes: dict,
    image_size: int,
    channels: int = 1,
    split_seed: int = 0,
    corruption: dict | None = None,
    pool_repeats: int = 1,
    repeat_max_degrees: float = 10.0,
    part: str = "main",
) -> BuiltDataset:
    """The rows of ``part``: the run's pool / val / test ("main"), or the ``sizes.baseline`` items
    kept back from them ("baseline": pool and val for a starting model, no test)."""
    loaded = _load_sources(sources, channels)
    parts = _split_parts(loaded, sizes, image_size, channels, split_seed, part)
    images, labels, origin, source_row, split_ids = _interleave(parts, split_seed)
    original = np.arange(len(labels), dtype=np.int64)
    if corruption:
        images = corrupt(
            images,
            original,
            kind=corruption["kind"],
            severity=int(corruption["severity"]),
            seed=int(corruption.get("seed", split_seed)),
        )
    if pool_repeats > 1 and part == "main":
        images, labels, origin, original, split_ids = _repeat_pool(
            images, labels, origin, split_ids, split_seed, pool_repeats, repeat_max_degrees
        )
    return BuiltDataset(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(labels.astype(np.int64)),
        source_index=origin,
        original_id=original,
        source_row=source_row[original],
        pool_ids=split_ids["pool"],
        val_ids=split_ids["val"],
        test_ids=split_ids["test"],
        class_names=list(loaded[0].class_names),
        source_names=[d.name for d in loaded],
    )
