"""The config tree composes in every combination users name, and bad values fail fast."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from src.config.overrides import check_group_overrides, config_groups
from src.config.resolvers import latest_unfinished_run
from src.config.resolvers import slug as _slug
from src.errors import UserError as ConfigError
from src.tracking import resolve_wandb_mode
from src.validate import validate
from tests.conftest import CONF


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["dataset=v2"],
        ["dataset=mixed"],
        ["dataset=noisy"],
        ["dataset=hard"],
        ["model=resnet18"],
        ["model=vgg16"],
        ["trainer=gpu"],
        ["callbacks=none"],
        ["logger=csv"],
        ["logger=none"],
        ["experiment=pivot", "scale=cpu"],
        ["debug=fast"],
        ["scorer=loss", "selection.base_size=100"],
    ],
)
def test_every_option_composes_and_validates(compose_cfg, overrides):
    cfg = compose_cfg(*overrides)
    validate(cfg)
    assert cfg.run_name.startswith(cfg.scorer.name)


def test_every_scorer_file_names_itself(compose_cfg):
    for option in config_groups()["scorer"]:
        assert compose_cfg(f"scorer={option}").scorer.name == option


def test_dataset_recipes_resolve_their_sources(compose_cfg):
    cfg = compose_cfg("dataset=hard")
    dm = instantiate(cfg.dataset)
    assert [type(s).__name__ for s in dm.sources] == ["UciDigits", "MnistDigits", "FontDigits"]
    assert dm.recipe["pool_repeats"] == 4 and dm.recipe["corruption"]["kind"] == "gaussian_noise"
    assert [type(s).__name__ for s in instantiate(compose_cfg("dataset=v2").dataset).sources] == [
        "MnistDigits"
    ]


def test_run_name_is_a_safe_directory_name(compose_cfg):
    cfg = compose_cfg("selection.budget=[50,100]", "selection.pivot=0.25", "seed=3")
    assert cfg.run_name == "entropy-p0.25-b50_100-base0-s3"
    assert _slug("a/b c") == "a_b_c"


@pytest.mark.parametrize(
    "override,message",
    [
        ("selection.mode=mixed", "selection.mode='mixed'; allowed: accumulate, reselect"),
        (
            "selection.diversity.labels=guess",
            "selection.diversity.labels='guess'; allowed: predicted, ground_truth",
        ),
        ("selection.diversity.k=0", "selection.diversity.k=0 must be a positive integer or null"),
        ("selection.rounds=0", "selection.rounds=0 must be a positive integer or null"),
        ("selection.budget=[10,-5]", "selection.budget=[10, -5] must be a positive integer or a list"),
        ("selection.pivot=-0.1", "selection.pivot=-0.1 is outside [0, 1]"),
        ("dataset.sizes.val=0", "dataset.sizes.val=0 must be an integer >= 1"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 must be an integer >= 1"),
        ("fit.steps_per_epoch=0", "fit.steps_per_epoch=0; allowed: a positive integer, half_pool"),
        ("fit.channels_last=yes", "fit.channels_last='yes'; allowed: true or false"),
        ("callbacks.mode=up", "callbacks.mode='up'; allowed: min (for a loss), max (for an accuracy)"),
        ("callbacks.monitor=train/loss", "callbacks.monitor='train/loss' must be a validation metric"),
        ("logger.mode=sometimes", "logger.mode='sometimes'; allowed: auto, online, offline, disabled"),
        ("model.init.checkpoint=/nonexistent/w.pt", "model.init.checkpoint=/nonexistent/w.pt: no such file"),
        ("progress=maybe", "progress='maybe'; allowed: auto, true, false"),
        ("selection.budget=100", "the rounds select 200 items in total but the pool has only 120"),
    ],
)
def test_invalid_values_name_the_key(compose_cfg, override, message):
    cfg = compose_cfg("debug=fast", "logger=wandb", override)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_group_options_are_caught_before_hydra():
    assert check_group_overrides(["scorer=entropy", "dataset=mixed", "seed=3"]) is None
    assert check_group_overrides(["scorer=entropy,margin", "selection.pivot=0,0.5"]) is None
    msg = check_group_overrides(["scorer=entropy,margn"])
    assert msg.startswith("scorer='margn' is not a known option") and "least_confidence" in msg
    msg = check_group_overrides(["dataset=imagenet"])
    options = sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))  # every option, in order
    assert msg.startswith("dataset='imagenet' is not a known option") and msg.endswith(
        f"allowed: {', '.join(options)}"
    )
    assert check_group_overrides(["+experiment=pivot", "scale=cpu", "hydra/launcher=basic"]) is None


def test_resume_finds_the_newest_unfinished_run(tmp_path):
    for name, files in [
        ("2026-01-01_00-00-00", ["state.json"]),
        ("2026-01-02_00-00-00", ["state.json"]),
        ("2026-01-03_00-00-00", ["state.json", "summary.json"]),
        ("2026-01-04_00-00-00", []),
    ]:
        (tmp_path / name).mkdir()
        for f in files:
            (tmp_path / name / f).write_text("{}")
    assert latest_unfinished_run(tmp_path) == tmp_path / "2026-01-02_00-00-00"
    assert latest_unfinished_run(tmp_path / "missing") is None
    # a run killed during set-up: accepted (its config recorded) but no state yet
    (tmp_path / "2026-01-05_00-00-00" / ".hydra").mkdir(parents=True)
    (tmp_path / "2026-01-05_00-00-00" / ".hydra" / "config.yaml").write_text("seed: 1\n")
    assert latest_unfinished_run(tmp_path) == tmp_path / "2026-01-05_00-00-00"


def test_wandb_mode_auto(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    assert resolve_wandb_mode("offline") == "offline"
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / ".netrc").write_text("machine api.wandb.ai login user password secret\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert resolve_wandb_mode("auto") == "online"
