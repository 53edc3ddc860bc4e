"""A run's saved model rebuilt from the project's conf and the run's overrides, never from the run's code."""
from __future__ import annotations

import json

import hydra
import pytest
import torch

from src.errors import UserError
from src.labelling.trained import MODEL_FILE, load_trained_model, save_trained_model

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


def test_overrides_naming_code_are_refused(tmp_path, compose_cfg):
    _run_dir(tmp_path, compose_cfg)
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- model.module._target_=os.system\n")
    with pytest.raises(UserError, match="names code to instantiate"):
        load_trained_model(tmp_path)


def test_weights_of_another_shape_are_one_line(tmp_path, compose_cfg):
    _run_dir(tmp_path, compose_cfg)
    meta = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**meta, "classes": ["a", "b"]}))   # 2 classes, 3 outputs saved
    with pytest.raises(UserError, match=f"{MODEL_FILE}=.*{MODEL_FILE}: does not fit the model"):
        load_trained_model(tmp_path)
