"""A saved model rebuilt from the project's conf and the run's overrides, never from the input's code; named by
its run directory or by its weights file (checkpoint=)."""

from __future__ import annotations

import json

import hydra
import pytest
import torch

from src.errors import UserError
from src.labelling.trained import (
    MODEL_FILE,
    load_saved_model,
    load_trained_model,
    save_trained_model,
    saved_model,
)

OVERRIDES = ["debug=fast", "model=small_cnn"]


def _run_dir(tmp_path, compose_cfg, overrides=OVERRIDES, classes=("a", "b", "c")):
    cfg = compose_cfg(*overrides)
    torch.manual_seed(1)
    model = hydra.utils.instantiate(cfg.model.module, num_classes=len(classes), in_channels=1)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    save_trained_model(tmp_path, model, "classification", classes, channels=1)
    return model


def test_saved_model_comes_back_with_the_same_weights(tmp_path, compose_cfg):
    model = _run_dir(tmp_path, compose_cfg)
    loaded, cfg, meta = load_trained_model(tmp_path)
    assert meta == {"task": "classification", "classes": ["a", "b", "c"], "channels": 1}
    assert not loaded.training and cfg.model.module._target_ == "src.models.classifier.ImageClassifier"
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)


def test_a_run_without_saved_weights_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no saved model .*train it with save_model=true"):
        load_trained_model(tmp_path)


@pytest.mark.parametrize(
    "override",
    ["model.module._target_=os.system", "'model.module.optimizer={_target_: os.system, command: ls}'"],
)
def test_overrides_naming_code_are_refused(tmp_path, compose_cfg, override):
    _run_dir(tmp_path, compose_cfg)
    (tmp_path / ".hydra" / "overrides.yaml").write_text(f"- {override}\n")
    with pytest.raises(UserError, match="names code to instantiate"):
        load_trained_model(tmp_path)


def test_weights_of_another_shape_are_one_line(tmp_path, compose_cfg):
    _run_dir(tmp_path, compose_cfg)
    meta = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(
        json.dumps({**meta, "classes": ["a", "b"]})
    )  # 2 classes, 3 outputs saved
    with pytest.raises(UserError, match=f"{MODEL_FILE}=.*{MODEL_FILE}: does not fit the model"):
        load_trained_model(tmp_path)


# -- checkpoint=: the weights file and the JSON saved with it, without the run directory ---------------
def _copied_checkpoint(tmp_path, compose_cfg, overrides=OVERRIDES):
    run = tmp_path / "run"
    run.mkdir()
    cfg = compose_cfg(*overrides)
    torch.manual_seed(2)
    model = hydra.utils.instantiate(cfg.model.module, num_classes=3, in_channels=1)
    save_trained_model(run, model, "classification", ("a", "b", "c"), channels=1, overrides=overrides)
    (tmp_path / "shelf").mkdir()
    (run / MODEL_FILE).rename(tmp_path / "shelf" / "digits-v2.pt")
    (run / "model.json").rename(tmp_path / "shelf" / "digits-v2.json")
    return model, tmp_path / "shelf" / "digits-v2.pt"


def test_a_checkpoint_renamed_with_its_json_is_rebuilt_without_its_run(tmp_path, compose_cfg):
    model, weights = _copied_checkpoint(tmp_path, compose_cfg)
    saved = saved_model(checkpoint=weights)
    assert saved.overrides == OVERRIDES and saved.folder == weights.parent
    assert saved.meta["overrides"] == OVERRIDES
    loaded, cfg, _ = load_saved_model(saved)
    assert cfg.model.module._target_ == "src.models.classifier.ImageClassifier"
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_run_directorys_model_pt_named_as_checkpoint_reads_the_runs_overrides(tmp_path, compose_cfg):
    _run_dir(tmp_path, compose_cfg)  # model.json without overrides (saved before they were recorded)
    saved = saved_model(checkpoint=tmp_path / MODEL_FILE)
    assert saved.overrides == OVERRIDES and saved.folder == tmp_path


@pytest.mark.parametrize(
    "case, message",
    [
        ("no json", "checkpoint=.*digits-v2.pt: no digits-v2.json beside it"),
        ("no overrides", "digits-v2.json records no overrides and .* is not a run directory"),
        ("code", "digits-v2.json: override 'model.module._target_=os.system' names code to instantiate"),
        ("folder", "checkpoint=.*shelf: a folder; name its run directory with run_dir="),
        ("both", "name the model with run_dir=<run directory> or checkpoint=<model.pt>, one of the two"),
        ("neither", "name the model with run_dir=<run directory> or checkpoint=<model.pt>, one of the two"),
    ],
)
def test_checkpoint_mistakes_are_one_line(tmp_path, compose_cfg, case, message):
    _, weights = _copied_checkpoint(tmp_path, compose_cfg)
    meta_file = weights.with_suffix(".json")
    meta = json.loads(meta_file.read_text())
    args = {"checkpoint": weights}
    if case == "no json":
        meta_file.unlink()
    elif case == "no overrides":
        meta_file.write_text(json.dumps({k: v for k, v in meta.items() if k != "overrides"}))
    elif case == "code":
        meta_file.write_text(json.dumps({**meta, "overrides": ["model.module._target_=os.system"]}))
    elif case == "folder":
        args = {"checkpoint": weights.parent}
    elif case == "both":
        args = {"checkpoint": weights, "run_dir": tmp_path}
    elif case == "neither":
        args = {}
    with pytest.raises(UserError, match=message):
        saved_model(**args)


def test_a_scorers_attached_module_is_left_out_so_the_network_is_rebuilt(tmp_path, compose_cfg):
    # scorer=learning_loss attaches model.loss_prediction; save_model must keep only what the config builds
    import types

    import numpy as np

    from src.selection.scorers import get_scorer

    model = _run_dir(tmp_path, compose_cfg)
    scorer = get_scorer("learning_loss")
    images = torch.zeros(2, 1, 16, 16)
    pool = types.SimpleNamespace(pool_ids=np.arange(2), pool_dataloader=lambda ids: [(images, None, None)])
    scorer.prepare_model(model, pool)
    assert all(hasattr(model, name) for name in scorer.attached) and scorer.attached
    save_trained_model(
        tmp_path, model, "classification", ("a", "b", "c"), channels=1, leave_out=scorer.attached
    )
    loaded, _, _ = load_trained_model(tmp_path)
    assert (
        loaded.state_dict().keys()
        == {k: 0 for k in model.state_dict() if not k.startswith("loss_prediction.")}.keys()
    )
