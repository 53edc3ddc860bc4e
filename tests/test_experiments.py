"""The thesis' experiments as configs: every one composes and validates at both scales
(the thesis' and scale=cpu), the thesis settings are what chapter 4 says, every
documented sweep value composes, and every CPU variant runs end to end in a smoke mode
(one through the real CLI and the report)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from src.experiment.build import build_loop
from src.records import read_records
from src.report import main as report_main
from src.validate import validate
from tests.conftest import CONF, run_cli

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if not p.stem.startswith("_"))
THESIS = ["reshuffle", "train_length", "pivot", "budget", "accumulate", "diversity", "scorers", "base_set"]
SCALES = {"thesis": [], "cpu": ["scale=cpu"]}
# smoke runs: debug=fast sizes plus one non-default value of each experiment's sweep (at scale=cpu)
SMOKE = {
    "reshuffle": ["selection.shuffle=none"],
    "train_length": ["training=fixed_steps", "fit.epochs=2"],
    "pivot": ["selection.pivot=0.5"],
    "budget": ["selection.budget=30"],
    "accumulate": ["selection.mode=reselect"],
    "diversity": ["selection.diversity.enabled=true", "dataset=mixed"],
    "scorers": ["scorer=loss", "dataset=hard"],
    "base_set": ["selection.base_size=60", "scorer=margin"],
}


def compose_in(conf: Path, *overrides: str, hydra_cfg: bool = False):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_cfg)
    finally:
        GlobalHydra.instance().clear()


def sweep_params(name: str, scale: str, conf: Path = CONF) -> dict[str, list[str]]:
    """The experiment's own sweep at ``scale``, as Hydra resolves it (values may come from the scale)."""
    cfg = compose_in(conf, f"experiment={name}", *SCALES[scale], hydra_cfg=True)
    params = cfg.hydra.sweeper.params
    return {k: [v.strip() for v in str(params[k]).split(",")] for k in params}


def test_every_chapter_4_classification_experiment_has_both_variants():
    assert set(THESIS) <= set(EXPERIMENTS)
    for name in THESIS:
        head = (CONF / "experiment" / f"{name}.yaml").read_text()
        # each documents the multirun command that runs it, its CPU scale and the report command that draws it
        assert f"python -m src.run --multirun experiment={name}" in head and "scale=cpu" in head
        assert "python -m src.report" in head


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_validates(name):
    # detection_thesis needs files that are never downloaded here (ImageNet weights in the hub
    # cache, its baseline): tests/test_detection_cli.py checks the one-line errors they give
    offline = (
        ["model.module.weights_backbone=null", "baseline=untrained"] if name == "detection_thesis" else []
    )
    cfg = compose_in(CONF, f"experiment={name}", *offline)
    validate(cfg)
    assert cfg.task_name == name


@pytest.mark.parametrize("name", THESIS)
def test_cpu_scale_is_the_embedded_data_with_its_own_task_name(name):
    cfg = compose_in(CONF, f"experiment={name}", "scale=cpu")
    validate(cfg)
    assert cfg.task_name == f"{name}_cpu" and cfg.source.name == "embedded"
    assert cfg.model.module.net.name == "small_cnn" and cfg.trainer.accelerator == "cpu"
    assert cfg.selection.budget == 60 and cfg.dataset.sizes.val == 300
    # the thesis' regime (5.1): a pretrained start, learned from items kept back from every split
    assert cfg.baseline.name == "held_back" and cfg.dataset.sizes.baseline == 1000
    assert cfg.selection.base_size == (0 if name == "prune" else 60) or name == "base_set"


@pytest.fixture(scope="module")
def stub_conf(tmp_path_factory):
    """The real conf/ tree plus a stand-in `source=imagenet` (the embedded sources under that name)."""
    conf = tmp_path_factory.mktemp("conf") / "conf"
    shutil.copytree(CONF, conf)
    if not (conf / "source" / "imagenet.yaml").exists():
        text = (CONF / "source" / "embedded.yaml").read_text().replace("name: embedded", "name: imagenet")
        (conf / "source" / "imagenet.yaml").write_text(text)
    return conf


@pytest.mark.parametrize("name", THESIS)
def test_thesis_settings(stub_conf, name):
    cfg = compose_in(stub_conf, f"experiment={name}")
    validate(cfg)
    assert cfg.source.name == "imagenet"
    assert cfg.model.module.net.name == "vgg16" and cfg.model.module.net.weights == "IMAGENET1K_V1"
    assert cfg.model.module.input_size == 224 and cfg.dataset.batch_size == 20
    assert dict(cfg.dataset.sizes) == {"pool": 6000, "val": 2000, "test": 2000, "baseline": 0}
    assert cfg.selection.budget == 500 and cfg.trainer.accelerator == "gpu"
    assert cfg.baseline.name is None  # the start is VGG-16's ImageNet weights (thesis 4.2.1)
    assert cfg.callbacks.monitor == "val/loss" and cfg.callbacks.early_stopping.patience in (2, 3)
    if name in ("diversity", "scorers", "base_set"):  # 4.2.3: patience 2, at most 1000 epochs
        assert cfg.callbacks.early_stopping.patience == 2 and cfg.trainer.max_epochs == 1000


def _each_sweep_value(conf: Path, name: str, scale: str):
    for key, values in sweep_params(name, scale, conf).items():
        if key == "seed":
            continue
        for value in values:
            yield [f"experiment={name}", *SCALES[scale], f"{key}={value}"]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", THESIS)
def test_every_documented_sweep_value_composes_and_validates(stub_conf, name, scale):
    for overrides in _each_sweep_value(stub_conf, name, scale):
        cfg = compose_in(stub_conf, *overrides)
        validate(cfg)


def test_the_scale_decides_the_swept_values():
    assert sweep_params("budget", "thesis")["selection.budget"] == ["250", "500", "1000", "1500"]
    assert sweep_params("budget", "cpu")["selection.budget"] == ["30", "60", "120", "200"]
    assert sweep_params("base_set", "cpu")["selection.base_size"] == ["0", "60", "120"]


def test_sweep_values_change_what_they_name(stub_conf):
    fixed = compose_in(stub_conf, "experiment=train_length", "scale=cpu", "training=fixed_steps")
    assert fixed.fit.steps_per_epoch == "half_pool" and fixed.callbacks.early_stopping is None
    assert fixed.run_name == "entropy-fixed_steps-b60-s1"
    acc = compose_in(stub_conf, "experiment=train_length", "training=early_stop_acc")
    assert acc.callbacks.monitor == "val/acc_top1" and acc.callbacks.mode == "max"
    assert acc.fit.steps_per_epoch is None and acc.callbacks.early_stopping.patience == 3
    assert compose_in(stub_conf, "experiment=scorers", "scale=cpu", "dataset=hard").dataset.pool_repeats == 4
    assert compose_in(stub_conf, "experiment=base_set").dataset.name == "mixed"


@pytest.fixture(scope="session")
def shared_baselines(tmp_path_factory) -> Path:
    """One baselines folder for the session's smoke runs (and its xdist workers): a held-back
    baseline of the same settings is made once and reused, as in a user's sweep."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-baselines"


@pytest.mark.parametrize("name", [n for n in THESIS if n != "reshuffle"])
def test_cpu_variant_runs_in_smoke_mode(tmp_path, name, shared_baselines):
    """In process: the composed config through the entry point's own builder and loop."""
    cfg = compose_in(
        CONF,
        f"experiment={name}",
        "scale=cpu",
        "debug=fast",
        "trainer.max_epochs=2",
        *SMOKE[name],
        f"baseline.dir={shared_baselines}",
    )
    validate(cfg)
    run_dir = tmp_path / "run"
    loop = build_loop(cfg, run_dir)
    records = loop.run()
    assert records == read_records(run_dir / "rounds.jsonl") and len(records) == loop.n_rounds >= 2
    assert all(0.0 <= r.metrics["test/acc_top1"] <= 1.0 for r in records)
    if name == "base_set":
        assert records[0].selection == "base" and records[0].n_labelled == 60
    if name == "train_length":
        assert all(r.epochs == 2 for r in records)  # fixed steps: no early stopping


@pytest.mark.slow
def test_cpu_variant_multirun_through_the_cli_then_the_report(tmp_path, shared_baselines):
    """The 'done when' of the issue, in small: multirun an experiment, then report it."""
    sweep = tmp_path / "sweep"
    run_cli(
        "--multirun",
        "experiment=reshuffle",
        "scale=cpu",
        "debug=fast",
        "trainer.max_epochs=2",
        "scorer=entropy",
        "seed=1",
        f"hydra.sweep.dir={sweep}",
        f"baseline.dir={shared_baselines}",
    )
    jobs = sorted(p.name for p in sweep.iterdir() if (p / "summary.json").exists())
    assert len(jobs) == 3  # the config's own sweep: round, epoch, none
    overrides = [yaml.safe_load((sweep / j / ".hydra" / "overrides.yaml").read_text()) for j in jobs]
    assert sorted(o for ov in overrides for o in ov if o.startswith("selection.shuffle")) == [
        "selection.shuffle=epoch",
        "selection.shuffle=none",
        "selection.shuffle=round",
    ]

    # the report's own CLI, in process (its subprocess start-up would only add seconds)
    assert report_main([str(sweep), "--grid-k", "2"]) == 0
    out = sweep / "report"
    md = (out / "report.md").read_text()
    assert all(f"shuffle={mode} (1)" in md for mode in ("round", "epoch", "none"))  # spelled as typed
    for png in (out / "figures").glob("*.png"):
        with Image.open(png) as im:
            im.verify()
    assert (out / "figures" / "selection_00.png").exists() and (out / "report.html").stat().st_size > 10_000


def test_pivot_sweep_holds_its_random_reference_and_both_training_arms(stub_conf):
    """Thesis 4.1.3 in one --multirun: pivots 0..1 and random, fixed epochs (fig. 4.6-4.7) and early
    stopping (fig. 4.8-4.9), every job with its own run name."""
    params = sweep_params("pivot", "cpu", stub_conf)
    jobs = [
        compose_in(stub_conf, "experiment=pivot", "scale=cpu", f"arm={arm}", f"training={training}")
        for arm in params["arm"]
        for training in params["training"]
    ]
    arms = {(c.scorer.name, float(c.selection.pivot)) for c in jobs}
    assert arms == {("entropy", p) for p in (0.0, 0.25, 0.5, 0.75, 1.0)} | {("random", 0.0)}
    fixed = [c for c in jobs if c.training_name == "epochs"]
    assert len(fixed) == 6 and all(c.fit.epochs == 10 and c.callbacks.early_stopping is None for c in fixed)
    stopped = [c for c in jobs if c.training_name == "early_stop_loss"]
    assert len(stopped) == 6 and all(c.fit.epochs is None and c.callbacks.early_stopping for c in stopped)
    assert len({c.run_name for c in jobs}) == 12 and len({c.task_name for c in jobs}) == 1


PRUNE_ARMS = ["whole_set", "loss_p0", "loss_p0.5", "random"]


@pytest.mark.parametrize("scale", SCALES)
def test_prune_sweeps_the_whole_set_against_kept_subsets_of_it(stub_conf, scale):
    """Is more data always better (issue 14): one --multirun, one W&B group, four arms."""
    head = (CONF / "experiment" / "prune.yaml").read_text()
    assert "python -m src.run --multirun experiment=prune" in head and "scale=cpu" in head
    assert "python -m src.report" in head
    params = sweep_params("prune", scale, stub_conf)
    assert params["arm"] == PRUNE_ARMS and params["seed"] == ["1", "2", "3"]
    jobs = {
        arm: compose_in(stub_conf, "experiment=prune", *SCALES[scale], f"arm={arm}") for arm in PRUNE_ARMS
    }
    for cfg in jobs.values():
        validate(cfg)
        assert cfg.selection.mode == "prune" and cfg.selection.base_size == 0 and cfg.dataset.name == "mixed"
        assert cfg.task_name == ("prune_cpu" if scale == "cpu" else "prune")
    assert jobs["whole_set"].selection.rounds == 1 and jobs["whole_set"].selection.fraction == 1
    kept = {
        arm: (c.scorer.name, float(c.selection.pivot), c.selection.fraction, c.selection.rounds)
        for arm, c in jobs.items()
        if arm != "whole_set"
    }
    assert kept == {
        "loss_p0": ("loss", 0.0, 0.5, 2),
        "loss_p0.5": ("loss", 0.5, 0.5, 2),
        "random": ("random", 0.0, 0.5, 2),
    }
    assert len({c.run_name for c in jobs.values()}) == 4
    pool = 600 if scale == "cpu" else 6000
    assert jobs["random"].dataset.sizes.pool == pool
    # another share for the subset arms only
    quarter = {
        arm: compose_in(stub_conf, "experiment=prune", *SCALES[scale], f"arm={arm}", "keep_fraction=0.25")
        for arm in ("random", "whole_set")
    }
    assert quarter["random"].selection.fraction == 0.25 and quarter["whole_set"].selection.fraction == 1


def test_prune_cpu_variant_runs_in_smoke_mode(tmp_path, shared_baselines):
    """In process: a kept half; and debug=fast (which forces 2 rounds) keeps the whole_set arm whole."""
    from src.selection.schedule import plan_selections

    cfg = compose_in(
        CONF,
        "experiment=prune",
        "scale=cpu",
        "debug=fast",
        "trainer.max_epochs=2",
        "arm=loss_p0.5",
        f"baseline.dir={shared_baselines}",
    )
    validate(cfg)
    records = build_loop(cfg, tmp_path / "run").run()
    assert [r.n_labelled for r in records] == [120, 60] and [r.selection for r in records] == ["base", "loss"]
    assert set(records[1].selected_ids) <= set(records[0].selected_ids)
    assert records == read_records(tmp_path / "run" / "rounds.jsonl")
    whole = compose_in(CONF, "experiment=prune", "scale=cpu", "debug=fast", "arm=whole_set").selection
    assert plan_selections(whole.mode, 120, whole.base_size, whole.budget, whole.rounds, whole.fraction) == [
        120
    ]
