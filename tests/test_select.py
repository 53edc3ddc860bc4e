"""python -m src.select against an independent computation: scipy's softmax and entropy of the saved
model's logits, the cross-entropy by hand, the pivot window counted out; bad input is one line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.special import log_softmax, softmax
from scipy.stats import entropy

from src.data.cache import decode_image
from src.data.recipes import _to_shape
from src.errors import UserError
from src.labelling.select import check_request
from src.labelling.trained import load_trained_model, save_trained_model
from tests.conftest import REPO, cli_env, compose_select, made_once, run_cli

DIGITS = [str(d) for d in range(10)]


def run_select(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "src.select", *args],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_images(folder, names, seed, grey=False):
    rng = np.random.default_rng(seed)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        shape = (18, 22) if grey else (18, 22, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


def logits_of(model, files):
    """The saved model's logits of the files, decoded like the run's 16 px grey digits."""
    images = np.stack([decode_image(f, 16) for f in files])
    with torch.inference_mode():
        return model(torch.from_numpy(_to_shape(images, 16, 1))).double().numpy()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    def make(folder: Path) -> str:
        run_cli(
            "debug=fast",
            "logger=none",
            "save_model=true",
            "trainer.max_epochs=1",
            "selection.rounds=1",
            f"hydra.run.dir={folder / 'run'}",
        )
        return str(folder / "run")

    return Path(made_once(tmp_path_factory, "trained-run", make))


@pytest.mark.slow
def test_label_mode_ranks_by_entropy_and_writes_a_label_studio_file(trained_run, tmp_path):
    pool, out = tmp_path / "pool", tmp_path / "out"
    names = [f"img{i:02d}.png" for i in range(12)]
    write_images(pool, names, seed=0)
    proc = run_select(
        f"run_dir={trained_run}", f"images={pool}", "budget=4", "export=labelstudio", f"out={out}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    model, _, meta = load_trained_model(trained_run)
    probs = softmax(logits_of(model, [pool / n for n in names]), axis=1)
    scores = entropy(probs, base=2, axis=1) / np.log2(10)
    top = np.argsort(-scores, kind="stable")[:4]
    rows = list(csv.DictReader((out / "ranked.csv").open()))
    assert [r["path"] for r in rows] == [names[i] for i in top]
    np.testing.assert_allclose([float(r["score"]) for r in rows], scores[top], rtol=1e-4)
    assert [r["predicted"] for r in rows] == [DIGITS[probs[i].argmax()] for i in top]
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], probs[top].max(axis=1), rtol=1e-4)

    tasks = json.loads((out / "tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [f"/data/local-files/?d={names[i]}" for i in top]
    assert [t["predictions"][0]["result"][0]["value"]["choices"] for t in tasks] == [
        [r["predicted"]] for r in rows
    ]
    assert '<Choice value="9"/>' in (out / "tasks.xml").read_text()
    audit = [json.loads(line) for line in (trained_run / "labelling.jsonl").read_text().splitlines()]
    assert [a["image"] for a in audit[-4:]] == [str(pool / names[i]) for i in top]


@pytest.mark.slow
def test_keep_mode_keeps_the_middle_by_loss_as_hard_links(trained_run, tmp_path):
    tree, out = tmp_path / "tree", tmp_path / "kept"
    files = [f"{c}/x{i}.png" for c in ("1", "4", "7") for i in range(4)]
    write_images(tree, files, seed=1, grey=True)
    proc = run_select(
        f"run_dir={trained_run}",
        f"images={tree}",
        "mode=keep",
        "fraction=0.5",
        "scorer=loss",
        "selection.pivot=0.5",
        f"out={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    model, _, _ = load_trained_model(trained_run)
    labels = np.array([int(f[0]) for f in files])
    losses = -log_softmax(logits_of(model, [tree / f for f in files]), axis=1)[np.arange(12), labels]
    by_loss = [files[i] for i in np.argsort(-losses, kind="stable")]
    # 6 of 12 centred on rank 5.5: ranks 3..8 (0-based); the 3 above are harder, the 3 below easier
    kept = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert kept == sorted(by_loss[3:9])
    assert all(not (out / f).is_symlink() and (out / f).samefile(tree / f) for f in kept)
    manifest = list(csv.DictReader((out / "manifest.csv").open()))
    assert [m["path"] for m in manifest] == by_loss
    assert [m["kept"] for m in manifest] == ["no"] * 3 + ["yes"] * 6 + ["no"] * 3
    assert {m["reason"] for m in manifest[:3]} == {"harder than the kept window"}


@pytest.mark.slow
def test_a_run_without_saved_weights_is_one_line(tmp_path):
    write_images(tmp_path / "pool", ["a.png"], seed=2)
    proc = run_select(f"run_dir={tmp_path}", f"images={tmp_path / 'pool'}", f"out={tmp_path / 'out'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: run_dir={tmp_path}: no saved model (model.pt + model.json); train it with save_model=true"
    ]


@pytest.fixture
def saved_run(tmp_path):
    """A run directory with an untrained small CNN saved: enough for the checks before scoring."""
    model = torch.nn.Linear(1, 10)
    save_trained_model(tmp_path, model, "classification", DIGITS, channels=1, overrides=[])
    return tmp_path


def test_classes_the_model_does_not_know_are_one_line(saved_run, tmp_path):
    write_images(tmp_path / "tree", ["3/a.png", "cat/b.png"], seed=3)
    cfg = compose_select(
        f"run_dir={saved_run}", f"images={tmp_path / 'tree'}", "mode=keep", f"out={tmp_path / 'o'}"
    )
    with pytest.raises(UserError, match=r"classes \['cat'\] are not known to the model"):
        check_request(cfg)


def test_pool_images_outside_the_document_root_are_one_line(saved_run, tmp_path):
    write_images(tmp_path / "pool", ["a.png"], seed=4)
    (tmp_path / "served").mkdir()
    cfg = compose_select(
        f"run_dir={saved_run}",
        f"images={tmp_path / 'pool'}",
        "export=labelstudio",
        f"document_root={tmp_path / 'served'}",
        f"out={tmp_path / 'o'}",
    )
    with pytest.raises(UserError, match="not under the Label Studio document root"):
        check_request(cfg)


@pytest.mark.parametrize(
    "override, message",
    [
        ("scorer=loss", "mode=label has no labels"),
        ("scorer=bald", "scorer=bald is not available for a classification model; use least_confidence"),
        ("scorer=learning_loss", "scorer=learning_loss is not available for a classification model"),
        ("mode=prune", "mode=prune: allowed label | keep"),
        ("export=cvat", "export=cvat: allowed none | labelstudio"),
        ("budget=0", "budget=0: must be a positive whole number"),
    ],
)
def test_bad_arguments_are_one_line(saved_run, tmp_path, override, message):
    write_images(tmp_path / "pool", ["a.png"], seed=5)
    cfg = compose_select(
        f"run_dir={saved_run}", f"images={tmp_path / 'pool'}", f"out={tmp_path / 'o'}", override
    )
    with pytest.raises(UserError, match=message):
        check_request(cfg)
