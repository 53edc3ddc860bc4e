"""Scorers: the thesis' uncertainty formulas (eqs. 3.1-3.3), the loss scorer and random.

Every expected value is either computed by hand in the test (with ``math``) or by an
independent implementation (plain numpy, ``scipy.stats.entropy``, ``scipy.special.softmax``);
the code under test never produces its own expected value.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from src.errors import UserError
from src.selection.scorers import (
    UNCERTAINTY,
    cross_entropy_loss,
    entropy,
    get_scorer,
    least_confidence,
    margin,
    random_scores,
    scorer_names,
)

UNCERTAINTY_FUNCS = {"least_confidence": least_confidence, "margin": margin, "entropy": entropy}


# --------------------------------------------------------------------------------------
# independent references (plain python / numpy / scipy, one row at a time)
# --------------------------------------------------------------------------------------
def ref_least_confidence(p) -> float:
    p = [float(v) for v in p]
    n = len(p)
    return (1.0 - max(p)) * n / (n - 1)


def ref_margin(p) -> float:
    top1, top2 = sorted((float(v) for v in p), reverse=True)[:2]
    return 1.0 - (top1 - top2)


def ref_entropy(p) -> float:
    p = np.asarray(p, dtype=np.float64)
    return float(scipy.stats.entropy(p, base=2) / math.log2(len(p)))


REFS = {"least_confidence": ref_least_confidence, "margin": ref_margin, "entropy": ref_entropy}


def t64(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# --------------------------------------------------------------------------------------
# hand-computed values
# --------------------------------------------------------------------------------------
def test_hand_values_three_classes():
    p = t64([[0.5, 0.3, 0.2]])
    # least confidence: (1 - 0.5) * 3 / 2 = 0.75
    assert least_confidence(p).item() == pytest.approx(0.75, abs=1e-12)
    # margin: 1 - (0.5 - 0.3) = 0.8
    assert margin(p).item() == pytest.approx(0.8, abs=1e-12)
    # entropy: -(0.5 log2 .5 + .3 log2 .3 + .2 log2 .2) / log2 3
    h = -(0.5 * math.log2(0.5) + 0.3 * math.log2(0.3) + 0.2 * math.log2(0.2)) / math.log2(3)
    assert entropy(p).item() == pytest.approx(h, abs=1e-12)
    # sanity on the hand number itself: 1.4854752972 / 1.5849625007 = 0.93723...
    assert h == pytest.approx(0.9372305, abs=1e-6)


def test_hand_values_several_rows_four_classes():
    p = t64(
        [
            [0.7, 0.1, 0.1, 0.1],
            [0.4, 0.4, 0.1, 0.1],
            [0.1, 0.2, 0.3, 0.4],  # max is not in column 0
        ]
    )
    # least confidence = (1 - max) * 4/3
    lc = [(1 - 0.7) * 4 / 3, (1 - 0.4) * 4 / 3, (1 - 0.4) * 4 / 3]  # 0.4, 0.8, 0.8
    # margin = 1 - (top1 - top2)
    mg = [1 - (0.7 - 0.1), 1 - (0.4 - 0.4), 1 - (0.4 - 0.3)]  # 0.4, 1.0, 0.9
    # entropy = -sum p log2 p / log2 4 = -sum p log2 p / 2
    en = [
        -(0.7 * math.log2(0.7) + 3 * 0.1 * math.log2(0.1)) / 2,
        -(2 * 0.4 * math.log2(0.4) + 2 * 0.1 * math.log2(0.1)) / 2,
        -(0.1 * math.log2(0.1) + 0.2 * math.log2(0.2) + 0.3 * math.log2(0.3) + 0.4 * math.log2(0.4)) / 2,
    ]
    np.testing.assert_allclose(least_confidence(p).numpy(), lc, atol=1e-12)
    np.testing.assert_allclose(margin(p).numpy(), mg, atol=1e-12)
    np.testing.assert_allclose(entropy(p).numpy(), en, atol=1e-12)
    # the literal numbers, to make sure the hand formulas above are what we think
    np.testing.assert_allclose(lc, [0.4, 0.8, 0.8], atol=1e-12)
    np.testing.assert_allclose(mg, [0.4, 1.0, 0.9], atol=1e-12)


def test_two_classes():
    p = t64([[0.8, 0.2], [0.5, 0.5], [0.0, 1.0], [0.3, 0.7]])
    # n = 2: least confidence = (1 - max) * 2
    np.testing.assert_allclose(least_confidence(p).numpy(), [0.4, 1.0, 0.0, 0.6], atol=1e-12)
    # margin = 1 - |p0 - p1|
    np.testing.assert_allclose(margin(p).numpy(), [0.4, 1.0, 0.0, 0.6], atol=1e-12)

    # entropy over log2 2 = 1: the binary entropy in bits
    def hb(q):
        return 0.0 if q in (0.0, 1.0) else -(q * math.log2(q) + (1 - q) * math.log2(1 - q))

    np.testing.assert_allclose(entropy(p).numpy(), [hb(0.8), 1.0, 0.0, hb(0.3)], atol=1e-12)


# --------------------------------------------------------------------------------------
# numerically safe edges
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [2, 3, 10])
def test_one_hot_gives_zero_and_no_nan(n, dtype):
    p = torch.zeros((n, n), dtype=dtype)
    p[torch.arange(n), torch.arange(n)] = 1.0  # one-hot in every position
    for name, fn in UNCERTAINTY_FUNCS.items():
        out = fn(p)
        assert not torch.isnan(out).any(), name
        assert torch.equal(out, torch.zeros(n, dtype=dtype)), name


def test_zeros_in_probabilities_no_nan():
    p = t64([[0.5, 0.5, 0.0, 0.0], [0.0, 0.25, 0.75, 0.0]])
    h = entropy(p)
    assert not torch.isnan(h).any()
    # 0 log 0 = 0, so: row 0 = 1 bit / log2 4 = 0.5
    # row 1 = -(0.25 log2 .25 + 0.75 log2 .75) / 2
    expected = [1.0 / 2, -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75)) / 2]
    np.testing.assert_allclose(h.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [2, 3, 7, 100])
def test_uniform_gives_one(n, dtype):
    p = torch.full((3, n), 1.0 / n, dtype=dtype)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for name, fn in UNCERTAINTY_FUNCS.items():
        out = fn(p)
        np.testing.assert_allclose(out.numpy(), np.ones(3), atol=tol, err_msg=name)
        assert (out <= 1.0).all(), name


def test_rejects_bad_shapes():
    for fn in UNCERTAINTY_FUNCS.values():
        with pytest.raises(ValueError):
            fn(torch.tensor([0.5, 0.5]))  # 1-d
        with pytest.raises(ValueError):
            fn(torch.ones((4, 1)))  # a single class


# --------------------------------------------------------------------------------------
# random batches: range, reference agreement, vectorised == row by row
# --------------------------------------------------------------------------------------
def _random_probs(rng, n_rows, n_classes, sharp=1.0):
    logits = rng.normal(size=(n_rows, n_classes)) * sharp
    return scipy.special.softmax(logits, axis=1)


@pytest.mark.parametrize("n_classes", [2, 3, 5, 10])
def test_random_batches_match_reference_and_lie_in_unit_interval(n_classes):
    rng = np.random.default_rng(1234 + n_classes)
    probs = np.concatenate([_random_probs(rng, 40, n_classes, sharp=s) for s in (0.1, 1.0, 10.0)])
    p = torch.from_numpy(probs)
    for name, fn in UNCERTAINTY_FUNCS.items():
        out = fn(p)
        assert out.shape == (probs.shape[0],)
        assert torch.isfinite(out).all(), name
        assert (out >= 0).all() and (out <= 1).all(), name
        expected = [REFS[name](row) for row in probs]
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("name", list(UNCERTAINTY_FUNCS))
def test_vectorised_equals_row_by_row(name):
    rng = np.random.default_rng(7)
    p = torch.from_numpy(_random_probs(rng, 25, 6))
    fn = UNCERTAINTY_FUNCS[name]
    batched = fn(p)
    rows = torch.cat([fn(p[i : i + 1]) for i in range(p.shape[0])])
    torch.testing.assert_close(batched, rows, rtol=0, atol=1e-12)


def test_ordering_more_peaked_is_less_uncertain():
    # hand-built rows from peaked to flat: every scorer must increase strictly
    p = t64([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.4, 0.35, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    for name, fn in UNCERTAINTY_FUNCS.items():
        out = fn(p).numpy()
        assert np.all(np.diff(out) > 0), (name, out)


# --------------------------------------------------------------------------------------
# loss scorer
# --------------------------------------------------------------------------------------
def _np_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    # -log softmax(logits)[label] with a stable log-sum-exp, in plain numpy
    m = logits.max(axis=1, keepdims=True)
    log_z = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return log_z - logits[np.arange(len(labels)), labels]


def test_loss_scorer_equals_numpy_negative_log_softmax():
    rng = np.random.default_rng(99)
    logits = rng.normal(size=(32, 7)) * 3
    labels = rng.integers(0, 7, size=32)
    scorer = get_scorer("loss")
    out = scorer.score_logits(torch.from_numpy(logits), torch.from_numpy(labels))
    # the scorer computes in float32
    np.testing.assert_allclose(out.numpy(), _np_cross_entropy(logits, labels), rtol=1e-5, atol=1e-5)
    out_direct = cross_entropy_loss(torch.from_numpy(logits), torch.from_numpy(labels))
    np.testing.assert_allclose(out_direct.numpy(), _np_cross_entropy(logits, labels), rtol=1e-5, atol=1e-5)


def test_loss_hand_value():
    # logits [0, 0] -> softmax [.5, .5] -> loss = -log .5 = log 2 for either label
    # logits [log 3, 0] -> softmax [.75, .25]: label 0 -> -log .75, label 1 -> -log .25
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([1, 0, 1])
    out = get_scorer("loss").score_logits(logits, labels)
    np.testing.assert_allclose(out.numpy(), [math.log(2), -math.log(0.75), -math.log(0.25)], rtol=1e-6)
    # the wrong-class item has the higher loss: it ranks first under "loss descending"
    assert out[2] > out[1]


# --------------------------------------------------------------------------------------
# get_scorer
# --------------------------------------------------------------------------------------
def test_get_scorer_flags():
    expected = {
        "random": (False, False),
        "least_confidence": (True, False),
        "margin": (True, False),
        "entropy": (True, False),
        "loss": (True, True),
    }
    assert set(expected) <= set(scorer_names())
    for name, (needs_model, needs_labels) in expected.items():
        s = get_scorer(name)
        assert s.name == name
        assert s.needs_model is needs_model, name
        assert s.needs_labels is needs_labels, name
        assert (s.of_probabilities is not None) is (name in UNCERTAINTY), name


def test_get_scorer_unknown_name_lists_allowed():
    with pytest.raises(UserError) as info:
        get_scorer("no_such_scorer")
    msg = str(info.value)
    assert "no_such_scorer" in msg
    for name in ("random", "least_confidence", "margin", "entropy", "loss"):
        assert name in msg


@pytest.mark.parametrize("name", ["least_confidence", "margin", "entropy"])
def test_uncertainty_scorer_from_logits_uses_softmax(name):
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(30, 5)) * 2
    probs = scipy.special.softmax(logits, axis=1)
    expected = [REFS[name](row) for row in probs]
    s = get_scorer(name)
    out = s.score_logits(torch.from_numpy(logits), None)  # labels are not needed
    assert out.shape == (30,)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)  # float32 inside
    # float32 logits, as a model would produce, give the same
    out32 = s.score_logits(torch.from_numpy(logits).float(), None)
    np.testing.assert_allclose(out32.numpy(), expected, atol=1e-5)


def test_uncertainty_scorer_from_logits_hand_value():
    # logits [log 5, log 3, log 2] -> softmax [.5, .3, .2]; the hand values of the first test
    logits = torch.tensor([[math.log(5.0), math.log(3.0), math.log(2.0)]])
    h = -(0.5 * math.log2(0.5) + 0.3 * math.log2(0.3) + 0.2 * math.log2(0.2)) / math.log2(3)
    assert get_scorer("least_confidence").score_logits(logits, None).item() == pytest.approx(0.75, abs=1e-6)
    assert get_scorer("margin").score_logits(logits, None).item() == pytest.approx(0.8, abs=1e-6)
    assert get_scorer("entropy").score_logits(logits, None).item() == pytest.approx(h, abs=1e-6)


def test_each_scorer_keeps_its_own_formula():
    # guards against a late-binding closure: scorers made one after another stay distinct
    scorers = {name: get_scorer(name) for name in ("least_confidence", "margin", "entropy")}
    logits = torch.tensor([[math.log(5.0), math.log(3.0), math.log(2.0)]])
    values = {name: s.score_logits(logits, None).item() for name, s in scorers.items()}
    assert values["least_confidence"] == pytest.approx(0.75, abs=1e-6)
    assert values["margin"] == pytest.approx(0.8, abs=1e-6)
    assert values["entropy"] != pytest.approx(values["margin"], abs=1e-3)


# --------------------------------------------------------------------------------------
# random scores
# --------------------------------------------------------------------------------------
def test_random_scores_reproducible_with_same_seed():
    a = random_scores(500, torch.Generator().manual_seed(17))
    b = random_scores(500, torch.Generator().manual_seed(17))
    assert a.shape == (500,)
    assert torch.equal(a, b)
    assert ((a >= 0) & (a < 1)).all()


def test_random_scores_different_seeds_give_different_orders():
    a = random_scores(500, torch.Generator().manual_seed(17)).numpy()
    b = random_scores(500, torch.Generator().manual_seed(18)).numpy()
    assert not np.array_equal(np.argsort(-a), np.argsort(-b))
    # and the ranking is a permutation without ties in practice
    assert np.unique(a).size == 500


def test_random_scores_advance_the_generator():
    g = torch.Generator().manual_seed(3)
    first = random_scores(50, g)
    second = random_scores(50, g)
    assert not torch.equal(first, second)
