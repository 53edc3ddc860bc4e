"""Learned loss and MC dropout for SSD detection, against independent computations.

The per-image SSD loss against torchvision's own ``compute_loss`` (batch and batch of one);
the joint objective against the paper's pair ranking loss by hand; the per-anchor BALD and
MC entropy of the MC-dropout head against baal's heuristics on the stacked passes, and the
per-image aggregation by hand; the dropout masks seeded; both scorers end to end through
the CLI, the learned loss also killed after a round and resumed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from baal.active.heuristics import BALD as BaalBALD
from baal.active.heuristics import Entropy as BaalEntropy

from src import records as records_module
from src.experiment.build import build_loop
from src.models.detector import SSDDetector, ssd_loss_terms
from src.models.mc_dropout import mc_dropout_mode
from src.selection import detection_scorers as ds
from src.selection.learning_loss import learning_loss_objective
from src.selection.mc_dropout_scorer import MCDropoutScorer
from src.selection.scorers import get_scorer
from src.tasks import detection
from tests.conftest import DETECTION_TINY, read_jsonl, run_cli, without_timings

SIZE = (128, 72)
CLASSES = 6  # + background: K = 7 columns


def detector() -> SSDDetector:
    """An SSDLite whose untrained convolutions are re-drawn (He init), so its activations and
    class distributions are far from uniform, as a trained detector's are."""
    torch.manual_seed(0)
    model = SSDDetector(num_classes=CLASSES, input_size=SIZE).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight)
    return model


@pytest.fixture(scope="module")
def batch(tiny_scenes):
    images, targets, ids = next(iter(tiny_scenes.pool_dataloader(tiny_scenes.pool_ids[:4])))
    targets[2] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}  # nothing to find
    return images, targets, ids


# -- the per-image SSD loss -------------------------------------------------------------------------
def test_per_image_ssd_losses_add_up_to_torchvisions_batch_loss(batch):
    model = detector()
    images, targets, _ = batch
    with torch.no_grad():
        _, tgts, head, anchors, _ = model.forward_parts(images, targets)
        matched = model._matches(tgts, anchors)
        cls, box, positives = ssd_loss_terms(
            head["cls_logits"],
            head["bbox_regression"],
            anchors,
            tgts,
            matched,
            model.net.box_coder,
            model.net.neg_to_pos_ratio,
        )
        whole = model.net.compute_loss(tgts, head, anchors, matched)  # torchvision's batch loss
        alone = [
            model.net.compute_loss(
                [tgts[i]], {k: v[i : i + 1] for k, v in head.items()}, [anchors[i]], [matched[i]]
            )
            for i in range(4)
        ]
        per_image = model.per_image_losses(tgts, head, anchors)
    assert positives[2] == 0 and (positives[[0, 1, 3]] > 0).all()
    n = float(positives.sum())
    assert float(cls.sum()) / n == pytest.approx(float(whole["classification"]), rel=1e-5)
    assert float(box.sum()) / n == pytest.approx(float(whole["bbox_regression"]), rel=1e-5)
    # each image's own loss (its sums over its own positives) is torchvision's loss of it as a batch of one,
    # and weighted by the positives these average to the batch loss
    for i in range(4):
        assert float(per_image[i]) == pytest.approx(
            float(alone[i]["classification"] + alone[i]["bbox_regression"]), rel=1e-5, abs=1e-6
        )
    assert float((per_image * positives).sum()) / n == pytest.approx(
        float(whole["classification"] + whole["bbox_regression"]), rel=1e-5
    )
    assert float(per_image[2]) == 0.0


def test_training_step_feeds_the_objective_torchvisions_loss_and_the_per_image_losses(batch):
    model = detector()
    seen = {}

    def spy(module, per_image, batch_loss):
        seen.update(per_image=per_image.detach(), batch_loss=batch_loss.detach())
        return batch_loss

    model.training_objective = spy
    images, targets, _ = batch
    model.train()
    for m in model.modules():  # BatchNorm in eval: both passes see the same network
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    returned = model.training_step(batch, 0)
    with torch.no_grad():
        imgs, tgts = model._inputs(images, targets)
        own = model.net(imgs, tgts)  # torchvision's own training forward
    assert float(returned.detach()) == pytest.approx(
        float(own["classification"] + own["bbox_regression"]), rel=1e-5
    )
    assert seen["per_image"].shape == (4,) and float(seen["per_image"][2]) == 0.0


# -- the learned loss -------------------------------------------------------------------------------
def test_objective_with_the_models_batch_loss_is_it_plus_the_papers_pair_ranking_by_hand():
    per_image = torch.tensor([2.0, 0.5, 1.0, 3.0])
    predicted = torch.tensor([0.3, 0.9, 0.2, 0.1])
    # pairs (0, 3), (1, 2); A = +1 if l_i > l_j else -1; max(0, -A (lhat_i - lhat_j) + 1)
    # (0, 3): A = -1 -> max(0, 0.2 + 1) = 1.2; (1, 2): A = -1 -> max(0, 0.7 + 1) = 1.7; mean 1.45
    total = learning_loss_objective(
        per_image, predicted, weight=0.5, margin=1.0, target_loss=torch.tensor(1.7)
    )
    assert float(total) == pytest.approx(1.7 + 0.5 * 1.45)
    # without the model's own batch loss, the paper's mean over the batch: 6.5 / 4
    assert float(learning_loss_objective(per_image, predicted, 0.5)) == pytest.approx(6.5 / 4 + 0.5 * 1.45)


def test_learning_loss_taps_the_six_ssd_maps_and_trains_with_the_detector(tiny_scenes, batch):
    model = detector()
    scorer = get_scorer("learning_loss")
    scorer.prepare_model(model, tiny_scenes)
    assert len(scorer.taps.maps) == 6 and "loss_prediction" in dict(model.named_children())
    assert any(k.startswith("loss_prediction.") for k in model.state_dict())  # restored with the weights
    model.train()
    loss = model.training_step(batch, 0)
    with torch.no_grad():
        _, tgts, head, anchors, _ = model.forward_parts(batch[0], batch[1])
        per_image = model.per_image_losses(tgts, head, anchors)
        cls = model.losses(tgts, head, anchors)
    predicted = model.loss_prediction(scorer.taps.maps).detach()
    hinge = [
        max(0.0, 1.0 - (1 if per_image[i] > per_image[j] else -1) * float(predicted[i] - predicted[j]))
        for i, j in ((0, 3), (1, 2))
    ]
    expected = float(cls["classification"] + cls["bbox_regression"]) + sum(hinge) / 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4)
    loss.backward()  # the module learns, and its gradient reaches the backbone
    assert model.loss_prediction.head.weight.grad.abs().sum() > 0
    model.eval()
    with torch.inference_mode():
        scores, _ = detection.score_batch(model, batch, scorer, want_classes=False)
        np.testing.assert_array_equal(
            scores.numpy(), model.loss_prediction(scorer.taps.maps).double().numpy()
        )


# -- MC dropout over the classification head ----------------------------------------------------------
def mc_passes(model, images, passes: int, seed: int):
    """Reference: every pass's [B, A, K] softmax stacked ([T, B, A, K]), the dropout masks drawn by
    hand (F.dropout on each feature map, in order) and the head run without its own dropout."""
    torch.manual_seed(seed)
    imgs, _ = model._inputs(images, None)
    batch_t, _ = model.net.transform(imgs, None)
    features = list(model.net.backbone(batch_t.tensors).values())
    anchors = model.net.anchor_generator(batch_t, features)
    regression = model.net.head.regression_head(features)
    head, p = model.net.head.classification_head, model.net.head.classification_head.mc_dropout.p
    passes_out = []
    for _ in range(passes):
        dropped = [F.dropout(f, p, training=True) for f in features]
        passes_out.append(torch.softmax(head(dropped), dim=-1))  # eval: the head's own dropout is off
    boxes = [model.net.box_coder.decode_single(regression[i], anchors[i]) for i in range(len(imgs))]
    return torch.stack(passes_out), boxes, batch_t.image_sizes


def test_mc_dropout_per_anchor_bald_and_entropy_equal_baal_and_aggregate_by_hand(tiny_scenes, batch):
    from torchvision.ops import clip_boxes_to_image

    model = detector()
    MCDropoutScorer("bald", passes=4, dropout=0.3).prepare_model(model, tiny_scenes)
    assert set(model.state_dict()) == set(detector().state_dict())  # the dropout adds no weights
    images = batch[0]
    with torch.inference_mode():
        probs, boxes, sizes = mc_passes(model, images, 4, seed=11)
        torch.manual_seed(11)
        kept = detection.mc_pool_outputs(model, batch, 4, top_k=5, score_threshold=0.0)
        outputs = detection.DetectorOutputs(
            model, batch, frozenset(), top_k=5, score_threshold=0.0, aggregate="max"
        )
        torch.manual_seed(11)
        bald_max = outputs.mc_uncertainty("bald", 4)
        torch.manual_seed(11)
        outputs.aggregate = "mean"
        entropy_mean = outputs.mc_uncertainty("mc_entropy", 4)
    assert not torch.allclose(probs[0], probs[1])  # the passes differ
    k = probs.shape[-1]
    expected_bald, expected_entropy = [], []
    for i, (mean_probs, mean_entropy) in enumerate(kept):
        keep = ds.top_detections(probs[:, i].mean(0), clip_boxes_to_image(boxes[i], sizes[i]), 5, 0.0, 0.5)
        assert 0 < len(keep) <= 5
        np.testing.assert_allclose(
            mean_probs.numpy(), probs[:, i, keep].mean(0).numpy(), rtol=1e-5, atol=1e-7
        )
        baal_layout = probs[:, i, keep].permute(1, 2, 0).double().numpy()  # [D, K, T]
        per_box_bald = BaalBALD().compute_score(baal_layout) / math.log(k)
        per_box_entropy = BaalEntropy().compute_score(baal_layout) / math.log(k)
        from src.selection.bald import OF_MOMENTS

        np.testing.assert_allclose(
            OF_MOMENTS["bald"](mean_probs, mean_entropy).numpy(), per_box_bald, atol=2e-6
        )
        np.testing.assert_allclose(OF_MOMENTS["mc_entropy"](mean_probs).numpy(), per_box_entropy, atol=2e-6)
        expected_bald.append(per_box_bald.max())  # aggregate=max
        expected_entropy.append(per_box_entropy.mean())  # aggregate=mean
    np.testing.assert_allclose(bald_max.numpy(), expected_bald, atol=2e-6)
    np.testing.assert_allclose(entropy_mean.numpy(), expected_entropy, atol=2e-6)
    with torch.inference_mode():  # no detection above the threshold -> the maximal score 1, as for entropy
        none = detection.DetectorOutputs(model, batch, frozenset(), score_threshold=1.0).mc_uncertainty(
            "bald", 2
        )
    assert none.tolist() == [1.0] * 4


def test_mc_dropout_scores_are_seeded_and_refusals_are_one_line(tiny_scenes, batch):
    from src.errors import UserError

    model = detector()
    scorer = MCDropoutScorer("bald", passes=3, dropout=0.3)
    with pytest.raises(UserError, match=r"set scorer.dropout=<p>.*before its classification head"):
        MCDropoutScorer("bald", passes=3).prepare_model(detector(), tiny_scenes)
    scorer.prepare_model(model, tiny_scenes)

    def scores(seed):
        with torch.inference_mode(), scorer.pool_context(model, seed):
            return detection.score_batch(model, batch, scorer, want_classes=True, score_threshold=0.0)

    first, classes = scores(7)
    again, _ = scores(7)
    other, _ = scores(8)
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.array_equal(first.numpy(), other.numpy())
    assert classes.shape == (4,) and ((first >= 0) & (first <= 1)).all()
    assert not model.training and not model.net.head.classification_head.mc_dropout.training  # modes restored
    with mc_dropout_mode(model):  # only the class head varies: the box head sees no dropout
        with torch.no_grad():
            imgs, _ = model._inputs(batch[0], None)
            features = list(model.net.backbone(model.net.transform(imgs, None)[0].tensors).values())
            assert torch.equal(
                model.net.head.regression_head(features), model.net.head.regression_head(features)
            )


# -- end to end ------------------------------------------------------------------------------------
TINY = [*DETECTION_TINY, "seed=4"]


class Killed(Exception):
    pass


@pytest.mark.slow
def test_learning_loss_runs_through_the_cli_with_pivot_and_diversity_and_resumes(
    tmp_path, compose_cfg, monkeypatch
):
    args = [*TINY, "scorer=learning_loss", "selection.pivot=0.5", "selection.diversity.enabled=true"]
    run_cli(*args, f"hydra.run.dir={tmp_path / 'cli'}")
    expected = read_jsonl(tmp_path / "cli" / "rounds.jsonl")
    assert [r["n_labelled"] for r in expected] == [4, 8]
    assert all(r["selection"] == "learning_loss" and len(set(r["selected_ids"])) == 4 for r in expected)
    assert not set(expected[0]["selected_ids"]) & set(expected[1]["selected_ids"])

    # killed once round 0 is committed, then resumed by a new process' worth of objects: the same records
    def fault(name):
        if name == "after_record":
            raise Killed(name)

    monkeypatch.setattr(records_module, "fault_point", fault)
    with pytest.raises(Killed):
        build_loop(compose_cfg(*args), tmp_path / "resumed").run()
    monkeypatch.undo()
    assert len(read_jsonl(tmp_path / "resumed" / "rounds.jsonl")) == 1
    resumed = build_loop(compose_cfg(*args, "resume=true"), tmp_path / "resumed").run()
    assert without_timings(resumed) == without_timings(expected)


@pytest.mark.slow
def test_bald_runs_through_the_cli_with_a_base_set_reselect_and_stochastic_sampling(tmp_path):
    run_cli(
        *TINY,
        "scorer=bald",
        "scorer.dropout=0.3",
        "scorer.passes=3",
        "selection.base_size=4",
        "selection.mode=reselect",
        "selection.rounds=3",
        "scorer.stochastic.mode=power",
        f"hydra.run.dir={tmp_path}",
    )
    records = read_jsonl(tmp_path / "rounds.jsonl")
    assert [r["selection"] for r in records] == ["base", "bald", "bald"]
    base = records[0]["selected_ids"]
    for n, record in enumerate(records[1:], start=1):
        assert len(record["selected_ids"]) == 4 * n  # reselect: the whole set again
        assert not set(record["selected_ids"]) & set(base)
        assert record["n_labelled"] == 4 + 4 * n
        assert all(0.0 <= s <= 1.0 for s in record["selected_scores"])


def test_the_extended_detection_experiment_sweeps_the_methods_and_each_value_validates(compose_cfg):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from src.validate import validate
    from tests.conftest import CONF

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["experiment=detection_scorers_extended_cpu"],
            return_hydra_config=True,
        )
    swept = str(cfg.hydra.sweeper.params.scorer).split(",")
    assert {"learning_loss", "coreset", "loss", "random"} <= set(swept)
    # the MC-dropout scorers are the documented second sweep, with the dropout they add
    for extra in [[f"scorer={name}"] for name in swept] + [
        [f"scorer={n}", "scorer.dropout=0.3"] for n in ("bald", "mc_entropy")
    ]:
        composed = compose_cfg("experiment=detection_scorers_extended_cpu", *extra)
        assert composed.task_type == "detection"
        validate(composed)
