"""``python -m src.select``: a run's saved model chooses what to label next, or what to keep.

``mode=label`` scores a folder of unlabelled images, selects ``budget`` of them with
the experiments' pivot and class diversity, and writes ``ranked.csv`` (and, with
``export=labelstudio``, a Label Studio import file pre-annotated with the model's
guess); every proposal is appended to the run's ``labelling.jsonl``. ``mode=keep``
scores a labelled folder tree (``<images>/<class>/<file>``; ``scorer=loss`` uses the
labels), keeps ``budget`` items (or ``fraction`` of them) and mirrors the kept files
into ``out`` with a ``manifest.csv`` of every item's fate.

All arguments are checked before a model is built. Classification only for now.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from src.data.recipes import _to_shape
from src.errors import UserError
from src.labelling.labelstudio import Proposal, image_url, write_import_file
from src.labelling.outputs import drop_reasons, link_subset, write_manifest, write_ranked_csv
from src.labelling.pool import UnlabelledImages, class_guesses, pool_files
from src.labelling.trained import load_trained_model, read_meta
from src.loop.pool import score_pool
from src.selection.ranking import rank_by_score, select
from src.selection.scorers import get_scorer, random_scores
from src.tasks import get_task

MODES, EXPORTS = ("label", "keep"), ("none", "labelstudio")
AUDIT_FILE = "labelling.jsonl"


@dataclass
class Request:
    """The checked arguments of one ``src.select`` call."""
    run_dir: Path
    meta: dict
    mode: str
    files: list[Path]
    labels: np.ndarray | None       # mode=keep: class index per file
    root: Path
    n_select: int
    out: Path
    document_root: Path | None


def _path(cfg: DictConfig, key: str) -> Path:
    if not cfg.get(key):
        raise UserError(f"{key}: missing; pass {key}=<folder>")
    return Path(str(cfg[key])).expanduser()


def labelled_tree(root: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """The files of ``<root>/<class>/*`` and their class indices into the model's ``classes``."""
    files = pool_files(root)
    folders = [f.relative_to(root).parts for f in files]
    if any(len(parts) != 2 for parts in folders):
        bad = next(f for f, parts in zip(files, folders) if len(parts) != 2)
        raise UserError(f"images={root}: {bad} is not <class>/<file>; mode=keep reads a folder tree per class")
    unknown = sorted({parts[0] for parts in folders} - set(classes))
    if unknown:
        raise UserError(f"images={root}: classes {unknown} are not known to the model; it knows {classes}")
    return files, np.array([classes.index(parts[0]) for parts in folders], dtype=np.int64)


def _count(cfg: DictConfig, n: int) -> int:
    if cfg.mode == "keep" and cfg.get("fraction") is not None:
        fraction = float(cfg.fraction)
        if not 0.0 < fraction <= 1.0:
            raise UserError(f"fraction={cfg.fraction}: must be in (0, 1]")
        return max(1, round(fraction * n))
    if not isinstance(cfg.budget, int) or cfg.budget < 1:
        raise UserError(f"budget={cfg.budget}: must be a positive whole number")
    return min(int(cfg.budget), n)


def check_request(cfg: DictConfig) -> Request:
    """Every argument checked, the pool listed, nothing built yet."""
    if cfg.mode not in MODES:
        raise UserError(f"mode={cfg.mode}: allowed {' | '.join(MODES)}")
    if cfg.export not in EXPORTS:
        raise UserError(f"export={cfg.export}: allowed {' | '.join(EXPORTS)}")
    if not 0.0 <= float(cfg.selection.pivot) <= 1.0:
        raise UserError(f"selection.pivot={cfg.selection.pivot}: must be in [0, 1]")
    scorer = get_scorer(cfg.scorer.name)
    run_dir = _path(cfg, "run_dir")
    meta = read_meta(run_dir)
    if meta["task"] != "classification":
        raise UserError(f"run_dir={run_dir}: a {meta['task']} model; src.select handles classification for now")
    root, out = _path(cfg, "images"), _path(cfg, "out")
    labels, document_root = None, None
    if cfg.mode == "keep":
        if cfg.export != "none":
            raise UserError("export: only mode=label writes a Label Studio file")
        files, labels = labelled_tree(root, meta["classes"])
        link_subset([], root, out)      # no files: only its checks of out (new or empty, not inside images)
    else:
        if scorer.needs_labels or not scorer.needs_model:
            raise UserError(f"scorer={scorer.name}: mode=label has no labels and needs the model's view; "
                            f"use least_confidence | margin | entropy")
        files = pool_files(root)
        if cfg.export == "labelstudio":
            document_root = Path(str(cfg.document_root)).expanduser() if cfg.document_root else root
            for f in files:     # one line now rather than after the scoring pass
                image_url(f, document_root)
    return Request(run_dir, meta, cfg.mode, files, labels, root, _count(cfg, len(files)), out, document_root)


class InputShape(Dataset):
    """The images of ``base`` in the model's channel count (the run's dataset recipe)."""

    def __init__(self, base: Dataset, size: int, channels: int):
        self.base, self.size, self.channels = base, size, channels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        image, target, index = self.base[i]
        return torch.from_numpy(_to_shape(image.numpy()[None], self.size, self.channels)[0]), target, index


class LabelledImages(Dataset):
    """Item i: (uint8 [3, H, W] image, its class from the folder tree, i)."""

    def __init__(self, files: list[Path], labels: np.ndarray, image_size: int, resize_size: int | None):
        self.images, self.labels = UnlabelledImages(files, "classification", image_size, resize_size), labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i][0], torch.tensor(int(self.labels[i])), i


def score_files(model, cfg: DictConfig, run_cfg: DictConfig, request: Request):
    """(ids, scores, predicted classes) of the request's files under ``cfg.scorer``."""
    size, channels = int(run_cfg.dataset.image_size), int(request.meta["channels"])
    resize = run_cfg.dataset.get("resize_size")
    base = (UnlabelledImages(request.files, "classification", size, resize) if request.labels is None
            else LabelledImages(request.files, request.labels, size, resize))
    loader = DataLoader(InputShape(base, size, channels), batch_size=int(cfg.batch_size), shuffle=False)
    adapter = functools.partial(get_task("classification").score_batch, scorer=get_scorer(cfg.scorer.name))
    return score_pool(model, loader, adapter, want_predictions=True, progress=False), loader


def _select(cfg: DictConfig, request: Request, ids, scores, predicted):
    diversity = cfg.selection.diversity
    classes = None
    if diversity.enabled:
        classes = predicted if request.labels is None else request.labels[ids]
    return select(ids, scores, request.n_select, float(cfg.selection.pivot), classes=classes,
                  diversity_k=diversity.k)


def propose(cfg: DictConfig, request: Request, model, loader, chosen) -> list[Proposal]:
    """The selected images with their rank (1 = label first), score and the model's guess; written out."""
    images = torch.stack([loader.dataset[int(i)][0] for i in chosen.ids])
    with torch.inference_mode():
        guesses = class_guesses(model(images), request.meta["classes"])
    proposals = [Proposal(request.files[int(i)], float(s), rank, g)
                 for rank, (i, s, g) in enumerate(zip(chosen.ids, chosen.scores, guesses), start=1)]
    request.out.mkdir(parents=True, exist_ok=True)
    write_ranked_csv(request.out / "ranked.csv", proposals, root=request.root)
    if cfg.export == "labelstudio":
        write_import_file(request.out / "tasks.json", proposals, "classification", request.meta["classes"],
                          request.document_root)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with (request.run_dir / AUDIT_FILE).open("a") as audit:
        for p in proposals:
            audit.write(json.dumps({"time": stamp, "image": str(p.image.resolve()), "rank": p.rank,
                                    "score": p.score, "scorer": cfg.scorer.name, "guess": p.guess.label,
                                    "confidence": p.guess.confidence, "out": str(request.out.resolve())}) + "\n")
    return proposals


def keep(cfg: DictConfig, request: Request, ids, scores, chosen) -> list[Path]:
    """Mirror the kept files into ``out`` and write ``out/manifest.csv``; the kept files' paths."""
    ranking = rank_by_score(ids, scores)
    rank_of = np.empty(len(ids), dtype=np.int64)
    rank_of[ranking] = np.arange(len(ids))
    reasons_by_rank = drop_reasons(len(ids), chosen.ranks, float(cfg.selection.pivot))
    if not get_scorer(cfg.scorer.name).needs_model:     # random scores: harder/easier would mean nothing
        reasons_by_rank = [reason and "not in the random draw" for reason in reasons_by_rank]
    kept_files = [request.files[int(i)] for i in chosen.ids]
    # cfg["copy"], not cfg.copy: that is DictConfig's copy method, always true
    kept = link_subset(kept_files, request.root, request.out, copy=bool(cfg["copy"]))
    write_manifest(request.out / "manifest.csv", [request.files[int(i)] for i in ids], scores, rank_of,
                   [reasons_by_rank[r] for r in rank_of], root=request.root)
    return kept


def run_select(cfg: DictConfig) -> Path:
    """Check, load, score, select, write; returns the output folder."""
    request = check_request(cfg)
    model, run_cfg, _ = load_trained_model(request.run_dir)
    (ids, scores, predicted), loader = score_files(model, cfg, run_cfg, request)
    if not get_scorer(cfg.scorer.name).needs_model:     # random: a seeded draw, the reference subset
        scores = random_scores(len(ids), torch.Generator().manual_seed(int(cfg.seed))).numpy()
    chosen = _select(cfg, request, ids, scores, predicted)
    if request.mode == "label":
        propose(cfg, request, model, loader, chosen)
    else:
        keep(cfg, request, ids, scores, chosen)
    return request.out
