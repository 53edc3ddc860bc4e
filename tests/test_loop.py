"""The outer loop in-process, built from the real composed config."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from src.experiment.build import build_loop
from tests.conftest import without_timings

FAST = ["debug=fast", "progress=false"]


def run_loop(compose_cfg, tmp_path, *overrides, name="run"):
    cfg = compose_cfg(*FAST, *overrides)
    loop = build_loop(cfg, tmp_path / name)
    return loop, loop.run()


def test_records_have_the_documented_keys_and_grow(compose_cfg, tmp_path):
    loop, records = run_loop(compose_cfg, tmp_path, "selection.rounds=3")
    assert [r.round for r in records] == [0, 1, 2]
    assert [r.n_labelled for r in records] == [20, 40, 60]
    for r in records:
        for key in (
            "selected_ids",
            "selected_scores",
            "epochs",
            "val/loss",
            "val/acc_top1",
            "test/loss",
            "test/acc_top1",
            "test/acc_top5",
            "select_seconds",
            "fit_seconds",
        ):
            assert r.value(key) is not None, key
        assert len(r.selected_ids) == len(r.selected_scores) == 20
        assert r.selected_scores == sorted(r.selected_scores, reverse=True)  # pivot 0: hardest first
    chosen = np.concatenate([r.selected_ids for r in records])
    assert len(np.unique(chosen)) == 60 and set(chosen) <= set(loop.pool_ids.tolist())


def test_same_seed_same_selections_and_metrics(compose_cfg, tmp_path):
    _, a = run_loop(compose_cfg, tmp_path, "seed=7", name="a")
    _, b = run_loop(compose_cfg, tmp_path, "seed=7", name="b")
    _, c = run_loop(compose_cfg, tmp_path, "seed=8", name="c")
    assert without_timings(a) == without_timings(b)
    assert [r.selected_ids for r in a] != [r.selected_ids for r in c]


def test_random_scorer_is_seeded_and_needs_no_model_pass(compose_cfg, tmp_path):
    _, a = run_loop(compose_cfg, tmp_path, "scorer=random", "seed=3", name="a")
    _, b = run_loop(compose_cfg, tmp_path, "scorer=random", "seed=3", name="b")
    assert [r.selected_ids for r in a] == [r.selected_ids for r in b]


def test_pivot_one_takes_the_lowest_scores(compose_cfg, tmp_path):
    loop, _ = run_loop(compose_cfg, tmp_path, "selection.rounds=1", name="probe")
    # score the whole pool with the baseline model and compare with a pivot-1 selection
    loop.snapshot.restore(loop.model)
    # an independent scoring pass: the model's logits through scipy's softmax and entropy
    images, _, ids = next(iter(loop.dm.pool_dataloader(loop.pool_ids)))
    with torch.no_grad():
        probs = scipy.special.softmax(loop.model.eval()(images).double().numpy(), axis=1)
    scores = scipy.stats.entropy(probs, base=2, axis=1) / np.log2(probs.shape[1])
    ids = ids.numpy()
    none = np.zeros(0, np.int64)
    hard = loop.select(0, none, none, torch.device("cpu"))
    loop.sel.pivot = 1.0
    easy = loop.select(0, none, none, torch.device("cpu"))
    order = np.lexsort((ids, -scores))
    assert hard["ids"] == ids[order[:20]].tolist()
    assert easy["ids"] == ids[order[-20:]].tolist()


def test_base_set_round_then_selections(compose_cfg, tmp_path):
    _, records = run_loop(compose_cfg, tmp_path, "selection.base_size=30", "selection.rounds=3")
    assert [r.n_labelled for r in records] == [30, 50, 70]
    assert records[0].selection == "base" and records[0].selected_scores == []
    assert records[1].selection == "entropy"
    assert not set(records[0].selected_ids) & set(records[1].selected_ids)


def test_reselect_rechooses_the_whole_set(compose_cfg, tmp_path):
    loop, records = run_loop(
        compose_cfg, tmp_path, "selection.mode=reselect", "selection.base_size=10", "selection.rounds=3"
    )
    assert [r.n_labelled for r in records] == [10, 30, 50]
    assert [r.n_selected for r in records] == [10, 20, 40]
    base = set(records[0].selected_ids)
    assert all(not base & set(r.selected_ids) for r in records[1:])


def test_budget_list_and_until_exhausted(compose_cfg, tmp_path):
    _, records = run_loop(compose_cfg, tmp_path, "selection.budget=[10,30,80]", "selection.rounds=null")
    assert [r.n_labelled for r in records] == [10, 40, 120]
    _, records = run_loop(
        compose_cfg,
        tmp_path,
        "selection.budget=50",
        "selection.rounds=null",
        "trainer.max_epochs=1",
        name="exhaust",
    )
    assert [r.n_labelled for r in records] == [50, 100, 120]


def test_diversity_on_true_labels_balances_classes(compose_cfg, tmp_path):
    loop, records = run_loop(
        compose_cfg,
        tmp_path,
        "selection.diversity.enabled=true",
        "selection.diversity.labels=ground_truth",
        "selection.rounds=1",
    )
    labels = loop.dm.data.labels[records[0].selected_ids].numpy()
    assert np.bincount(labels, minlength=10).max() <= 2  # k = ceil(20 / 10)
    # without diversity the hardest 20 are far less even on this pool
    _, plain = run_loop(compose_cfg, tmp_path, "selection.rounds=1", name="plain")
    assert np.bincount(loop.dm.data.labels[plain[0].selected_ids].numpy(), minlength=10).max() > 2


def test_unshuffled_training_follows_selection_order(compose_cfg, tmp_path):
    loop, records = run_loop(compose_cfg, tmp_path, "selection.shuffle=none", "selection.rounds=2")
    train_ids = [int(i) for batch in loop.dm.train_dataloader() for i in batch[2]]
    assert train_ids == records[0].selected_ids + records[1].selected_ids


def test_resume_with_a_changed_config_is_refused(compose_cfg, tmp_path):
    run_loop(compose_cfg, tmp_path, "selection.rounds=1")
    from src.errors import UserError as ConfigError

    with pytest.raises(ConfigError, match="resume=true: the config differs .*selection.pivot"):
        build_loop(compose_cfg(*FAST, "selection.rounds=1", "selection.pivot=0.5"), tmp_path / "run").run()


def test_records_keep_the_selecting_models_guess_for_each_pick(compose_cfg, tmp_path):
    # round 0 without a base set: the starting model chose, so its argmax is the expected guess
    loop, records = run_loop(compose_cfg, tmp_path, "selection.rounds=2", "scorer=margin")
    loop.snapshot.restore(loop.model)
    images, _, ids = next(iter(loop.dm.pool_dataloader(np.asarray(records[0].selected_ids))))
    with torch.no_grad():
        guesses = loop.model.eval()(images).numpy().argmax(axis=1)
    assert ids.tolist() == records[0].selected_ids
    assert records[0].selected_predictions == guesses.tolist()
    assert len(records[1].selected_predictions) == len(records[1].selected_ids)
    # random scoring runs no model: no guesses recorded
    _, plain = run_loop(compose_cfg, tmp_path, "selection.rounds=1", "scorer=random", name="random")
    assert plain[0].selected_predictions is None
