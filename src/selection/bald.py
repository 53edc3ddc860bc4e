"""BALD, MC entropy and BatchBALD from T stochastic forward passes (MC dropout).

Inputs are softmax probabilities of T stochastic passes over one batch, shaped
``[T, B, C]``. The pool pass calls ``bald`` / ``mc_entropy`` batch by batch and keeps
one float per item, so pool memory stays O(pool): a ``[T, B, C]`` tensor only ever
exists for one batch, never ``T x N x C`` for the pool.

Units. The thesis normalises its entropy scorer by log n (eq. 3.3), so scores of
different class counts share the range [0, 1]. ``mc_entropy`` does the same, and with
T = 1 it equals the thesis' ``entropy`` scorer exactly. ``bald`` is normalised by the
same log C: the mutual information I(y; w | x) = H[mean_t p_t] - mean_t H[p_t] is at
most H[mean_t p_t] <= log C, so the normalised value lies in [0, 1] and is directly
comparable with ``mc_entropy`` (bald <= mc_entropy, the gap being the expected
aleatoric entropy). Ranking is unaffected: dividing by the constant log C is monotone.
Multiply by ln C to get nats (what baal and the papers report), by log2 C for bits.

Both scores need only two running sums over the passes, the mean prediction
mean_t p_t and the mean entropy mean_t H[p_t] (``PassMoments``): a detector
accumulates them per anchor pass by pass, so its pool pass holds two anchor-sized
tensors per batch whatever T is, and ``bald_of_moments`` / ``mc_entropy_of_moments``
give the same numbers as ``bald`` / ``mc_entropy`` of the stacked passes.

BatchBALD (Kirsch et al., NeurIPS 2019) chooses a batch jointly: greedily add the
candidate j maximising the batch mutual information
    a(A + j) = H(y_A, y_j) - sum_{i in A + j} E_w H(y_i | w),
whose argmax over j equals that of H(y_j | y_A) - E_w H(y_j | w). With the T passes
as equally weighted parameter samples w_t, the configurations y_A of the already chosen
items have p(y_A | w_t) = prod_i p_t,i(y_i). While C^|A| is at most
``max_exact_configs`` every configuration is enumerated (exact); beyond that,
``num_samples`` configurations are drawn from p(y_A) with a seeded generator and the
conditional entropy is their Monte-Carlo average (the paper's sampling estimator).
Configurations are kept as log-probabilities and turned into posterior weights over
the T samples, so nothing underflows however large the batch grows. BatchBALD holds
``[T, N, C]`` for its N candidates: use it on a candidate set (e.g. the top few
thousand by BALD) and small budgets; its cost per chosen item is
O(N * S * T * C) for S configurations.
"""

from __future__ import annotations

import math

import torch

from src.selection.scorers import class_count


def _check_mc_probs(probs: torch.Tensor) -> int:
    return class_count(probs, "[T, B, C]")


def _entropy_nats(probs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    # xlogy is exactly 0 at p = 0, where p * log(p) would be nan.
    return -torch.special.xlogy(probs, probs).sum(dim=dim)


def mc_entropy_of_moments(mean_probs: torch.Tensor, mean_entropy: torch.Tensor | None = None) -> torch.Tensor:
    """H[mean_t p_t] / log C from the mean prediction [..., C] -> [...] (``mean_entropy`` unused)."""
    n = class_count(mean_probs.reshape(-1, mean_probs.shape[-1]))
    return (_entropy_nats(mean_probs) / math.log(n)).clamp_(0.0, 1.0)


def bald_of_moments(mean_probs: torch.Tensor, mean_entropy: torch.Tensor) -> torch.Tensor:
    """(H[mean_t p_t] - mean_t H[p_t]) / log C from the mean prediction [..., C] and mean entropy [...]."""
    n = class_count(mean_probs.reshape(-1, mean_probs.shape[-1]))
    return ((_entropy_nats(mean_probs) - mean_entropy) / math.log(n)).clamp_(0.0, 1.0)


# a scorer's quantity by name, from the two moments of its passes
OF_MOMENTS = {"bald": bald_of_moments, "mc_entropy": mc_entropy_of_moments}


class PassMoments:
    """Running sums of T stochastic passes' probabilities [..., C] and their entropies [...],
    added one pass at a time: ``mean()`` is (mean_t p_t, mean_t H[p_t]), the inputs of ``OF_MOMENTS``."""

    def __init__(self) -> None:
        self.passes = 0
        self.sum_probs: torch.Tensor | None = None
        self.sum_entropy: torch.Tensor | None = None

    def add(self, probs: torch.Tensor) -> None:
        entropy = _entropy_nats(probs)
        if self.sum_probs is None:
            self.sum_probs, self.sum_entropy = probs.clone(), entropy
        else:
            self.sum_probs += probs
            self.sum_entropy += entropy
        self.passes += 1

    def mean(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.passes == 0:
            raise ValueError("no pass added")
        return self.sum_probs / self.passes, self.sum_entropy / self.passes


def mc_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of the mean prediction, H[mean_t p_t] / log C, in [0, 1]; [T, B, C] -> [B]."""
    _check_mc_probs(probs)
    return mc_entropy_of_moments(probs.mean(dim=0))


def bald(probs: torch.Tensor) -> torch.Tensor:
    """Mutual information (H[mean_t p_t] - mean_t H[p_t]) / log C, in [0, 1]; [T, B, C] -> [B]."""
    _check_mc_probs(probs)
    return bald_of_moments(probs.mean(dim=0), _entropy_nats(probs).mean(dim=0))


def bald_and_mc_entropy(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both scores from one pass over the batch (the mean's entropy is shared)."""
    n = _check_mc_probs(probs)
    total = _entropy_nats(probs.mean(dim=0))
    expected = _entropy_nats(probs).mean(dim=0)
    scale = math.log(n)
    return ((total - expected) / scale).clamp_(0.0, 1.0), (total / scale).clamp_(0.0, 1.0)


# -- BatchBALD ----------------------------------------------------------------------------------
def _conditional_entropy_given_configs(
    log_joint: torch.Tensor, config_weight: torch.Tensor, probs: torch.Tensor, chunk_elems: int
) -> torch.Tensor:
    """H(y_j | y_A) for every candidate j, in nats.

    ``log_joint`` [T, S]: log p(y_A = s | w_t) of S configurations; ``config_weight`` [S]:
    how each configuration counts (its probability p(s) when enumerated, 1/S when sampled);
    ``probs`` [T, N, C]. Given configuration s, y_j has the predictive distribution
    sum_t post[t, s] p_t,j with post[t, s] = p(w_t | y_A = s).
    """
    n_passes, n_items, n_classes = probs.shape
    posterior = torch.softmax(log_joint, dim=0)  # [T, S]
    n_configs = posterior.shape[1]
    rows = max(1, chunk_elems // max(1, n_configs * n_classes))
    out = torch.empty(n_items, dtype=probs.dtype)
    for start in range(0, n_items, rows):
        block = probs[:, start : start + rows]  # [T, b, C]
        predictive = torch.einsum("ts,tbc->bsc", posterior, block)  # [b, S, C]
        out[start : start + rows] = (_entropy_nats(predictive) * config_weight).sum(dim=1)
    return out


def _first_max(values: torch.Tensor) -> int:
    """Index of the largest value, the lowest index among equals (torch.argmax's documented rule)."""
    return int(torch.argmax(values))


def batch_bald(
    probs: torch.Tensor,
    budget: int,
    *,
    generator: torch.Generator,
    max_exact_configs: int = 4096,
    num_samples: int = 1000,
    chunk_elems: int = 1 << 22,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy BatchBALD over N candidates: ``probs`` [T, N, C] -> (chosen positions, gains).

    Returns the ``budget`` chosen candidate positions in the order chosen and, for each,
    the batch mutual information after adding it, a(A_1..k) in nats / ln C (the first
    equals the item's ``bald``). Ties go to the lowest position. Computed in float64.
    ``generator`` seeds the configuration sampling, used only once C^|A| exceeds
    ``max_exact_configs``; ``num_samples`` configurations are then drawn.
    """
    n_classes = _check_mc_probs(probs)
    n_passes, n_items, _ = probs.shape
    if not 0 < budget <= n_items:
        raise ValueError(f"budget={budget} must be in [1, {n_items}] (the number of candidates)")
    probs = probs.double()
    conditional = _entropy_nats(probs).mean(dim=0)  # E_w H(y_j | w), [N]
    log_probs = torch.log(probs.clamp_min(torch.finfo(torch.float64).tiny))

    # configurations of the chosen batch: log p(y_A = s | w_t); the empty batch has one
    log_joint = torch.zeros(n_passes, 1, dtype=torch.float64)
    sampled_passes: torch.Tensor | None = None  # w index of each sample
    chosen: list[int] = []
    gains: list[float] = []
    available = torch.ones(n_items, dtype=torch.bool)
    chosen_conditional = 0.0
    for _ in range(budget):
        config_weight = _config_weight(log_joint, sampled_passes)
        cond_given_batch = _conditional_entropy_given_configs(log_joint, config_weight, probs, chunk_elems)
        gain = (cond_given_batch - conditional).masked_fill(~available, -math.inf)
        j = _first_max(gain)
        batch_entropy = _entropy_of_configs(log_joint, sampled_passes) + float(cond_given_batch[j])
        chosen_conditional += float(conditional[j])
        chosen.append(j)
        gains.append((batch_entropy - chosen_conditional) / math.log(n_classes))
        available[j] = False
        log_joint, sampled_passes = _extend_configs(
            log_joint, sampled_passes, log_probs[:, j], probs[:, j], max_exact_configs, num_samples, generator
        )
    return torch.tensor(chosen, dtype=torch.int64), torch.tensor(gains, dtype=torch.float64)


def _config_weight(log_joint: torch.Tensor, sampled_passes: torch.Tensor | None) -> torch.Tensor:
    n_configs = log_joint.shape[1]
    if sampled_passes is not None:
        return torch.full((n_configs,), 1.0 / n_configs, dtype=torch.float64)
    # p(s) = mean_t p(s | w_t)
    return torch.exp(torch.logsumexp(log_joint, dim=0) - math.log(log_joint.shape[0]))


def _entropy_of_configs(log_joint: torch.Tensor, sampled_passes: torch.Tensor | None) -> float:
    """H(y_A) in nats: exact sum over the enumerated configurations, or the sample mean of -log p(s)."""
    log_marginal = torch.logsumexp(log_joint, dim=0) - math.log(log_joint.shape[0])
    if sampled_passes is not None:
        return float(-log_marginal.mean())
    return float(-(torch.exp(log_marginal) * log_marginal).sum())


def _extend_configs(
    log_joint, sampled_passes, log_probs_j, probs_j, max_exact_configs, num_samples, generator
):
    """Add item j to the batch's configurations (log_probs_j, probs_j: [T, C])."""
    n_passes, n_configs = log_joint.shape
    n_classes = log_probs_j.shape[1]
    if sampled_passes is None and n_configs * n_classes <= max_exact_configs:
        # every configuration s of A times every class of j, row-major: (s, c)
        return (log_joint[:, :, None] + log_probs_j[:, None, :]).reshape(n_passes, -1), None
    if sampled_passes is None:
        # switch to sampling: draw configurations of A from the mixture (1/T) sum_t p(s | w_t),
        # each sample remembering the pass t it was drawn under
        sampled_passes = torch.arange(num_samples) % n_passes
        config_probs = torch.softmax(log_joint[sampled_passes], dim=1)  # [M, S], rows sum to 1
        configs = torch.multinomial(config_probs, 1, generator=generator).squeeze(1)
        log_joint = log_joint[:, configs]  # [T, M]
    # draw y_j for every sample under its pass, then update p(y_A, y_j | w_t) for all t
    classes = torch.multinomial(probs_j[sampled_passes], 1, generator=generator).squeeze(1)  # [M]
    return log_joint + log_probs_j[:, classes], sampled_passes
