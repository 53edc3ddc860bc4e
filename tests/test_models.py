"""Classification module, networks, baseline weights and the best-weights callback."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from src.errors import UserError
from src.loop.callbacks import RestoreBestWeights
from src.models.backbones import build_network
from src.models.classifier import ImageClassifier, topk_values
from src.models.weights import WeightSnapshot, load_checkpoint_state, load_into


def make_classifier(name="small_cnn", num_classes=10, in_channels=1, **kw):
    return ImageClassifier(
        num_classes=num_classes,
        in_channels=in_channels,
        net={"name": name, "weights": None},
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        **kw,
    )


@pytest.mark.parametrize("name,input_size", [("small_cnn", None), ("resnet18", 32), ("vgg16", 32)])
def test_networks_take_uint8_grey_images(name, input_size):
    model = make_classifier(
        name,
        num_classes=7,
        input_size=input_size,
        **(
            {}
            if name == "small_cnn"
            else {"input_mean": [0.485, 0.456, 0.406], "input_std": [0.229, 0.224, 0.225]}
        ),
    )
    model.eval()
    x = torch.randint(0, 256, (3, 1, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, 7) and torch.isfinite(out).all()


def test_preprocessing_scales_and_normalises():
    model = make_classifier(input_mean=[0.5], input_std=[0.25])
    x = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)
    expected = (torch.tensor([[[[0.0, 1.0], [0.2, 0.4]]]]) - 0.5) / 0.25
    torch.testing.assert_close(model.preprocess(x), expected)


def test_topk_follows_the_class_count():
    assert topk_values(2) == [1]
    assert topk_values(10) == [1, 5]
    assert topk_values(1000) == [1, 5, 20]


def test_unknown_network_and_weights_name_the_key():
    with pytest.raises(UserError, match="model.module.net.name='resnet99'"):
        build_network("resnet99", 10, 1)
    with pytest.raises(UserError, match="model.module.net.weights='IMAGENET9'.*IMAGENET1K_V1"):
        build_network("resnet18", 10, 1, weights="IMAGENET9")


def test_torchvision_weights_load_from_the_hub_cache_and_get_a_new_head(tmp_path, monkeypatch):
    import torchvision

    # a stand-in for the published file, placed where torchvision looks before downloading
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    torch.manual_seed(0)
    published = torchvision.models.resnet18()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(published.state_dict(), cache / weights.url.rsplit("/", 1)[-1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net = build_network("resnet18", 10, 3, weights="IMAGENET1K_V1")
    assert net.fc.out_features == 10
    assert torch.equal(net.conv1.weight, published.conv1.weight)
    assert torch.equal(net.layer4[1].bn2.running_var, published.layer4[1].bn2.running_var)


def test_checkpoint_baseline_plain_and_lightning_formats(tmp_path):
    source = make_classifier()
    plain, ckpt = tmp_path / "w.pt", tmp_path / "w.ckpt"
    torch.save(source.state_dict(), plain)
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, ckpt)
    for path in (plain, ckpt):
        torch.manual_seed(123)
        target = make_classifier()
        load_into(target, path)
        for key, value in source.state_dict().items():
            assert torch.equal(target.state_dict()[key], value), key


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="model.init.checkpoint=.*missing.pt"):
        load_checkpoint_state(tmp_path / "missing.pt", "model.init.checkpoint")
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(UserError, match="model.init.checkpoint=.*bad.pt: not a readable torch weights file"):
        load_checkpoint_state(bad, "model.init.checkpoint")
    other = tmp_path / "other.pt"
    torch.save(make_classifier(num_classes=3).state_dict(), other)
    with pytest.raises(UserError, match="does not fit the model"):
        load_into(make_classifier(num_classes=10), other)


def test_restore_puts_the_snapshot_back_bitwise_after_training():
    torch.manual_seed(0)
    model = make_classifier()
    snapshot = copy.deepcopy(model.state_dict())
    baseline = WeightSnapshot(model)
    # train a few steps: weights and BatchNorm running statistics move
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for _ in range(3):
        x = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8)
        loss = nn.functional.cross_entropy(model(x), torch.randint(0, 10, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, snapshot[k])]
    assert any("running_mean" in k for k in moved) and any("weight" in k for k in moved)
    params_before = [id(p) for p in model.parameters()]
    baseline.restore(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshot[key]), key
    assert [id(p) for p in model.parameters()] == params_before  # in place, no new tensors


class ScriptedModule(pl.LightningModule):
    """Weight w is set to the epoch number in each epoch; val/loss follows a script."""

    def __init__(self, val_losses):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.val_losses = val_losses

    def training_step(self, batch, batch_idx):
        with torch.no_grad():
            self.w.fill_(float(self.current_epoch))
        return (self.w * 0.0).sum() + torch.zeros((), requires_grad=True)

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", float(self.val_losses[self.current_epoch]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=2)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=2)


def _fit(module, callbacks, max_epochs):
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module)
    return trainer


def test_restore_best_weights_loads_the_best_epoch():
    module = ScriptedModule([3.0, 1.0, 2.0, 4.0])
    restore = RestoreBestWeights("val/loss", "min")
    trainer = _fit(module, [restore], max_epochs=4)
    assert trainer.current_epoch == 4
    assert restore.best_epoch == 1 and restore.best_value == 1.0
    assert module.w.item() == 1.0  # the weights of epoch 1, not of the last epoch (3)


def test_early_stopping_with_patience_then_best_weights():
    from pytorch_lightning.callbacks import EarlyStopping

    module = ScriptedModule([5.0, 2.0, 3.0, 4.0, 1.0, 0.5])
    restore = RestoreBestWeights("val/loss", "min")
    stop = EarlyStopping("val/loss", patience=2, mode="min", check_on_train_epoch_end=False)
    trainer = _fit(module, [stop, restore], max_epochs=6)
    # epochs 0..3 ran: no improvement in 2 and 3 -> stopped; epoch 4's better value is never seen
    assert trainer.current_epoch == 4
    assert module.w.item() == 1.0 and restore.best_value == 2.0


def test_restore_best_in_max_mode():
    module = ScriptedModule([0.1, 0.9, 0.5])  # read as an accuracy
    restore = RestoreBestWeights("val/loss", "max")
    _fit(module, [restore], max_epochs=3)
    assert module.w.item() == 1.0
