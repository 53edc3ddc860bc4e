"""``scorer=bald`` and ``scorer=mc_entropy``: MC dropout (Gal et al. 2017), BatchBALD as an option.

Each pool batch goes through ``passes`` (T) forward passes with the dropout layers on and
the rest of the network in eval mode (``src.models.mc_dropout``); the [T, B, C] softmax
of one batch becomes one score per item (``src.selection.bald``), so the pool pass holds
O(pool) floats, never T x N x C. The dropout masks are drawn from a seed derived from
(run seed, round), so a selection is reproducible.

A network without dropout (resnet18, the torchvision ResNets) gets ``Dropout(dropout)``
on the input of its last Linear layer when ``scorer.dropout`` is set; it is added before
the starting weights are kept, so every round trains with it, as MC dropout assumes. A
network that has dropout (small_cnn, VGG-16) uses its own; setting ``scorer.dropout`` on
it is refused rather than silently stacking a second dropout.

Detection (SSD): the dropout goes before the classification head, on each of the feature
maps it reads (``SSDDetector.mc_dropout_head``; the box head and the backbone stay
deterministic, so the passes share the backbone, the anchors and the boxes); the head
runs T times per batch and the per-anchor BALD or MC entropy of the top-k detections of
the mean prediction is aggregated per image like the detection uncertainty scorers
(``src.tasks.detection.DetectorOutputs.mc_uncertainty``). SSD has no dropout, so
``scorer.dropout`` is required there.

BatchBALD (Kirsch et al. 2019), ``scorer.batch_bald.enabled=true`` with ``scorer=bald``:
the pool pass keeps the [T, C] probabilities of the ``candidates`` items of highest BALD
(a running top-m, O(m T C) memory), and the batch is chosen greedily among them by the
batch mutual information (``src.selection.bald.batch_bald``). A small-budget method: the
budget must fit in the candidates, and the pivot window and class diversity, which need
a ranking of the whole pool, are refused with it. Classification only: a detection image
has many boxes, not one [T, C] distribution.
"""

from __future__ import annotations

import contextlib

import torch

from src.errors import UserError
from src.models.mc_dropout import add_dropout_before_head, dropout_layers
from src.selection import bald as bald_math
from src.selection.scorers import Scorer

QUANTITIES = tuple(bald_math.OF_MOMENTS)


class MCDropoutScorer(Scorer):
    uses = frozenset({"mc_uncertainty"})  # BatchBALD: {"mc_probabilities"}

    def __init__(
        self,
        name: str,
        quantity: str = "bald",
        passes: int = 20,
        dropout: float | None = None,
        batch_bald: dict | None = None,
        stochastic: dict | None = None,
    ):
        super().__init__(name, stochastic)
        if quantity not in QUANTITIES:
            raise UserError(f"scorer.quantity={quantity!r}; allowed: {', '.join(QUANTITIES)}")
        if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
            raise UserError(
                f"scorer.passes={passes!r} must be a positive integer (stochastic forward passes)"
            )
        if dropout is not None and not (isinstance(dropout, (int, float)) and 0.0 < dropout < 1.0):
            raise UserError(
                f"scorer.dropout={dropout!r} must be null (the network's own dropout) or in (0, 1)"
            )
        self.quantity, self.passes, self.dropout = quantity, passes, dropout
        self.batch_bald = dict(batch_bald or {})
        self.joint = bool(self.batch_bald.pop("enabled", False))
        if self.joint:
            self.uses = frozenset({"mc_probabilities"})
        self.candidates = self.batch_bald.pop("candidates", 200)
        if self.joint and quantity != "bald":
            raise UserError(f"scorer.batch_bald.enabled=true needs scorer.quantity=bald, not {quantity!r}")
        if self.joint and (
            isinstance(self.candidates, bool) or not isinstance(self.candidates, int) or self.candidates < 1
        ):
            raise UserError(f"scorer.batch_bald.candidates={self.candidates!r} must be a positive integer")
        unknown = set(self.batch_bald) - {"max_exact_configs", "num_samples"}
        if unknown:
            raise UserError(
                f"scorer.batch_bald.{sorted(unknown)[0]} is not an option; allowed: enabled, "
                "candidates, max_exact_configs, num_samples"
            )

    def check(self, task_name: str, provided: frozenset, selection) -> None:
        if self.joint and "mc_probabilities" not in provided and "mc_uncertainty" in provided:
            raise UserError(
                f"scorer.batch_bald.enabled=true is not available for task_type={task_name}: BatchBALD "
                "needs one [T, C] distribution per item and an image has many detections; "
                f"use scorer={self.name} without it"
            )
        super().check(task_name, provided, selection)
        if not self.joint:
            return
        budgets = list(selection.budget) if not isinstance(selection.budget, int) else [selection.budget]
        largest = sum(budgets) if selection.mode == "reselect" else max(budgets)
        if largest > self.candidates:
            raise UserError(
                f"scorer.batch_bald.candidates={self.candidates} is smaller than a selection of "
                f"{largest} items; raise it or lower selection.budget (BatchBALD is for small budgets)"
            )
        if selection.pivot != 0 or selection.diversity.enabled:
            raise UserError(
                "scorer.batch_bald: BatchBALD chooses the top batch jointly; selection.pivot and "
                "selection.diversity need a ranking of the whole pool (use it with scorer=bald alone)"
            )

    def prepare_model(self, model, datamodule) -> None:
        net = getattr(model, "net", model)
        # a detector names its classification head; a classifier's head is its last Linear layer
        head = model.mc_dropout_head() if hasattr(model, "mc_dropout_head") else None
        if dropout_layers(net) and self.dropout is not None:
            raise UserError(
                f"scorer.dropout={self.dropout}: {type(net).__name__} has dropout layers already and MC "
                "dropout uses them; set scorer.dropout=null"
            )
        if not dropout_layers(net):
            if self.dropout is None:
                where = "its classification head" if head is not None else "its head"
                raise UserError(
                    f"scorer={self.name}: {type(net).__name__} has no dropout layer, so all MC passes "
                    f"would agree; set scorer.dropout=<p>, e.g. 0.5, to add Dropout(p) before {where}"
                )
            add_dropout_before_head(net, float(self.dropout), head=head)

    @contextlib.contextmanager
    def pool_context(self, model, seed: int):
        """Dropout masks from ``seed``; the global RNG is restored afterwards."""
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    def batch_scores(self, outputs) -> torch.Tensor:
        return outputs.mc_uncertainty(self.quantity, self.passes)

    # -- BatchBALD ------------------------------------------------------------------------
    def collector(self, n: int) -> TopCandidates:
        return TopCandidates(self.candidates, self.passes)

    def choose(self, pool: TopCandidates, labelled, budget: int, generator: torch.Generator) -> torch.Tensor:
        chosen, _ = bald_math.batch_bald(
            pool.probs.transpose(0, 1).contiguous(), budget, generator=generator, **self.batch_bald
        )
        return pool.positions[chosen]


class TopCandidates:
    """The m pool items of highest BALD seen so far, with their [T, C] probabilities (ties: lower position)."""

    def __init__(self, m: int, passes: int):
        self.m, self.passes, self.seen = m, passes, 0
        self.scores = torch.empty(0, dtype=torch.float64)
        self.positions = torch.empty(0, dtype=torch.int64)
        self.probs: torch.Tensor | None = None  # [m, T, C]

    def add(self, outputs) -> None:
        probs = outputs.mc_probabilities(self.passes).cpu()  # [T, B, C]
        batch = probs.shape[1]
        scores = torch.cat([self.scores, bald_math.bald(probs).double()])
        positions = torch.cat([self.positions, torch.arange(self.seen, self.seen + batch)])
        rows = probs.transpose(0, 1) if self.probs is None else torch.cat([self.probs, probs.transpose(0, 1)])
        # kept rows come first and precede the batch in position: a stable sort keeps ties by position
        keep = torch.sort(-scores, stable=True).indices[: self.m]
        self.scores, self.positions, self.probs = scores[keep], positions[keep], rows[keep]
        self.seen += batch
