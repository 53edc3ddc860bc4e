"""The thesis' configuration: source=imagenet composes to the thesis sizes and VGG-16 with
torchvision's ImageNet weights, which load from the hub cache or a local file, never a
download in tests."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from src.errors import UserError
from src.models.backbones import build_network
from src.validate import check_pool, validate


@pytest.mark.parametrize("recipe, pool", [("v2", 6000), ("mixed", 6000), ("noisy", 6000), ("hard", 24000)])
def test_source_imagenet_gives_the_thesis_sizes_for_every_recipe(compose_cfg, recipe, pool):
    cfg = compose_cfg(f"dataset={recipe}", "source=imagenet", "paths.data_dir=/data/in")
    validate(cfg)
    check_pool(cfg, pool)
    assert dict(cfg.dataset.sizes) == {"pool": 6000, "val": 2000, "test": 2000, "baseline": 0}
    assert (cfg.dataset.image_size, cfg.dataset.channels) == (224, 3)
    dm = instantiate(cfg.dataset)
    names = [type(s).__name__ for s in dm.sources]
    assert names == (["ImageNetV2"] if recipe == "v2" else ["ImageNetV2", "ImageNetR", "ImageNetA"])
    assert str(dm.sources[0].root) == "/data/in/imagenetv2-matched-frequency-format-val"
    assert str(dm.sources[0].cache_dir) == "/data/in/cache"
    assert (dm.sources[0].image_size, dm.sources[0].resize_size) == (224, 256)
    # the embedded default keeps its own sizes, and overrides still win
    assert compose_cfg(f"dataset={recipe}").dataset.sizes.pool == 3000
    assert (
        compose_cfg(f"dataset={recipe}", "source=imagenet", "dataset.sizes.pool=500").dataset.sizes.pool
        == 500
    )


def test_vgg16_with_source_imagenet_uses_the_weights_own_preprocessing(compose_cfg):
    import torchvision

    cfg = compose_cfg("dataset=mixed", "source=imagenet", "model=vgg16")
    weights = torchvision.models.VGG16_Weights[cfg.model.module.net.weights]
    preset = weights.transforms()
    assert weights is torchvision.models.VGG16_Weights.IMAGENET1K_V1
    assert cfg.model.module.input_size == preset.crop_size[0] == cfg.source.image_size
    assert cfg.source.resize_size == preset.resize_size[0]
    assert list(cfg.model.module.input_mean) == list(preset.mean)
    assert list(cfg.model.module.input_std) == list(preset.std)
    assert compose_cfg("model=vgg16").model.module.net.weights is None  # digits: random init


@pytest.fixture(scope="module")
def fake_vgg16_weights(tmp_path_factory):
    """A stand-in for torchvision's published VGG-16 file, under the name torchvision looks for."""
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    target = (
        home / "hub" / "checkpoints" / torchvision.models.VGG16_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    )
    target.parent.mkdir(parents=True)
    torch.manual_seed(0)
    published = torchvision.models.vgg16()
    torch.save(published.state_dict(), target)
    return home, target, published


def test_vgg16_imagenet_weights_from_the_hub_cache_or_a_local_file(fake_vgg16_weights, tmp_path, monkeypatch):
    home, target, published = fake_vgg16_weights
    monkeypatch.setenv("TORCH_HOME", str(home))
    from_hub = build_network("vgg16", 1000, 3, weights="IMAGENET1K_V1", download=False)
    assert from_hub.classifier[-1].out_features == 1000  # the weights' own head is kept
    assert torch.equal(from_hub.classifier[-1].weight, published.classifier[-1].weight)
    assert torch.equal(from_hub.features[0].weight, published.features[0].weight)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # nothing cached: the file is the only way
    from_file = build_network(
        "vgg16", 1000, 3, weights="IMAGENET1K_V1", weights_file=str(target), download=False
    )
    assert torch.equal(from_file.features[28].weight, published.features[28].weight)


def test_vgg16_weights_missing_everywhere_name_both_options(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError) as err:
        build_network("vgg16", 1000, 3, weights="IMAGENET1K_V1", download=False)
    message = str(err.value)
    assert "vgg16-397923af.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "download.pytorch.org" in message and "model.module.net.weights_file=" in message
    with pytest.raises(UserError, match=r"weights_file=.*nope\.pth: no such file"):
        build_network("vgg16", 1000, 3, weights="IMAGENET1K_V1", weights_file=str(tmp_path / "nope.pth"))
