"""model=timm: any timm classification model by name, its own preprocessing, weights only from a local cache."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from src.config.instantiate import build
from src.errors import UserError
from src.experiment.build import build_loop, build_model

NET = "test_resnet"  # a tiny timm model (a few hundred thousand parameters)


def timm_cfg(compose_cfg, *overrides):
    return compose_cfg("debug=fast", "model=timm", f"model.module.net.name={NET}", *overrides)


def test_random_init_with_the_models_own_preprocessing(compose_cfg):
    cfg = timm_cfg(compose_cfg)
    dm = build(cfg.dataset)
    model, _ = build_model(cfg, dm)
    own = timm.models.get_pretrained_cfg(NET)
    assert type(model.net).__name__ == "ResNet" and model.net.get_classifier().out_features == 10
    assert model.input_size == own.input_size[-1]
    assert model.mean.flatten().tolist() == pytest.approx(list(own.mean))
    assert model.std.flatten().tolist() == pytest.approx(list(own.std))


def test_pretrained_reads_the_hub_cache_only(compose_cfg, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    cfg = timm_cfg(compose_cfg, "model.module.net.pretrained=true")
    dm = build(cfg.dataset)
    with pytest.raises(
        UserError, match=r"pretrained=true: no cached weights of test_resnet in the Hugging Face"
    ):
        build_model(cfg, dm)
    # a file in the cache's layout (refs/main -> snapshots/<revision>/model.safetensors) is what loads
    torch.manual_seed(123)
    source = timm.create_model(NET, pretrained=False)
    repo = tmp_path / f"models--{timm.models.get_pretrained_cfg(NET).hf_hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()},
        str(repo / "snapshots" / "abc123" / "model.safetensors"),
    )
    model, _ = build_model(cfg, dm)
    loaded, saved = model.net.state_dict(), source.state_dict()
    head = timm.models.get_pretrained_cfg(NET).classifier
    body = [k for k in saved if not k.startswith(head)]
    assert body and all(torch.equal(loaded[k], saved[k]) for k in body)
    assert model.net.get_classifier().out_features == 10  # the head replaced for the run's classes


def test_not_a_timm_model_is_one_line(compose_cfg):
    cfg = compose_cfg("debug=fast", "model=timm", "model.module.net.name=convnxt_tiny")
    with pytest.raises(UserError, match="model.module.net.name='convnxt_tiny' is not a timm model"):
        build_model(cfg, build(cfg.dataset))


def test_the_loop_runs_on_a_timm_model(compose_cfg, tmp_path):
    cfg = timm_cfg(compose_cfg, "model.module.input_size=32", "trainer.max_epochs=1")
    records = build_loop(cfg, tmp_path / "run").run()
    assert [r.n_labelled for r in records] == [20, 40] and all(r.epochs == 1 for r in records)
