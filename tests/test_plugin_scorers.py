"""Scorers as plug-ins: every conf/scorer yaml builds its class, the tasks' outputs views give
what the scorers read (checked against the network computed by hand), the loop's joint and
stochastic paths equal the pure functions, refusals are one line before any work; and the
new scorers end to end through the real CLI with the selection knobs."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.errors import UserError
from src.models.classifier import ImageClassifier
from src.selection import ranking
from src.selection.bald import bald
from src.selection.mc_dropout_scorer import MCDropoutScorer, TopCandidates
from src.selection.scorers import RowCollector, Scorer, get_scorer, scorer_names
from src.selection.stochastic import gumbel_keys, log_weights, stochastic_select
from src.tasks.classification import ClassifierOutputs
from src.validate import validate
from tests.conftest import read_jsonl, run_cli

THESIS = ("random", "least_confidence", "margin", "entropy", "loss")
NEW = ("bald", "mc_entropy", "coreset", "badge", "learning_loss")


def small_classifier(net: dict | None = None) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(
        num_classes=10,
        in_channels=1,
        net=net or {"name": "small_cnn", "width": 4},
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
    )


def batch_of(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    return images, torch.randint(0, 10, (n,), generator=g), torch.arange(n)


def test_every_scorer_yaml_builds_a_scorer_of_its_name():
    names = scorer_names()
    assert set(THESIS + NEW) <= set(names)
    for name in names:
        scorer = get_scorer(name)
        assert isinstance(scorer, Scorer) and scorer.name == name
    declared = {
        name: (get_scorer(name).needs_model, get_scorer(name).needs_labels, get_scorer(name).joint)
        for name in NEW
    }
    assert declared == {
        "bald": (True, False, False),
        "mc_entropy": (True, False, False),
        "coreset": (True, False, True),
        "badge": (True, False, True),
        "learning_loss": (True, False, False),
    }


def test_classifier_features_are_the_input_of_the_last_linear():
    model = small_classifier().eval()
    images, labels, ids = batch_of(6)
    with torch.no_grad():
        out = ClassifierOutputs(model, (images, labels, ids), frozenset({"features"}))
        features = out.features()
        net = model.net  # by hand: conv features, flattened (dropout is the identity in eval)
        expected = net.features(model.preprocess(images)).flatten(1)
        np.testing.assert_allclose(features.numpy(), expected.numpy(), rtol=1e-6)
        np.testing.assert_allclose(
            out.logits().numpy(),
            (expected @ net.classifier[2].weight.T + net.classifier[2].bias).numpy(),
            rtol=1e-5,
            atol=1e-6,
        )


def test_mc_scorer_passes_are_seeded_and_scores_are_bald_of_them():
    model = small_classifier().eval()
    scorer = MCDropoutScorer("bald", passes=4)
    out = lambda: ClassifierOutputs(model, batch_of(5), frozenset({"mc_uncertainty"}))  # noqa: E731
    with torch.no_grad():
        with scorer.pool_context(model, 7):
            first = scorer.batch_scores(out())
        with scorer.pool_context(model, 7):
            probs = out().mc_probabilities(4)
    assert not torch.equal(probs[0], probs[1])  # dropout on: the passes differ
    np.testing.assert_array_equal(first.numpy(), bald(probs).numpy())
    assert not model.training and not model.net.classifier[1].training  # modes restored


def test_mc_scorer_adds_dropout_only_when_asked():
    resnet = {"name": "resnet18"}
    with pytest.raises(UserError, match=r"scorer.dropout=<p>"):
        MCDropoutScorer("bald").prepare_model(small_classifier(resnet), None)
    model = small_classifier(resnet)
    MCDropoutScorer("bald", dropout=0.5).prepare_model(model, None)
    assert model.net.fc.mc_dropout.p == 0.5
    with pytest.raises(UserError, match="has dropout layers already"):
        MCDropoutScorer("bald", dropout=0.5).prepare_model(small_classifier(), None)


def test_batch_bald_candidates_are_the_running_top_m_by_bald():
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(3, 50, 4, generator=g), dim=2)  # [T, N, C]
    probs[:, 10] = probs[:, 20]  # a tie: the lower position wins
    keeper = TopCandidates(m=12, passes=3)
    for start in range(0, 50, 16):
        keeper.add(types.SimpleNamespace(mc_probabilities=lambda t, s=start: probs[:, s : s + 16]))
    scores = bald(probs).double().numpy()
    expected = np.lexsort((np.arange(50), -scores))[:12]  # numpy: by score, ties by position
    np.testing.assert_array_equal(keeper.positions.numpy(), expected)
    np.testing.assert_array_equal(keeper.probs.numpy(), probs.transpose(0, 1)[expected].numpy())


def test_row_collector_keeps_pool_order_and_gives_empty_rows_like_the_pool():
    rows = RowCollector(5, lambda out: {"features": out})
    rows.add(torch.arange(6.0).view(3, 2))
    rows.add(torch.arange(6.0, 10.0).view(2, 2))
    np.testing.assert_array_equal(rows.get("features").numpy(), np.arange(10.0).reshape(5, 2))
    assert RowCollector(0, None).get("features", shape_like=rows.get("features")).shape == (0, 2)


def test_stochastic_ranking_of_the_loop_is_the_papers_sampling():
    # what ActiveLearningLoop.select does with scorer.stochastic: rank by Gumbel keys
    scores = np.random.default_rng(1).random(40)
    ids = np.arange(100, 140)
    for mode in ("power", "softmax", "soft_rank"):
        keys = gumbel_keys(log_weights(torch.from_numpy(scores), mode, 3.0), torch.Generator().manual_seed(5))
        chosen = ranking.select(ids, keys.numpy(), 8)
        drawn = stochastic_select(
            torch.from_numpy(scores), 8, mode=mode, beta=3.0, generator=torch.Generator().manual_seed(5)
        )
        np.testing.assert_array_equal(chosen.ids, ids[drawn.numpy()])


def test_learning_loss_objective_is_mean_loss_plus_pair_ranking_by_hand():
    model = small_classifier()
    scorer = get_scorer("learning_loss")
    pool = types.SimpleNamespace(pool_ids=np.arange(4), pool_dataloader=lambda ids: [batch_of(len(ids))])
    scorer.prepare_model(model, pool)
    images, labels, _ = batch_of(4, seed=1)
    logits = model(images)
    loss = model.training_objective(model, F.cross_entropy(logits, labels, reduction="none"))
    per_item = F.cross_entropy(logits, labels, reduction="none").detach()
    pred = model.loss_prediction(scorer.taps.maps).detach()
    pairs = [(0, 3), (1, 2)]  # the split mini-batch: i against B-1-i
    rank = sum(
        max(0.0, 1.0 - (1 if per_item[i] > per_item[j] else -1) * float(pred[i] - pred[j])) for i, j in pairs
    )
    assert float(loss.detach()) == pytest.approx(float(per_item.mean()) + rank / len(pairs), rel=1e-5)
    assert {n for n, _ in model.named_children()} >= {"loss_prediction"}  # restored with the weights


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ("task=detection", "scorer=bald", "scorer.batch_bald.enabled=true"),
            "scorer.batch_bald.enabled=true is not available for task_type=detection",
        ),
        (("task=detection", "scorer=badge"), "scorer=badge is not available for task_type=detection"),
        (("scorer=coreset", "+scorer.stochastic={mode: power}"), "scorer.stochastic: scorer=coreset"),
        (("scorer=bald", "scorer.batch_bald.enabled=true", "selection.pivot=0.5"), "scorer.batch_bald"),
        (
            ("scorer=bald", "scorer.batch_bald.enabled=true", "scorer.batch_bald.candidates=10"),
            "scorer.batch_bald.candidates=10",
        ),
        (("scorer=mc_entropy", "scorer.passes=0"), "scorer.passes=0"),
    ],
)
def test_what_a_scorer_cannot_do_is_refused_in_validation(compose_cfg, overrides, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace(".", r"\.")):
        validate(compose_cfg(*overrides))


E2E_CASES = {
    "bald-pivot-diversity": "scorer=bald scorer.passes=3 selection.pivot=0.5 selection.diversity.enabled=true",
    "mc_entropy-reselect-base": "scorer=mc_entropy scorer.passes=3 selection.mode=reselect selection.base_size=20",
    "coreset-base-diversity": "scorer=coreset selection.base_size=20 selection.diversity.enabled=true "
    "selection.diversity.labels=ground_truth",
    "badge-pivot": "scorer=badge selection.pivot=1.0",
    "learning_loss-stochastic-reselect": "scorer=learning_loss scorer.stochastic.mode=softmax "
    "scorer.stochastic.beta=5 selection.mode=reselect",
    "batch_bald": "scorer=bald scorer.passes=3 scorer.batch_bald.enabled=true scorer.batch_bald.candidates=30",
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(E2E_CASES))
def test_new_scorers_run_through_the_cli_with_the_selection_knobs(tmp_path, case):
    args = ["debug=fast", "trainer.max_epochs=1", "seed=2", *E2E_CASES[case].split()]
    run_cli(*args, f"hydra.run.dir={tmp_path / 'a'}")
    records = read_jsonl(tmp_path / "a" / "rounds.jsonl")
    name = case.split("-")[0].replace("batch_bald", "bald")
    base = 20 if "base_size=20" in E2E_CASES[case] else 0
    reselect = "reselect" in E2E_CASES[case]
    labelled: list[int] = []
    selections = 0
    for record in records:
        ids = record["selected_ids"]
        assert len(set(ids)) == len(ids)
        if record["selection"] == "base":
            labelled = list(ids)
            continue
        selections += 1
        size = 20 * selections if reselect else 20  # reselect re-chooses the whole set
        assert record["selection"] == name and len(ids) == size
        assert len(record["selected_scores"]) == size
        if not reselect:
            assert not set(ids) & set(labelled)
        labelled = (labelled[:base] if reselect else labelled) + ids
        assert record["n_labelled"] == len(labelled)
    if case == "bald-pivot-diversity":  # seeded: MC masks, pivot and diversity give the same selection
        run_cli(*args, f"hydra.run.dir={tmp_path / 'b'}")
        again = read_jsonl(tmp_path / "b" / "rounds.jsonl")
        assert [r["selected_ids"] for r in again] == [r["selected_ids"] for r in records]


@pytest.mark.parametrize("scale", [[], ["scale=cpu"]])
def test_scorers_extended_sweeps_every_method_and_each_value_validates(compose_cfg, scale):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.conftest import CONF

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=["experiment=scorers_extended", *scale], return_hydra_config=True
        )
    swept = str(cfg.hydra.sweeper.params.scorer).split(",")
    assert set(NEW) | {"random", "entropy", "loss"} <= set(swept)
    for name in swept:
        composed = compose_cfg("experiment=scorers_extended", *scale, f"scorer={name}")
        assert composed.scorer.name == name
        if scale:
            validate(composed)
