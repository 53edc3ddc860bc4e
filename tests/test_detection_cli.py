"""Detection end to end through the real CLI (subprocesses), plus its config checks."""

from __future__ import annotations

import json
import subprocess

import pytest

from src.errors import UserError
from src.experiment.build import build_loop
from src.models.named_baselines import named_baseline_checkpoint
from src.validate import check_pool, validate
from tests.conftest import DETECTION_TINY, REPO, read_jsonl, run_cli, run_module, without_timings

TINY = DETECTION_TINY


def run_pretrain(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = run_module("src.pretrain", *args)
    if check and proc.returncode != 0:
        raise AssertionError(f"src.pretrain failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.mark.slow
def test_two_rounds_on_embedded_scenes_are_recorded_and_reproducible(tmp_path, compose_cfg):
    args = [*TINY, "scorer=entropy", "selection.diversity.enabled=true", "seed=3"]
    proc = run_cli(*args, f"hydra.run.dir={tmp_path / 'a'}")
    records = read_jsonl(tmp_path / "a" / "rounds.jsonl")
    assert [r["n_labelled"] for r in records] == [4, 8]
    for r in records:
        for key in (
            "test/map",
            "test/map_50",
            "test/loss",
            "test/loss_cls",
            "test/loss_box",
            "val/map",
            "val/loss_cls",
            "val/loss_box",
        ):
            assert key in r, key
        assert r["test/loss"] == pytest.approx(r["test/loss_cls"] + r["test/loss_box"], rel=1e-5)
        assert all(0.0 <= s <= 1.0 for s in r["selected_scores"])
    assert any(k.startswith("test/ap/") for k in records[0])
    chosen = records[0]["selected_ids"] + records[1]["selected_ids"]
    assert len(set(chosen)) == 8
    assert "mAP" in proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert "auc/test/map" in summary
    # same seed, same CPU results (the second run in-process: the same build_loop the CLI uses)
    again = build_loop(compose_cfg(*args), tmp_path / "b").run()
    assert without_timings(again) == without_timings(records)


def test_loss_scorer_with_a_base_set_and_ground_truth_diversity(tmp_path, compose_cfg):
    cfg = compose_cfg(
        *TINY,
        "scorer=loss",
        "selection.base_size=4",
        "selection.diversity.enabled=true",
        "selection.diversity.labels=ground_truth",
    )
    records = build_loop(cfg, tmp_path).run()
    assert [r.selection for r in records] == ["base", "loss"]
    scores = records[1].selected_scores
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)  # pivot 0: highest loss first
    assert all(s >= 0 for s in scores)


@pytest.mark.slow
def test_pretrain_a_named_baseline_and_run_from_it(tmp_path, compose_cfg):
    base = [
        f"baseline.dir={tmp_path / 'baselines'}",
        "baseline.epochs=1",
        "baseline.dataset.source.n=8",
        "baseline.dataset.sizes.pool=6",
        "baseline.dataset.sizes.val=2",
    ]
    run_args = [
        *[a for a in TINY if a != "baseline=none"],
        "baseline=synthetic",
        "baseline.make_if_missing=false",
        *base,
    ]
    # (a missing baseline's one-line error with the command that makes it: see the config test below)
    first = run_pretrain(
        "task=detection",
        "baseline=synthetic",
        "dataset.image_size=[96,54]",
        *base,
        f"hydra.run.dir={tmp_path / 'pre1'}",
    )
    weights = named_baseline_checkpoint(compose_cfg(*run_args))
    assert weights.parent == tmp_path / "baselines" and weights.name.startswith("synthetic-")
    meta = json.loads(weights.with_suffix(".json").read_text())
    assert weights.is_file() and meta["name"] == "synthetic" and "val/map" in meta["metrics"]
    stamp = weights.stat().st_mtime_ns
    again = run_pretrain(
        "task=detection",
        "baseline=synthetic",
        "dataset.image_size=[96,54]",
        *base,
        f"hydra.run.dir={tmp_path / 'pre2'}",
    )
    assert "reusing" in again.stdout + again.stderr and weights.stat().st_mtime_ns == stamp
    assert "training" in first.stdout + first.stderr

    # other settings name another file: missing until made, and making it leaves the first one alone
    changed = compose_cfg(*[a for a in run_args if a != "baseline.epochs=1"], "baseline.epochs=2")
    with pytest.raises(UserError, match=r"synthetic-\w+\.pt does not exist; make it with"):
        named_baseline_checkpoint(changed)
    run_pretrain(
        "task=detection",
        "baseline=synthetic",
        "dataset.image_size=[96,54]",
        *[a for a in base if a != "baseline.epochs=1"],
        "baseline.epochs=2",
        f"hydra.run.dir={tmp_path / 'pre3'}",
    )
    other = named_baseline_checkpoint(changed)
    assert other != weights and other.is_file() and weights.stat().st_mtime_ns == stamp
    assert json.loads(other.with_suffix(".json").read_text())["fingerprint"]["baseline"]["epochs"] == 2
    assert named_baseline_checkpoint(compose_cfg(*run_args)) == weights

    run_cli(*run_args, f"hydra.run.dir={tmp_path / 'al'}")
    log_text = (tmp_path / "al" / "run.log").read_text()
    assert f"loading baseline synthetic from {weights}" in log_text
    assert len(read_jsonl(tmp_path / "al" / "rounds.jsonl")) == 2


@pytest.mark.slow
def test_a_broken_annotation_file_is_a_one_line_error(tmp_path):
    (tmp_path / "ann.json").write_text('{"images": [}')
    proc = run_cli(
        "task=detection",
        "dataset=coco",
        f"dataset.source.annotations={tmp_path / 'ann.json'}",
        f"dataset.source.images={tmp_path}",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "ann.json:1:13: not valid JSON" in lines[0]


def test_detection_config_composes_and_bad_values_fail_fast(compose_cfg, tmp_path):
    cfg = compose_cfg("task=detection")
    assert cfg.dataset.name == "scenes" and cfg.model.module.arch == "ssdlite320_mobilenet_v3_large"
    assert cfg.scorer.aggregate == "mean" and cfg.task_name == "detection"
    validate(cfg)
    cfg = compose_cfg("task=detection", "scorer=margin", "dataset=coco", "model=ssd300")
    assert cfg.scorer.name == "margin" and cfg.scorer.top_k == 10 and cfg.dataset.name == "coco"
    validate(cfg)  # pool: null is allowed for datasets on disk
    for overrides, message in [
        (["task=detection", "scorer.aggregate=median"], "scorer.aggregate='median'"),
        (["task=detection", "scorer.top_k=0"], "scorer.top_k=0"),
        (["task=detection", "scorer.score_threshold=2"], "scorer.score_threshold=2"),
        (["task=detection", "model=small_cnn"], "pass task=detection"),
        (["model=ssdlite"], "pass task=detection"),
        (
            ["task=detection", "baseline=real", f"baseline.dir={tmp_path}", "baseline.make_if_missing=false"],
            "python -m src.pretrain task=detection",
        ),
    ]:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            validate(compose_cfg(*overrides))
    validate(compose_cfg("task=detection", "baseline=untrained"))  # no file needed
    validate(compose_cfg())  # classification untouched


def test_a_coco_folder_runs_through_the_loop(tmp_path, compose_cfg):
    """Real files: scenes saved as JPEGs with a COCO file, two classes kept, two renamed."""
    from PIL import Image

    from src.data.detection.scenes import CLASSES, render_scene

    images, anns = [], []
    for i in range(12):
        scene = render_scene(900 + i, "street", 200, 120)
        Image.fromarray(scene.image).save(tmp_path / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 120})
        for (x0, y0, x1, y1), label in zip(scene.boxes.tolist(), scene.labels.tolist()):
            anns.append(
                {"id": len(anns), "image_id": i, "category_id": label + 1, "bbox": [x0, y0, x1 - x0, y1 - y0]}
            )
    (tmp_path / "ann.json").write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)],
            }
        )
    )
    cfg = compose_cfg(
        "task=detection",
        "baseline=none",
        "logger=none",
        "progress=false",
        "selection.budget=4",
        "selection.rounds=2",
        "trainer.max_epochs=1",
        "dataset=coco",
        f"dataset.source.annotations={tmp_path / 'ann.json'}",
        f"dataset.source.images={tmp_path}",
        "dataset.source.classes=[person,car]",
        "dataset.source.class_map={bus: car, truck: car}",
        "dataset.sizes.val=2",
        "dataset.sizes.test=2",
        "dataset.num_workers=0",
        "dataset.image_size=[96,54]",
        "selection.diversity.enabled=true",
    )
    loop = build_loop(cfg, tmp_path / "run")
    assert loop.dm.num_classes == 2 and len(loop.pool_ids) == 8  # pool: null = the rest
    records = loop.run()
    assert [r.n_labelled for r in records] == [4, 8]
    assert set(k for k in records[0].metrics if k.startswith("test/ap/")) <= {"test/ap/person", "test/ap/car"}


def test_a_budget_larger_than_the_pool_is_said_at_start_up(compose_cfg, caplog, tmp_path, monkeypatch):
    from src.validate import budget_capped_notice

    msg = budget_capped_notice(300, 0, 1000, None)
    assert msg.startswith("selection.budget=1000 is larger than the 300 pool items") and "1 round(s)" in msg
    assert "2 round(s)" in budget_capped_notice(300, 20, 1000, None)
    assert budget_capped_notice(300, 20, 1000, None).startswith(
        "selection.budget=1000 is larger than the 280"
    )
    assert budget_capped_notice(300, 0, 300, None) is None  # exactly the pool: one full round, as asked
    assert budget_capped_notice(300, 0, 1000, 3) is None  # explicit rounds: plan_budgets refuses
    assert budget_capped_notice(300, 0, [100, 900], None) is None  # a list: plan_budgets refuses
    # the thesis experiment on the embedded pool (its weights and baseline set aside for this check)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = compose_cfg(
        "experiment=detection_thesis", "baseline=untrained", "model.module.weights_backbone=null"
    )
    with caplog.at_level("WARNING", logger="src.validate"):
        validate(cfg)  # the declared pool: no line yet
        assert not caplog.records
        check_pool(cfg, 300)  # the real pool, at start-up
    assert [r.getMessage() for r in caplog.records] == [budget_capped_notice(300, 0, 1000, None)]
    with pytest.raises(UserError, match="select 1300 items in total but the pool has only 300"):
        check_pool(compose_cfg(*TINY, "selection.budget=[1000,300]", "selection.rounds=null"), 300)


def test_thesis_detection_settings_and_its_pretrained_start(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = compose_cfg("experiment=detection_thesis")
    m = cfg.model.module
    assert m.arch == "ssd300_vgg16" and m.weights_backbone == "imagenet" and list(m.input_size) == [512, 288]
    assert m.optimizer.lr == 0.001 and m.scheduler is None
    assert cfg.dataset.batch_size == 20 and cfg.selection.budget == 1000 and cfg.trainer.max_epochs == 100
    assert cfg.callbacks.monitor == "val/loss" and cfg.callbacks.early_stopping.patience == 3
    # 4.3.3: baselines of about 10,000 images trained 25 epochs, for real and synthetic alike
    for name in ("real", "synthetic"):
        b = compose_cfg("experiment=detection_thesis", f"baseline={name}").baseline
        assert b.name == name and b.epochs == 25 and b.dataset.sizes.pool == 10000
        assert b.dataset.source.n >= 10000 and list(b.dataset.image_size) == [512, 288]
        assert b.dir == "baselines/thesis" and not b.make_if_missing and b.optimizer is None
    # no ImageNet file in this (empty) hub cache: one line naming it, before any data
    with pytest.raises(
        UserError, match="vgg16_features-amdegroot-88682ab5.pth .* is not in the torch hub cache"
    ):
        validate(cfg)


def test_detection_baselines_experiment_sweeps_seeds():
    import yaml

    params = yaml.safe_load((REPO / "conf" / "experiment" / "detection_baselines.yaml").read_text())
    sweep = params["hydra"]["sweeper"]["params"]
    assert len(str(sweep["seed"]).split(",")) >= 3
    assert set(str(sweep["baseline"]).split(",")) == {"real", "synthetic", "untrained"}


@pytest.mark.slow
def test_thesis_pretrain_without_imagenet_weights_stops_before_any_data(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    proc = run_pretrain(
        "experiment=detection_thesis",
        f"baseline.dir={tmp_path / 'bl'}",
        f"hydra.run.dir={tmp_path / 'pre'}",
        check=False,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "vgg16_features-amdegroot-88682ab5.pth" in lines[0]
    assert "weights_backbone=null" in lines[0]
    assert not (tmp_path / "bl").exists() and not (tmp_path / "hub").exists()
