"""The standard acquisition methods against independent implementations.

BALD, MC entropy and BatchBALD are checked against baal's heuristics (a test-only
dependency) and against a brute-force numpy enumeration of the joint entropy written
here from the BatchBALD paper's definition; core-set and BADGE against plain numpy
implementations of the papers' algorithms (explicit distances, explicit gradient
embeddings); the learning-loss ranking loss against hand-computed numbers; stochastic
acquisition against its analytic sampling probabilities. The code under test never
produces its own expected value.
"""

from __future__ import annotations

import copy
import itertools
import math
import pickle

import numpy as np
import pytest
import torch
from baal.active.heuristics import BALD as BaalBALD
from baal.active.heuristics import BatchBALD as BaalBatchBALD
from baal.active.heuristics import Entropy as BaalEntropy
from torch import nn

from src.models.mc_dropout import add_dropout_before_head, enable_mc_dropout, mc_dropout_mode, mc_softmax
from src.selection.badge import badge_select
from src.selection.bald import bald, bald_and_mc_entropy, batch_bald, mc_entropy
from src.selection.coreset import k_center_greedy
from src.selection.learning_loss import LossPredictionModule, learning_loss_objective, loss_ranking_loss
from src.selection.scorers import entropy as thesis_entropy
from src.selection.stochastic import log_weights, stochastic_select


def mc_probs(seed: int, passes: int, items: int, classes: int, spread: float = 2.0) -> torch.Tensor:
    """[T, N, C] softmax of random logits: per-item centre plus per-pass noise, float64."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(1, items, classes, generator=g, dtype=torch.float64) * spread
    noise = torch.randn(passes, items, classes, generator=g, dtype=torch.float64) * spread
    return torch.softmax(centre + noise * torch.rand(1, items, 1, generator=g, dtype=torch.float64), dim=2)


def to_baal(probs: torch.Tensor) -> np.ndarray:
    """baal's layout: [N, C, T]."""
    return probs.permute(1, 2, 0).numpy().copy()


# ---------------------------------------------------------------------------------------------
# BALD and MC entropy
# ---------------------------------------------------------------------------------------------
def test_bald_equals_baal_in_nats_divided_by_log_c():
    probs = mc_probs(0, passes=9, items=60, classes=7)
    expected_nats = BaalBALD().compute_score(to_baal(probs))
    np.testing.assert_allclose(bald(probs).numpy() * math.log(7), expected_nats, rtol=1e-10, atol=1e-12)


def test_mc_entropy_equals_baal_entropy_of_the_mean():
    probs = mc_probs(1, passes=5, items=40, classes=4)
    expected_nats = BaalEntropy().compute_score(to_baal(probs))
    np.testing.assert_allclose(mc_entropy(probs).numpy() * math.log(4), expected_nats, rtol=1e-10, atol=1e-12)


def test_bald_and_mc_entropy_together_match_the_separate_functions_and_hand_values():
    # two passes, two classes: p = (1, 0) and (0, 1) -> mean (0.5, 0.5): H = ln 2, E[H] = 0
    # -> BALD = 1 (normalised), entropy of the mean = 1; identical passes -> BALD = 0
    probs = torch.tensor([[[1.0, 0.0], [0.25, 0.75]], [[0.0, 1.0], [0.25, 0.75]]], dtype=torch.float64)
    mi, ent = bald_and_mc_entropy(probs)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / math.log(2)
    np.testing.assert_allclose(mi.numpy(), [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(ent.numpy(), [1.0, h], atol=1e-12)
    np.testing.assert_allclose(bald(probs).numpy(), mi.numpy(), atol=0)
    np.testing.assert_allclose(mc_entropy(probs).numpy(), ent.numpy(), atol=0)


def test_mc_entropy_of_one_pass_is_the_thesis_entropy():
    probs = mc_probs(2, passes=1, items=30, classes=6)
    np.testing.assert_allclose(mc_entropy(probs).numpy(), thesis_entropy(probs[0]).numpy(), atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 1)])
def test_bald_refuses_wrong_shapes(shape):
    with pytest.raises(ValueError, match=r"\[T, B, C\]|at least 2 classes"):
        bald(torch.full(shape, 0.5))


# ---------------------------------------------------------------------------------------------
# BatchBALD
# ---------------------------------------------------------------------------------------------
def ref_batch_mutual_information(probs: np.ndarray, batch: list[int]) -> float:
    """I(y_batch; w) in nats by enumerating every configuration of the batch: [T, N, C] numpy."""
    passes, _, classes = probs.shape
    joint_entropy = 0.0
    for config in itertools.product(range(classes), repeat=len(batch)):
        p_given_w = np.ones(passes)
        for item, label in zip(batch, config):
            p_given_w = p_given_w * probs[:, item, label]
        p = p_given_w.mean()
        if p > 0:
            joint_entropy -= p * math.log(p)
    conditional = 0.0
    for item in batch:
        p = probs[:, item, :]
        conditional += float(-(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1).mean())
    return joint_entropy - conditional


def ref_greedy_batch_bald(probs: np.ndarray, budget: int) -> tuple[list[int], list[float]]:
    chosen, values = [], []
    for _ in range(budget):
        best, best_value = None, -math.inf
        for j in range(probs.shape[1]):
            if j in chosen:
                continue
            value = ref_batch_mutual_information(probs, chosen + [j])
            if value > best_value + 1e-12:
                best, best_value = j, value
        chosen.append(best)
        values.append(best_value)
    return chosen, values


def test_batch_bald_exact_matches_brute_force_enumeration():
    probs = mc_probs(3, passes=6, items=12, classes=3)
    ref_ids, ref_nats = ref_greedy_batch_bald(probs.numpy(), budget=4)
    ids, gains = batch_bald(probs, 4, generator=torch.Generator().manual_seed(0), max_exact_configs=10**6)
    assert ids.tolist() == ref_ids
    np.testing.assert_allclose(gains.numpy() * math.log(3), ref_nats, rtol=1e-9)
    # the first pick is plain BALD's top item
    assert int(ids[0]) == int(torch.argmax(bald(probs)))


def duplicate_case(seed: int) -> torch.Tensor:
    """Item 1 is a copy of item 0, the top BALD item."""
    probs = mc_probs(seed, passes=10, items=16, classes=4, spread=3.0)
    top = int(torch.argmax(bald(probs)))
    order = [top] + [i for i in range(16) if i != top]
    probs = probs[:, order]
    probs[:, 1] = probs[:, 0]
    return probs


def test_batch_bald_avoids_a_duplicate_that_top_k_bald_takes():
    probs = duplicate_case(4)
    assert set(torch.topk(bald(probs), 2).indices.tolist()) == {0, 1}
    ids, _ = batch_bald(probs, 3, generator=torch.Generator().manual_seed(0), max_exact_configs=10**6)
    assert ids[0] == 0 and 1 not in ids.tolist()
    assert ids.tolist() == ref_greedy_batch_bald(probs.numpy(), 3)[0]


def test_batch_bald_agrees_with_baal_on_ids_and_values():
    probs = duplicate_case(8)  # a case whose greedy steps win by > 0.1 nats (checked below)
    budget = 4
    ref_ids, ref_nats = ref_greedy_batch_bald(probs.numpy(), budget)
    # the comparison means something only if each greedy step has a clear winner
    for step in range(1, budget):
        runner_up = max(
            ref_batch_mutual_information(probs.numpy(), ref_ids[:step] + [j])
            for j in range(probs.shape[1])
            if j not in ref_ids
        )
        assert ref_nats[step] - runner_up > 0.1

    torch.manual_seed(0)  # baal samples its configurations from torch's global generator
    baal_scores = BaalBatchBALD(num_samples=budget - 1, num_draw=4000).compute_score(to_baal(probs))
    ids, gains = batch_bald(
        probs, budget, generator=torch.Generator().manual_seed(0), max_exact_configs=10**6
    )
    assert set(np.nonzero(baal_scores)[0].tolist()) == set(ids.tolist()) == set(ref_ids)
    # baal scores step s by H(y_1..s) - E H(y_s | w), i.e. the batch MI plus the earlier items'
    # conditional entropies
    conditional = (-(probs * torch.log(probs)).sum(dim=2).mean(dim=0)).numpy()
    for step, item in enumerate(ids.tolist()):
        baal_as_mi = baal_scores[item] - conditional[ids[:step].numpy()].sum()
        assert abs(baal_as_mi - float(gains[step]) * math.log(4)) < 0.03


def test_batch_bald_sampled_configurations_are_seeded_and_close_to_exact():
    probs = mc_probs(5, passes=8, items=30, classes=4)
    ids_exact, gains_exact = batch_bald(
        probs, 5, generator=torch.Generator().manual_seed(0), max_exact_configs=10**6
    )
    runs = [
        batch_bald(
            probs, 5, generator=torch.Generator().manual_seed(7), max_exact_configs=16, num_samples=20000
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    ref = [ref_batch_mutual_information(probs.numpy(), ids_exact.tolist()[: k + 1]) for k in range(5)]
    np.testing.assert_allclose(gains_exact.numpy() * math.log(4), ref, rtol=1e-9)
    # sampling starts at the third pick (4 x 4 configurations); its estimates stay within 0.03 nats
    sampled_ids, sampled_gains = runs[0]
    assert sampled_ids[:3].tolist() == ids_exact[:3].tolist()
    ref_sampled = [
        ref_batch_mutual_information(probs.numpy(), sampled_ids.tolist()[: k + 1]) for k in range(5)
    ]
    np.testing.assert_allclose(sampled_gains.numpy() * math.log(4), ref_sampled, atol=0.03)


# ---------------------------------------------------------------------------------------------
# MC dropout
# ---------------------------------------------------------------------------------------------
def test_mc_dropout_mode_keeps_batchnorm_in_eval_and_restores_modes():
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    net.train()
    x = torch.randn(16, 4)
    stats = net[1].running_mean.clone()
    with mc_dropout_mode(net), torch.inference_mode():
        assert not net[1].training and net[3].training and not net[0].training
        passes = mc_softmax(net, x, passes=5)
    assert passes.shape == (5, 16, 3)
    assert torch.equal(net[1].running_mean, stats)  # eval BN: running stats untouched
    assert not torch.allclose(passes[0], passes[1])  # dropout active: passes differ
    assert all(m.training for m in net.modules())  # modes restored
    with pytest.raises(ValueError, match="no dropout"):
        with mc_dropout_mode(nn.Sequential(nn.Linear(2, 2))):
            pass


def test_add_dropout_before_head_applies_dropout_to_the_last_linear_input():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    keys = list(net.state_dict())
    x = torch.randn(5, 4)
    plain = net(x).detach()
    add_dropout_before_head(net, 0.5)
    assert list(net.state_dict()) == keys
    net.eval()
    assert torch.equal(net(x), plain)  # eval: the added dropout is the identity
    assert enable_mc_dropout(net) == 1
    torch.manual_seed(123)
    out = net(x)
    torch.manual_seed(123)  # hand version: same mask from the same seed
    hidden = torch.relu(net[0](x))
    expected = net[2].weight @ nn.functional.dropout(hidden, 0.5, training=True).T
    torch.testing.assert_close(out, expected.T + net[2].bias)
    # deep copies and pickles (the baseline keeps copies of the network)
    clone = pickle.loads(pickle.dumps(copy.deepcopy(net)))
    clone.eval()
    assert torch.equal(clone(x), plain)
    with pytest.raises(ValueError, match="already has 1 dropout"):
        add_dropout_before_head(net, 0.1)


def test_add_dropout_before_head_on_resnet18_targets_fc():
    import torchvision

    net = torchvision.models.resnet18(weights=None, num_classes=5)
    keys = list(net.state_dict())
    add_dropout_before_head(net, 0.3)
    assert list(net.state_dict()) == keys
    assert [n for n, m in net.named_modules() if isinstance(m, nn.Dropout)] == ["fc.mc_dropout"]


# ---------------------------------------------------------------------------------------------
# core-set (greedy k-centre)
# ---------------------------------------------------------------------------------------------
def ref_k_center(pool: np.ndarray, labelled: np.ndarray, budget: int, first: int | None = None) -> list[int]:
    """Sener & Savarese's Algorithm 1 with explicit Euclidean distances, ties to the lowest index."""
    centres = [c for c in labelled]
    chosen = []
    for step in range(budget):
        if step == 0 and not centres:
            pick = first
        else:
            best, best_d = None, -1.0
            for i, x in enumerate(pool):
                if i in chosen:
                    continue
                d = min(math.sqrt(((x - c) ** 2).sum()) for c in centres)
                if d > best_d:
                    best, best_d = i, d
            pick = best
        chosen.append(pick)
        centres.append(pool[pick])
    return chosen


@pytest.mark.parametrize("max_lazy_checks", [1, 64])  # 1: a full update whenever a bound was loose
def test_k_center_greedy_matches_reference_with_labelled_centres(max_lazy_checks):
    rng = np.random.default_rng(0)
    pool, labelled = rng.normal(size=(60, 5)), rng.normal(size=(6, 5))
    got = k_center_greedy(
        torch.from_numpy(pool), torch.from_numpy(labelled), 12, chunk_rows=7, max_lazy_checks=max_lazy_checks
    )
    assert got.tolist() == ref_k_center(pool, labelled, 12)


def test_k_center_greedy_without_labelled_items_starts_from_the_seeded_draw():
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(40, 3)).astype(np.float32)
    first = int(torch.randint(40, (1,), generator=torch.Generator().manual_seed(5)))
    got = k_center_greedy(
        torch.from_numpy(pool), torch.empty(0, 3), 8, generator=torch.Generator().manual_seed(5)
    )
    assert got.tolist() == ref_k_center(pool.astype(np.float64), np.empty((0, 3)), 8, first=first)
    with pytest.raises(ValueError, match="generator"):
        k_center_greedy(torch.from_numpy(pool), torch.empty(0, 3), 2)


def test_k_center_greedy_never_repeats_an_item_when_points_run_out():
    pool = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    for checks in (1, 64):
        got = k_center_greedy(pool, torch.tensor([[0.0, 0.0]]), 4, max_lazy_checks=checks)
        assert got.tolist() == [1, 0, 2, 3]  # farthest first, then ties (distance 0) by position


# ---------------------------------------------------------------------------------------------
# BADGE
# ---------------------------------------------------------------------------------------------
def explicit_embeddings(probs: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """The paper's gradient embeddings (p - onehot(argmax p)) (x) h, built explicitly: [N, C*D]."""
    n, c = probs.shape
    onehot = np.eye(c)[probs.argmax(axis=1)]
    return np.einsum("nc,nd->ncd", probs - onehot, feats).reshape(n, -1)


def ref_badge(
    emb: np.ndarray, budget: int, generator: torch.Generator, refresh_every: int, max_rejections: int
) -> list[int]:
    """k-means++ seeding with explicit distances; D^2 draws by the documented rejection scheme
    (proposals from the weights as of the last refresh, accepted with current / stale weight)."""
    n = emb.shape[0]
    chosen = [int(np.argmax(np.linalg.norm(emb, axis=1)))]

    def weight(i):
        return 0.0 if i in chosen else min(float(((emb[i] - emb[c]) ** 2).sum()) for c in chosen)

    stale, since_refresh, rejections = None, 1, 0
    while len(chosen) < budget:
        if (
            stale is None
            or (refresh_every and since_refresh >= refresh_every)
            or rejections >= max_rejections
        ):
            stale = np.array([weight(i) for i in range(n)])
            since_refresh, rejections = 0, 0
        cumulative = np.cumsum(stale)
        if cumulative[-1] <= 0:
            pick = min(set(range(n)) - set(chosen))
        else:
            u1, u2 = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
            pick = min(int(np.searchsorted(cumulative, u1 * cumulative[-1], side="right")), n - 1)
            if not u2 * stale[pick] < weight(pick):
                rejections += 1
                continue
        chosen.append(pick)
        since_refresh, rejections = since_refresh + 1, 0
    return chosen


@pytest.mark.parametrize(
    "classes, dim, refresh_every, max_rejections",
    [(3, 4, 1, 16), (3, 4, 4, 1), (10, 6, None, 16), (10, 6, None, 1)],
)
def test_badge_matches_explicit_gradient_embedding_reference(classes, dim, refresh_every, max_rejections):
    rng = np.random.default_rng(classes + (refresh_every or 0))
    logits = rng.normal(size=(50, classes)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    feats = rng.normal(size=(50, dim))
    budget = 12
    got = badge_select(
        torch.from_numpy(probs),
        torch.from_numpy(feats),
        budget,
        generator=torch.Generator().manual_seed(3),
        refresh_every=refresh_every,
        max_rejections=max_rejections,
        chunk_rows=16,
    )
    expected = ref_badge(
        explicit_embeddings(probs, feats),
        budget,
        torch.Generator().manual_seed(3),
        refresh_every,
        max_rejections,
    )
    assert got.tolist() == expected
    assert len(set(got.tolist())) == budget


def test_badge_draws_follow_d2_sampling():
    """Frequencies of the (second, third) picks against k-means++' analytic probabilities: the third
    pick goes through the rejection step (no refresh between the second and the third)."""
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(3), size=5)
    feats = rng.normal(size=(5, 2))
    probs[2], feats[2] = probs[1], feats[1]  # a duplicate: once one is a centre, the other weighs 0
    emb = explicit_embeddings(probs, feats)
    d2 = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(axis=2)
    first = int(np.argmax(np.linalg.norm(emb, axis=1)))
    expected = {}
    for second in range(5):
        for third in range(5):
            if len({first, second, third}) == 3:
                w2 = d2[first] / d2[first].sum()
                w3 = np.minimum(d2[first], d2[second])
                w3[[first, second]] = 0
                expected[(second, third)] = w2[second] * w3[third] / w3.sum()
    draws = 300
    counts = dict.fromkeys(expected, 0)
    g = torch.Generator().manual_seed(0)
    p_t, f_t = torch.from_numpy(probs), torch.from_numpy(feats)
    for _ in range(draws):
        _, second, third = badge_select(p_t, f_t, 3, generator=g).tolist()
        counts[(second, third)] += 1
    keys = list(expected)
    exp = np.array([expected[k] for k in keys])
    freq = np.array([counts[k] / draws for k in keys])
    tolerance = 4.5 * np.sqrt(exp * (1 - exp) / draws) + 1e-3
    assert np.all(np.abs(freq - exp) < tolerance), (freq, exp)
    # a sampler ignoring the second centre (third drawn from d2[first] alone) would fail
    wrong = np.array(
        [d2[first][s] / d2[first].sum() * d2[first][t] / (d2[first].sum() - d2[first][s]) for s, t in keys]
    )
    assert np.any(np.abs(wrong - exp) > 3 * tolerance)


def test_badge_is_seeded():
    g = torch.Generator().manual_seed(0)
    probs, feats = torch.softmax(torch.randn(200, 5, generator=g), 1), torch.randn(200, 8, generator=g)
    runs = [badge_select(probs, feats, 20, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


# ---------------------------------------------------------------------------------------------
# learning loss
# ---------------------------------------------------------------------------------------------
def test_ranking_loss_by_hand():
    # B = 4 -> pairs (0, 3) and (1, 2)
    predicted = torch.tensor([0.5, 2.0, 1.8, 0.1])
    target = torch.tensor([1.0, 0.2, 0.9, 3.0])
    # pair (0, 3): l_0 = 1.0 < l_3 = 3.0 -> A = -1: max(0, +(0.5 - 0.1) + 1) = 1.4
    # pair (1, 2): l_1 = 0.2 < l_2 = 0.9 -> A = -1: max(0, +(2.0 - 1.8) + 1) = 1.2
    assert loss_ranking_loss(predicted, target).item() == pytest.approx((1.4 + 1.2) / 2)
    # right order by more than the margin -> 0; B = 5 leaves the middle item (index 2) out
    predicted = torch.tensor([3.0, 0.0, 99.0, 5.0, 0.5])
    target = torch.tensor([2.0, 0.0, -7.0, 1.0, 0.1])
    # (0, 4): A = +1, max(0, -(3.0 - 0.5) + 1) = 0; (1, 3): A = -1, max(0, (0.0 - 5.0) + 1) = 0
    assert loss_ranking_loss(predicted, target).item() == 0.0
    # equal true losses count as A = -1 ("otherwise"): max(0, (1.0 - 0.5) + 1) = 1.5
    assert loss_ranking_loss(torch.tensor([1.0, 0.5]), torch.tensor([2.0, 2.0])).item() == pytest.approx(1.5)


def test_learning_loss_objective_weights_and_gradients():
    target_loss = torch.tensor([1.0, 0.2, 0.9, 3.0], requires_grad=True)
    predicted = torch.tensor([0.5, 2.0, 1.8, 0.1], requires_grad=True)
    total = learning_loss_objective(target_loss, predicted, weight=0.5)
    assert total.item() == pytest.approx((1.0 + 0.2 + 0.9 + 3.0) / 4 + 0.5 * 1.3)
    total.backward()
    # the true losses enter the ranking term as constants: their gradient is the mean's, 1/4
    np.testing.assert_allclose(target_loss.grad.numpy(), [0.25] * 4)
    # d/d l_hat: pair (0, 3) with A = -1 -> +1 on l_hat_0, -1 on l_hat_3, times 0.5 / 2 pairs
    np.testing.assert_allclose(predicted.grad.numpy(), [0.25, 0.25, -0.25, -0.25])


def test_loss_prediction_module_by_hand():
    module = LossPredictionModule([2, 3], width=4)
    with torch.no_grad():
        for branch in module.branches:
            branch[2].weight.fill_(1.0)
            branch[2].bias.fill_(-1.0)
        module.head.weight.fill_(0.5)
        module.head.bias.fill_(0.25)
    maps = [
        torch.ones(2, 2, 3, 3) * torch.tensor([1.0, 2.0]).view(2, 1, 1, 1),
        torch.full((2, 3, 5, 5), -1.0),
    ]
    # map 1 pooled: item 0 -> (1, 1), item 1 -> (2, 2): FC -> 1+1-1 = 1 or 2+2-1 = 3 (x4), ReLU
    # map 2 pooled: (-1, -1, -1) -> -4 -> ReLU 0; head: 0.5 * 4 * (1 or 3) + 0.25
    np.testing.assert_allclose(module(maps).detach().numpy(), [2.25, 6.25])


# ---------------------------------------------------------------------------------------------
# stochastic batch acquisition
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["power", "softmax", "soft_rank"])
def test_stochastic_large_beta_gives_top_k_and_is_seeded(mode):
    scores = torch.rand(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    top = torch.topk(scores, 5).indices.tolist()
    got = stochastic_select(scores, 5, mode=mode, beta=1e6, generator=torch.Generator().manual_seed(1))
    assert got.tolist() == top
    runs = [
        stochastic_select(scores, 10, mode=mode, beta=1.0, generator=torch.Generator().manual_seed(s))
        for s in (4, 4, 5)
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert len(set(runs[0].tolist())) == 10


def test_stochastic_log_weights_by_hand():
    scores = torch.tensor([0.5, 0.0, 0.2, 0.5])
    np.testing.assert_allclose(
        log_weights(scores, "power", 2.0).numpy(),
        [2 * math.log(0.5), -math.inf, 2 * math.log(0.2), 2 * math.log(0.5)],
    )
    np.testing.assert_allclose(log_weights(scores, "softmax", 3.0).numpy(), [1.5, 0.0, 0.6, 1.5])
    # ranks: 0.5 (pos 0) -> 1, 0.5 (pos 3) -> 2, 0.2 -> 3, 0.0 -> 4
    np.testing.assert_allclose(
        log_weights(scores, "soft_rank", 1.0).numpy(), [0.0, -math.log(4), -math.log(3), -math.log(2)]
    )
    # zero-weight items come last, in position order
    got = stochastic_select(scores[:3], 3, mode="power", beta=1.0, generator=torch.Generator().manual_seed(0))
    assert got[2] == 1
    with pytest.raises(ValueError, match="scores >= 0"):
        log_weights(torch.tensor([-0.1, 1.0]), "power", 1.0)


@pytest.mark.parametrize("mode, beta", [("power", 1.0), ("softmax", 2.0), ("soft_rank", 1.5)])
def test_stochastic_frequencies_match_successive_sampling_probabilities(mode, beta):
    scores = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)
    w = {
        "power": scores.numpy() ** beta,
        "softmax": np.exp(beta * scores.numpy()),
        "soft_rank": np.array([1.0, 2.0, 3.0]) ** -beta,
    }[mode]
    w = w / w.sum()
    # ordered pairs (first, second) drawn successively without replacement: w_i * w_j / (1 - w_i)
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    expected = np.array([w[i] * w[j] / (1 - w[i]) for i, j in pairs])
    draws = 3000
    g = torch.Generator().manual_seed(11)
    counts = dict.fromkeys(pairs, 0)
    for _ in range(draws):
        first, second = stochastic_select(scores, 2, mode=mode, beta=beta, generator=g).tolist()
        counts[(first, second)] += 1
    freq = np.array([counts[p] / draws for p in pairs])
    tolerance = 4.5 * np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(freq - expected) < tolerance), (freq, expected)
    # the test can fail: uniform pairs (1/6 each) or top-k (all mass on (0, 1)) are far outside
    assert np.any(np.abs(expected - 1 / 6) > 3 * tolerance)
    assert np.any(np.abs(expected - np.eye(6)[0]) > 3 * tolerance)
