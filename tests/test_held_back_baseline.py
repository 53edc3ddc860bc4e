"""Classification starting models (issue 19, item 1): a baseline learned from items the run's
recipe keeps back (disjoint from pool, val and test), files keyed by what made them, and a
baseline used as a backbone under a new class head, for both tasks."""

from __future__ import annotations

import json

import hydra
import numpy as np
import pytest
import torch

from src.data.recipes import build
from src.data.sources import FontDigits, MnistDigits, UciDigits
from src.errors import UserError
from src.experiment.build import build_model
from src.models.classifier import ImageClassifier
from src.models.detector import SSDDetector
from src.models.named_baselines import baseline_path, named_baseline_checkpoint
from src.models.weights import load_into
from src.pretraining import make_if_missing, pretrain
from src.validate import validate
from tests.conftest import run_cli, run_module

SIZES = {"pool": 600, "val": 300, "test": 300, "baseline": 1000}
# loaded once for the module (a source memoises its images; MNIST takes seconds to read)
MNIST = MnistDigits()


def _keys(data) -> set[tuple[int, int]]:
    """(source, row within the source) of every built row: which item of which source it is."""
    return set(zip(data.source_index.tolist(), data.source_row.tolist()))


@pytest.mark.parametrize("recipe", ["v2", "mixed"])
def test_the_kept_back_items_are_disjoint_from_pool_val_and_test(recipe):
    # each source gives 200 + 100 + 100 + 333 or 334 items: 800 rendered digits suffice
    sources = [MNIST] if recipe == "v2" else [UciDigits(), MNIST, FontDigits(n=800, seed=0)]
    main = build(sources, SIZES, image_size=28)
    held = build(sources, SIZES, image_size=28, part="baseline")
    assert len(held.pool_ids) + len(held.val_ids) == 1000 and len(held.test_ids) == 0
    # a tenth of each source's share validates the baseline: 100, or 33 + 33 + 33 of 334 / 333 / 333
    assert len(held.val_ids) == (100 if recipe == "v2" else 99)
    assert not _keys(main) & _keys(held)
    assert len(_keys(main)) == 1200 and len(_keys(held)) == 1000
    # every source gives its equal share (334, 333, 333 of 1000)
    assert sorted(np.bincount(held.source_index).tolist(), reverse=True) == (
        [1000] if recipe == "v2" else [334, 333, 333]
    )
    if recipe == "v2":
        # independent of the row bookkeeping: the 5,000 MNIST images are all distinct, so no
        # pixel array the baseline learns from may appear in the run's splits
        seen = {img.tobytes() for img in main.images.numpy()}
        assert not any(img.tobytes() in seen for img in held.images.numpy())
    # keeping items back moves none of the run's own rows: same images, labels and ids as without
    plain = build(sources, {k: v for k, v in SIZES.items() if k != "baseline"}, image_size=28)
    assert torch.equal(plain.images, main.images) and torch.equal(plain.labels, main.labels)
    assert (plain.pool_ids == main.pool_ids).all() and (plain.test_ids == main.test_ids).all()


def test_a_pool_of_the_rest_leaves_the_kept_back_items_out():
    sizes = {"pool": None, "val": 300, "test": 300, "baseline": 1000}
    main, held = build([MNIST], sizes, 28), build([MNIST], sizes, 28, part="baseline")
    assert len(main.pool_ids) == 5000 - 600 - 1000 and not _keys(main) & _keys(held)


def test_sizes_beyond_the_source_name_the_kept_back_count():
    with pytest.raises(
        UserError, match=r"must supply 5200 items .*baseline 4000.*dataset.sizes.pool/val/test/baseline"
    ):
        build([MNIST], {**SIZES, "baseline": 4000}, 28)
    with pytest.raises(UserError, match="dataset.sizes.baseline is 0"):
        build([MNIST], {**SIZES, "baseline": 0}, 28, part="baseline")


def test_bad_values_of_the_kept_back_keys_fail_fast(compose_cfg):
    for overrides, message in [
        (["baseline=held_back"], "dataset.sizes.baseline=0 keeps no items back"),
        (["task=detection", "baseline=held_back"], "for task=detection use baseline=real"),
        (["dataset.sizes.baseline=-1"], "dataset.sizes.baseline=-1 must be an integer >= 0"),
        (["dataset.part=other"], "dataset.part='other'; allowed: main, baseline"),
        (["baseline=held_back", "dataset.sizes.baseline=100", "baseline.part=main"], "baseline.part='main'"),
    ]:
        with pytest.raises(UserError, match=message):
            validate(compose_cfg(*overrides))


def test_the_cli_refuses_a_held_back_baseline_without_items_in_one_line(tmp_path):
    proc = run_cli("baseline=held_back", "debug=fast", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "dataset.sizes.baseline=0" in errors[0]
    assert not (tmp_path / "run").exists()


TINY = [
    "debug=fast",
    "dataset.sizes.pool=60",
    "dataset.sizes.val=30",
    "dataset.sizes.test=30",
    "dataset.sizes.baseline=100",
    "baseline=held_back",
    "baseline.epochs=1",
]


def test_pretrain_makes_a_held_back_baseline_that_a_run_starts_from(tmp_path, compose_cfg):
    args = [*TINY, f"baseline.dir={tmp_path / 'b'}"]
    proc = run_module("src.pretrain", *args, f"hydra.run.dir={tmp_path / 'pre'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = compose_cfg(*args)
    path = baseline_path(cfg)
    assert path.parent == tmp_path / "b" and path.name.startswith("held_back-") and path.is_file()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["fingerprint"]["baseline"]["part"] == "baseline" and meta["classes"] == [
        str(d) for d in range(10)
    ]
    assert (
        "training ImageClassifier on 90 images of digits" in proc.stderr + proc.stdout
    )  # 100 kept back, 10 val

    # the run's starting weights are the file's, bit for bit
    datamodule = hydra.utils.instantiate(cfg.dataset)
    model, snapshot = build_model(cfg, datamodule)
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert saved.keys() == snapshot.state.keys()
    assert all(torch.equal(saved[k], snapshot.state[k]) for k in saved)

    # the run's split sizes do not change the kept-back items, so they share the file
    assert baseline_path(compose_cfg(*args, "dataset.sizes.pool=80")) == path
    # what does change them names another file; making it leaves the first alone
    stamp = path.stat().st_mtime_ns
    other_cfg = compose_cfg(*args, "dataset.sizes.baseline=120")
    other = pretrain(other_cfg)
    assert other != path and other.is_file() and path.stat().st_mtime_ns == stamp
    assert named_baseline_checkpoint(other_cfg) == other and named_baseline_checkpoint(cfg) == path

    # a file of the same settings made before the files were keyed (<name>.pt) is used where it lies
    legacy = path.with_name("held_back.pt")
    path.rename(legacy)
    path.with_suffix(".json").rename(legacy.with_suffix(".json"))
    assert named_baseline_checkpoint(cfg) == legacy and pretrain(cfg) == legacy and not path.exists()
    # a damaged description is not these settings: the file counts as missing
    legacy.with_suffix(".json").write_text("{not json")
    with pytest.raises(UserError, match=r"held_back-\w+\.pt does not exist; make it with"):
        named_baseline_checkpoint(compose_cfg(*args, "baseline.make_if_missing=false"))


def _classifier(num_classes: int, in_channels: int = 1, seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    return ImageClassifier(
        num_classes=num_classes,
        in_channels=in_channels,
        net={"name": "small_cnn"},
        optimizer=lambda p: torch.optim.Adam(p),
    )


def _detector(num_classes: int, seed: int = 0) -> SSDDetector:
    torch.manual_seed(seed)
    return SSDDetector(num_classes=num_classes, input_size=(96, 54))


def _check_backbone_from_file_head_from_init(loaded, fresh_twin, source_state, head_prefix):
    state = loaded.state_dict()
    heads = [k for k in state if k.startswith(head_prefix + ".")]
    assert heads, "the module names its head"
    for key, value in state.items():
        expected = fresh_twin.state_dict()[key] if key in heads else source_state[key]
        assert torch.equal(value, expected), key


@pytest.mark.parametrize("task", ["classification", "detection"])
def test_a_baseline_with_another_class_count_loads_as_backbone_under_a_seeded_head(tmp_path, task):
    make = _classifier if task == "classification" else _detector
    source = make(10, seed=1)
    file = tmp_path / "baseline.pt"
    torch.save({"state_dict": source.state_dict()}, file)
    run_model, twin = make(4, seed=7), make(4, seed=7)  # twin: the seeded init the head must keep
    prefix = "net.classifier.2" if task == "classification" else "net.head.classification_head"
    assert run_model.head_prefixes() == [prefix]
    kept = load_into(run_model, file, key="baseline=x", new_head=True)
    assert kept and all(k.startswith(prefix + ".") for k in kept)
    _check_backbone_from_file_head_from_init(run_model, twin, source.state_dict(), prefix)
    # without new_head (src.select's saved models), the same file is a one-line mismatch
    with pytest.raises(UserError, match=r"baseline=x=.*does not fit the model \(shape: "):
        load_into(make(4, seed=7), file, key="baseline=x")


def test_a_mismatch_outside_the_head_is_still_refused(tmp_path):
    file = tmp_path / "rgb.pt"
    torch.save(_classifier(10, in_channels=3).state_dict(), file)
    with pytest.raises(UserError, match=r"does not fit the model \(shape: net.features"):
        load_into(_classifier(4, in_channels=1), file, new_head=True)


def test_a_run_on_other_classes_keeps_the_checkpoints_backbone(tmp_path, compose_cfg, caplog):
    """Through the run's own model builder: a 7-class checkpoint under the digits' 10 classes."""
    source = _classifier(7, seed=3)
    file = tmp_path / "seven.pt"
    torch.save({"state_dict": source.state_dict()}, file)
    cfg = compose_cfg("debug=fast", f"model.init.checkpoint={file}", "seed=5")
    datamodule = hydra.utils.instantiate(cfg.dataset)
    with caplog.at_level("INFO", logger="src.run"):
        model, _ = build_model(cfg, datamodule)
    twin, _ = build_model(compose_cfg("debug=fast", "seed=5"), datamodule)  # the same seeded init, no file
    _check_backbone_from_file_head_from_init(model, twin, source.state_dict(), "net.classifier.2")
    assert "does not fit 10 classes; loaded everything else" in caplog.text


def test_the_cold_start_is_a_named_arm(compose_cfg):
    cold = compose_cfg("experiment=scorers", "scale=cpu", "start=cold")
    validate(cold)
    assert cold.baseline.name == "untrained" and cold.selection.base_size == 0 and cold.optim.lr == 0.002
    warm = compose_cfg("experiment=scorers", "scale=cpu")
    assert warm.baseline.name == "held_back" and warm.selection.base_size == 60 and warm.optim.lr == 0.0001


def test_a_folder_baseline_of_other_classes_is_the_backbone_of_a_folder_run(tmp_path, compose_cfg):
    """baseline=folder: a source tree of three classes starts a run on two, head re-initialised."""
    from tests.test_channels import grey_and_rgb_tree

    source = grey_and_rgb_tree(tmp_path / "source", classes=("a", "b", "c"), per_class=6)
    pool = grey_and_rgb_tree(tmp_path / "pool", classes=("cat", "dog"), per_class=10)
    run = [
        "dataset=folder",
        f"dataset.root={pool}",
        "dataset.image_size=8",
        "dataset.sizes.val=2",
        "dataset.sizes.test=2",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "logger=none",
        "seed=4",
    ]
    args = [
        *run,
        "baseline=folder",
        f"baseline.dataset.root={source}",
        "baseline.epochs=1",
        f"baseline.dir={tmp_path / 'b'}",
    ]
    cfg = compose_cfg(*args)
    validate(cfg)
    datamodule = hydra.utils.instantiate(cfg.dataset)
    make_if_missing(cfg)  # makes the baseline first (what a run does before it builds its model)
    model, _ = build_model(cfg, datamodule)
    path = baseline_path(cfg)
    assert json.loads(path.with_suffix(".json").read_text())["classes"] == ["a", "b", "c"]
    baseline_state = torch.load(path, weights_only=True)["state_dict"]
    twin, _ = build_model(compose_cfg(*run), datamodule)  # the run's seeded init, no baseline
    _check_backbone_from_file_head_from_init(model, twin, baseline_state, "net.classifier.2")

    for bad, message in [
        (f"baseline.dataset.root={pool}", "overlaps dataset.root"),
        (f"baseline.dataset.root={pool / 'cat'}", "overlaps dataset.root"),
        ("baseline.dataset.root=null", "baseline.dataset.root is not set"),
    ]:
        with pytest.raises(UserError, match=message):
            validate(compose_cfg(*args, bad))


def test_a_run_from_its_own_checkpoint_makes_no_baseline(tmp_path, compose_cfg):
    """``model.init.checkpoint`` is the start: a named baseline with make_if_missing is not trained
    for a run that will never load it."""
    file = tmp_path / "start.pt"
    torch.save({"state_dict": _classifier(10).state_dict()}, file)
    baselines = tmp_path / "b"
    cfg = compose_cfg(*TINY, "baseline.make_if_missing=true", f"baseline.dir={baselines}")
    make_if_missing(compose_cfg(*TINY, f"baseline.dir={baselines}", f"model.init.checkpoint={file}"))
    assert not baselines.exists()
    make_if_missing(cfg)  # the same settings without the checkpoint: made
    assert baseline_path(cfg).is_file()
