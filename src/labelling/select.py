"""``python -m src.select``: a run's saved model chooses what to label next, or what to keep.

``mode=label`` scores unlabelled images (a plain folder, or the images of a COCO,
VOC or YOLO set whose labels are ignored), selects ``budget`` of them with the
experiments' pivot and class diversity, and writes ``ranked.csv`` with the model's
guess (a class, or a detector's boxes) and, with ``export=labelstudio``, a Label
Studio import file pre-annotated with it; every proposal is appended to the run's
``labelling.jsonl``. ``mode=keep`` scores a labelled set (a classification folder
tree ``<images>/<class>/<file>``, or a detection set as COCO, VOC or YOLO files;
``scorer=loss`` uses the labels), keeps ``budget`` items (or ``fraction`` of them)
and writes the kept subset into ``out`` in the input's own layout, with a
``manifest.csv`` of every item's fate.

The model is named by ``run_dir`` or ``checkpoint`` (``src/labelling/trained.py``);
the input by ``images``, ``format`` and ``annotations`` (``src/labelling/inputs.py``).
All arguments, the saved model's files and the input are checked before a model is built.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from src.data.cache import decode_stretched
from src.data.detection.datamodule import collate as detection_collate
from src.data.recipes import _to_shape
from src.errors import UserError
from src.labelling.inputs import InputSet, check_format, read_input
from src.labelling.labelstudio import Proposal, image_url, write_import_file
from src.labelling.outputs import (
    box_rows,
    check_output_folder,
    check_writable_file,
    drop_reasons,
    link_subset,
    write_manifest,
    write_ranked_csv,
)
from src.labelling.pool import UnlabelledImages, box_guesses, class_guesses
from src.labelling.trained import SavedModel, load_saved_model, saved_model
from src.loop.pool import score_pool
from src.selection.ranking import rank_by_score
from src.selection.scorers import Scorer, get_scorer, random_scores
from src.selection.stochastic import choose
from src.tasks import get_task
from src.validate import check_detection_scorer_options

log = logging.getLogger(__name__)

MODES, EXPORTS = ("label", "keep"), ("none", "labelstudio")
AUDIT_FILE = "labelling.jsonl"
PER_ITEM_SCORERS = "least_confidence | margin | entropy"


@dataclass
class Request:
    """The checked arguments of one ``src.select`` call."""

    model: SavedModel
    mode: str
    data: InputSet
    n_select: int
    out: Path
    document_root: Path | None
    scorer: Scorer  # built once, from conf/scorer/<name>.yaml

    @property
    def meta(self) -> dict:
        return self.model.meta

    @property
    def task(self) -> str:
        return self.model.meta["task"]

    @property
    def run_dir(self) -> Path:
        """Where the audit file goes: the folder holding the weights (the run directory)."""
        return self.model.folder

    @property
    def files(self) -> list[Path]:
        return self.data.files

    @property
    def labels(self) -> np.ndarray | None:
        return self.data.labels

    @property
    def root(self) -> Path:
        return self.data.root


def _path(cfg: DictConfig, key: str) -> Path:
    if not cfg.get(key):
        raise UserError(f"{key}: missing; pass {key}=<folder>")
    return Path(str(cfg[key])).expanduser()


def _optional_path(cfg: DictConfig, key: str) -> Path | None:
    return Path(str(cfg[key])).expanduser() if cfg.get(key) else None


def _count(cfg: DictConfig, n: int) -> int:
    if cfg.mode == "keep" and cfg.get("fraction") is not None:
        fraction = float(cfg.fraction)
        if not 0.0 < fraction <= 1.0:
            raise UserError(f"fraction={cfg.fraction}: must be in (0, 1]")
        return max(1, round(fraction * n))
    if not isinstance(cfg.budget, int) or cfg.budget < 1:
        raise UserError(f"budget={cfg.budget}: must be a positive whole number")
    return min(int(cfg.budget), n)


def _check_scorer(cfg: DictConfig, task_name: str):
    scorer = get_scorer(cfg.scorer.name)
    task = get_task(task_name)
    if scorer.joint:
        raise UserError(
            f"scorer={scorer.name} chooses a batch jointly; src.select ranks items by their own "
            f"scores: use {PER_ITEM_SCORERS}, loss or random"
        )
    # a scorer that adapts the model in the run (MC dropout's added dropout, the learned loss's
    # module) cannot score the saved network, which is rebuilt from its config alone
    if scorer.uses - task.provides or scorer.adapts_model:
        raise UserError(
            f"scorer={scorer.name} is not available for a {task_name} model; use {PER_ITEM_SCORERS}"
            f"{', loss' if cfg.mode == 'keep' else ''}"
        )
    if cfg.mode == "label" and (scorer.needs_labels or not scorer.needs_model):
        raise UserError(
            f"scorer={scorer.name}: mode=label has no labels and needs the model's view; "
            f"use {PER_ITEM_SCORERS}"
        )
    if task_name == "detection":
        _check_detection_options(cfg)
    return scorer


def _check_detection_options(cfg: DictConfig) -> None:
    sc = cfg.scorer
    check_detection_scorer_options(
        {k: sc[k] for k in get_task("detection").scorer_options if sc.get(k) is not None}
    )  # null: the run's own value
    value = cfg.get("min_box_score")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise UserError(f"min_box_score={value!r} must be a number in [0, 1]")


def check_request(cfg: DictConfig) -> Request:
    """Every argument checked, the saved model's files read, the input listed; nothing built yet."""
    if cfg.mode not in MODES:
        raise UserError(f"mode={cfg.mode}: allowed {' | '.join(MODES)}")
    if cfg.export not in EXPORTS:
        raise UserError(f"export={cfg.export}: allowed {' | '.join(EXPORTS)}")
    if not 0.0 <= float(cfg.selection.pivot) <= 1.0:
        raise UserError(f"selection.pivot={cfg.selection.pivot}: must be in [0, 1]")
    fmt = str(cfg.get("format") or "folder")
    model = saved_model(_optional_path(cfg, "run_dir"), _optional_path(cfg, "checkpoint"))
    task, classes = model.meta["task"], model.meta["classes"]
    check_format(fmt, task, cfg.mode, cfg.get("annotations"))
    scorer = _check_scorer(cfg, task)
    root, out = _path(cfg, "images"), _path(cfg, "out")
    document_root = None
    if cfg.mode == "keep" and cfg.export != "none":
        raise UserError("export: only mode=label writes a Label Studio file")
    # every output location, tried before the input is read and the model built
    if cfg.mode == "label":
        check_writable_file(
            model.folder / AUDIT_FILE,
            model.key,
            f"the proposals are recorded in {AUDIT_FILE} beside the model",
        )
        check_output_folder(
            out, ["ranked.csv", *(["tasks.json", "tasks.xml"] if cfg.export == "labelstudio" else [])]
        )
    else:
        check_output_folder(out)
    data = read_input(
        fmt, root, _optional_path(cfg, "annotations"), task, cfg.mode, classes, cfg.get("class_map")
    )
    if cfg.mode == "keep":
        link_subset([], root, out)  # no files: only its checks of out (new or empty, not inside images)
    elif cfg.export == "labelstudio":
        document_root = Path(str(cfg.document_root)).expanduser() if cfg.document_root else root
        for f in data.files:  # one line now rather than after the scoring pass
            image_url(f, document_root)
    return Request(model, cfg.mode, data, _count(cfg, len(data.files)), out, document_root, scorer)


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


class AnnotatedImages(Dataset):
    """Item i: (uint8 [3, H, W] image stretched to the detector's input size, its boxes scaled alike, i),
    decoded as a detection run decodes its files (``decode_stretched``)."""

    def __init__(self, records, input_size):
        self.records, (self.width, self.height) = records, (int(v) for v in input_size)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        r = self.records[i]
        image = decode_stretched(r.file, self.width, self.height, (r.width, r.height))
        scale = torch.tensor([self.width / r.width, self.height / r.height] * 2, dtype=torch.float32)
        target = {"boxes": torch.from_numpy(r.boxes) * scale, "labels": torch.from_numpy(r.labels)}
        return torch.from_numpy(image), target, i


def detection_options(cfg: DictConfig, run_cfg: DictConfig) -> dict:
    """The detection scorer's options: this call's ``scorer.*`` where set, else the run's."""
    options = {}
    for key in get_task("detection").scorer_options:
        value = cfg.scorer.get(key)
        if value is None:
            value = run_cfg.scorer.get(key)
        if value is not None:
            options[key] = value
    return options


def input_size(run_cfg: DictConfig) -> tuple[int, int]:
    """(width, height) the detector sees."""
    return tuple(int(v) for v in run_cfg.model.module.input_size)


def scoring_loader(cfg: DictConfig, run_cfg: DictConfig, request: Request) -> DataLoader:
    """The request's items as batches of the saved model's input (item i = ``request.files[i]``)."""
    if request.task == "detection":
        size = input_size(run_cfg)
        data = (
            UnlabelledImages(request.files, "detection", size)
            if request.data.records is None
            else AnnotatedImages(request.data.records, size)
        )
        return DataLoader(data, batch_size=int(cfg.batch_size), shuffle=False, collate_fn=detection_collate)
    size, channels = int(run_cfg.dataset.image_size), int(request.meta["channels"])
    resize = run_cfg.dataset.get("resize_size")
    base = (
        UnlabelledImages(request.files, "classification", size, resize)
        if request.labels is None
        else LabelledImages(request.files, request.labels, size, resize)
    )
    return DataLoader(InputShape(base, size, channels), batch_size=int(cfg.batch_size), shuffle=False)


def score_files(model, cfg: DictConfig, run_cfg: DictConfig, request: Request):
    """((ids, scores, predicted classes or None), loader) of the request's files under ``cfg.scorer``."""
    loader = scoring_loader(cfg, run_cfg, request)
    scorer = request.scorer
    want_classes = bool(cfg.selection.diversity.enabled) and request.mode == "label"
    if not scorer.needs_model:  # random: a seeded draw, the reference subset; no pass through the model
        n = len(request.files)
        return (
            np.arange(n),
            random_scores(n, torch.Generator().manual_seed(int(cfg.seed))).numpy(),
            None,
        ), loader
    options = detection_options(cfg, run_cfg) if request.task == "detection" else {}
    adapter = functools.partial(get_task(request.task).score_batch, scorer=scorer, **options)
    return score_pool(model, loader, adapter, want_predictions=want_classes, progress=False), loader


def _select(cfg: DictConfig, request: Request, ids, scores, predicted):
    diversity = cfg.selection.diversity
    classes = None
    if diversity.enabled:
        classes = predicted if request.mode == "label" else request.data.diversity_classes()[ids]
    # the loop's own selection step (a saved model's scorer is built from its yaml: top-k, no sampling)
    chosen, _ = choose(
        ids, scores, request.n_select, float(cfg.selection.pivot), classes=classes, diversity_k=diversity.k
    )
    return chosen


def guesses(cfg: DictConfig, run_cfg: DictConfig, request: Request, model, loader, ids) -> list:
    """The model's guess for each of ``ids``: a ``ClassGuess`` or (detection) a ``BoxGuess`` in file pixels."""
    dataset, classes, out = loader.dataset, request.meta["classes"], []
    batch = int(cfg.batch_size)
    for start in range(0, len(ids), batch):
        part = [int(i) for i in ids[start : start + batch]]
        images = torch.stack([dataset[i][0] for i in part])
        with torch.inference_mode():
            outputs = model(images)
        if request.task == "detection":
            out += box_guesses(
                outputs,
                input_size(run_cfg),
                [dataset.original_size(i) for i in part],
                classes,
                min_score=float(cfg.min_box_score),
            )
        else:
            out += class_guesses(outputs, classes)
    return out


def _audit_guess(guess) -> dict:
    if hasattr(guess, "label"):
        return {"guess": guess.label, "confidence": guess.confidence}
    boxes = box_rows(guess)
    return {"guess": boxes, "confidence": float(np.mean(guess.scores)) if len(guess.scores) else None}


def propose(cfg: DictConfig, run_cfg: DictConfig, request: Request, model, loader, chosen) -> list[Proposal]:
    """The selected images with their rank (1 = label first), score and the model's guess; written out."""
    found = guesses(cfg, run_cfg, request, model, loader, chosen.ids)
    proposals = [
        Proposal(request.files[int(i)], float(s), rank, g)
        for rank, (i, s, g) in enumerate(zip(chosen.ids, chosen.scores, found), start=1)
    ]
    request.out.mkdir(parents=True, exist_ok=True)
    write_ranked_csv(request.out / "ranked.csv", proposals, root=request.root)
    if cfg.export == "labelstudio":
        write_import_file(
            request.out / "tasks.json",
            proposals,
            request.task,
            request.meta["classes"],
            request.document_root,
        )
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with (request.run_dir / AUDIT_FILE).open("a") as audit:
        for p in proposals:
            audit.write(
                json.dumps(
                    {
                        "time": stamp,
                        "image": str(p.image.resolve()),
                        "rank": p.rank,
                        "score": p.score,
                        "scorer": cfg.scorer.name,
                        **_audit_guess(p.guess),
                        "out": str(request.out.resolve()),
                    }
                )
                + "\n"
            )
    return proposals


def keep(cfg: DictConfig, request: Request, ids, scores, chosen) -> list[str]:
    """Write the kept subset into ``out`` (in the input's layout) and ``out/manifest.csv``; for a
    detection set, the ``src.run`` overrides that train on the kept set."""
    ranking = rank_by_score(ids, scores)
    rank_of = np.empty(len(ids), dtype=np.int64)
    rank_of[ranking] = np.arange(len(ids))
    reasons_by_rank = drop_reasons(len(ids), chosen.ranks, float(cfg.selection.pivot))
    if not request.scorer.needs_model:  # random scores: harder/easier would mean nothing
        reasons_by_rank = [reason and "not in the random draw" for reason in reasons_by_rank]
    # cfg["copy"], not cfg.copy: that is DictConfig's copy method, always true
    copy = bool(cfg["copy"])
    if request.data.records is None:
        link_subset([request.files[int(i)] for i in chosen.ids], request.root, request.out, copy=copy)
        train_on = ["dataset=folder", f"dataset.root={request.out}"]
    else:
        from src.labelling.subsets import write_kept

        train_on = write_kept(request.data, chosen.ids, request.out, copy=copy)
    write_manifest(
        request.out / "manifest.csv",
        [request.files[int(i)] for i in ids],
        scores,
        rank_of,
        [reasons_by_rank[r] for r in rank_of],
        root=request.root,
    )
    return train_on


def run_select(cfg: DictConfig) -> Path:
    """Check, load, score, select, write; returns the output folder."""
    request = check_request(cfg)
    model, run_cfg, _ = load_saved_model(request.model)
    (ids, scores, predicted), loader = score_files(model, cfg, run_cfg, request)
    chosen = _select(cfg, request, ids, scores, predicted)
    if request.mode == "label":
        propose(cfg, run_cfg, request, model, loader, chosen)
    else:
        train_on = keep(cfg, request, ids, scores, chosen)
        log.info("kept %d of %d; train on it with: %s", len(chosen.ids), len(ids), " ".join(train_on))
    return request.out
