"""Scorers: from a batch of model outputs to one float per item, and the plug-in ``Scorer``.

Higher score = more worth selecting. The uncertainty formulas are exactly the
thesis' equations 3.1-3.3 (each normalised to [0, 1]); ``loss`` is the model's own
cross-entropy against the true label ("loss descending"). Nothing here imports
Lightning, so every formula is tested in milliseconds; ``get_scorer`` alone reads a
scorer's yaml. A new scorer is a ``Scorer`` subclass in its own module under
``src/selection/`` and a ``conf/scorer/<name>.yaml`` naming it as ``_target_``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from src.errors import UserError
from src.tensors import at_least_float32


def class_count(probs: torch.Tensor, layout: str = "[N, C]") -> int:
    """The number of classes C (the last dimension) of probabilities laid out as ``layout``
    ("[N, C]", or "[T, B, C]" for MC passes); a ValueError for another shape or C < 2."""
    if probs.ndim != layout.count(",") + 1:
        raise ValueError(f"expected probabilities of shape {layout}, got {tuple(probs.shape)}")
    n_classes = probs.shape[-1]
    if n_classes < 2:
        raise ValueError(f"uncertainty scores need at least 2 classes, got {n_classes}")
    return n_classes


def least_confidence(probs: torch.Tensor) -> torch.Tensor:
    """(1 - p(y*)) * n / (n - 1)   (thesis eq. 3.1)."""
    n = class_count(probs)
    top = probs.max(dim=1).values
    return ((1.0 - top) * (n / (n - 1))).clamp_(0.0, 1.0)


def margin(probs: torch.Tensor) -> torch.Tensor:
    """1 - (p(y1*) - p(y2*))   (thesis eq. 3.2)."""
    class_count(probs)
    top2 = probs.topk(2, dim=1).values
    return (1.0 - (top2[:, 0] - top2[:, 1])).clamp_(0.0, 1.0)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """-sum_y p log2 p / log2 n, with 0 log 0 = 0   (thesis eq. 3.3)."""
    n = class_count(probs)
    # xlogy gives exactly 0 for p = 0, where p * log(p) would be nan.
    nats = -torch.special.xlogy(probs, probs).sum(dim=1)
    return (nats / math.log(n)).clamp_(0.0, 1.0)


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-item cross-entropy with the true label: the classifier's own training loss."""
    return F.cross_entropy(at_least_float32(logits), labels, reduction="none")


UNCERTAINTY = {
    "least_confidence": least_confidence,
    "margin": margin,
    "entropy": entropy,
}
CONF_SCORERS = Path(__file__).resolve().parent.parent.parent / "conf" / "scorer"


def scorer_names() -> list[str]:
    """The scorers a run can name: one ``conf/scorer/<name>.yaml`` each (nothing else lists them)."""
    return sorted(p.stem for p in CONF_SCORERS.glob("*.yaml"))


# What a task's per-batch outputs view (``src.tasks``) may be asked for; a scorer declares
# the ones it reads in ``uses`` and a task the ones it provides.
OUTPUTS = {
    "probabilities": "class probabilities (outputs.uncertainty(fn) applies fn to them)",
    "loss": "each item's loss against its true label (outputs.loss(); needs labels)",
    "logits": "a classifier's logits (outputs.logits())",
    "features": "penultimate-layer features (outputs.features())",
    "mc_probabilities": "one class distribution per item and MC-dropout pass (outputs.mc_probabilities(T): "
    "[T, B, C] softmax)",
    "mc_uncertainty": "MC-dropout passes (outputs.mc_uncertainty(quantity, T): one BALD or MC-entropy score "
    "per item)",
    "forward": "a forward pass a scorer's feature hooks read (outputs.forward())",
}


class Scorer:
    """A plug-in scorer, built from ``conf/scorer/<name>.yaml`` by its ``_target_``.

    What the loop needs to know is declared on the class:
      * ``uses``: the per-item model outputs it reads (keys of ``OUTPUTS``); empty means
        no model at all (``random``), ``"loss"`` means it needs the true labels;
      * ``joint``: False for a scorer of independent items (``batch_scores``), True for one
        that chooses the batch jointly (``collector`` + ``choose``: core-set, BADGE, BatchBALD);
      * ``uses_labelled``: a joint scorer that also needs the labelled items' outputs.
    Hooks with defaults: ``prepare_model`` (adapt the network before its starting weights are
    kept: add dropout, attach a module), ``pool_context`` (RNG of a stochastic pool pass),
    ``check`` (one-line UserError for a setting it cannot honour, before any work).

    ``stochastic`` (Kirsch et al. 2023) turns any score-based scorer's top-k into sampling:
    ``{mode: power | softmax | soft_rank, beta: temperature}``, mode null = off.
    """

    uses: frozenset = frozenset()
    joint = False
    uses_labelled = False
    # names of the modules ``prepare_model`` attaches to the model: the scorer's, not the network's,
    # so ``save_model`` leaves their weights out (src.select rebuilds the network alone)
    attached: tuple[str, ...] = ()
    of_probabilities: Callable[[torch.Tensor], torch.Tensor] | None = None  # a per-distribution uncertainty

    def __init__(self, name: str, stochastic: dict | None = None):
        self.name = name
        self.stochastic = dict(stochastic) if stochastic and stochastic.get("mode") is not None else None
        if self.stochastic is not None:
            from src.selection.stochastic import MODES

            beta = self.stochastic.get("beta", 1.0)
            if self.stochastic["mode"] not in MODES:
                raise UserError(
                    f"scorer.stochastic.mode={self.stochastic['mode']!r}; allowed: null, {', '.join(MODES)}"
                )
            if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta < 0:
                raise UserError(f"scorer.stochastic.beta={beta!r} must be a number >= 0")
            self.stochastic["beta"] = float(beta)

    @property
    def needs_model(self) -> bool:
        return bool(self.uses)

    @property
    def adapts_model(self) -> bool:
        """Whether it changes the model before the run trains it (``prepare_model``: dropout added, a
        module attached): a saved network, rebuilt from its config alone, lacks that."""
        return type(self).prepare_model is not Scorer.prepare_model

    @property
    def needs_labels(self) -> bool:
        return "loss" in self.uses

    def check(self, task_name: str, provided: frozenset, selection) -> None:
        """UserError, before any work, for a task or selection setting this scorer cannot honour."""
        missing = sorted(self.uses - provided)
        if missing:
            needs = OUTPUTS[missing[0]].split(" (")[0]
            raise UserError(
                f"scorer={self.name} is not available for task_type={task_name}: it needs {needs}, "
                "which that task does not provide; choose another scorer"
            )
        if self.stochastic is not None and (self.joint or not self.needs_model):
            raise UserError(
                f"scorer.stochastic: scorer={self.name} has no scores to sample from "
                "(it chooses jointly or at random); set scorer.stochastic.mode=null"
            )

    def prepare_model(self, model, datamodule) -> None:
        """Adapt ``model`` before its starting weights are kept (default: nothing)."""

    def pool_context(self, model, seed: int):
        """Context of one pool pass (default: none; MC dropout seeds its masks here)."""
        return contextlib.nullcontext()

    def batch_scores(self, outputs) -> torch.Tensor | None:
        """One score per item of a batch (higher = select first) from the task's outputs view."""
        raise UserError(f"scorer={self.name} chooses a batch jointly and gives no per-item scores here")

    def scores_without_model(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} scores with the model")

    def collector(self, n: int):
        """A joint scorer's per-pool store, fed each batch's outputs view by ``add(outputs)``."""
        raise NotImplementedError(f"{self.name} scores items independently")

    def choose(self, pool, labelled, budget: int, generator: torch.Generator) -> torch.Tensor:
        """A joint scorer's choice: ``budget`` positions into the pool, in the order chosen."""
        raise NotImplementedError(f"{self.name} scores items independently")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class RandomScorer(Scorer):
    """Seeded uniform scores: ranking by them is a random permutation (no model pass)."""

    def scores_without_model(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return random_scores(n, generator)


class UncertaintyScorer(Scorer):
    """One of the thesis' uncertainty formulas (``UNCERTAINTY``) of the predicted distribution."""

    uses = frozenset({"probabilities"})

    def __init__(self, name: str, formula: str | None = None, stochastic: dict | None = None):
        super().__init__(name, stochastic)
        formula = formula or name
        if formula not in UNCERTAINTY:
            raise UserError(f"scorer.formula={formula!r}; allowed: {', '.join(UNCERTAINTY)}")
        self.of_probabilities: Callable[[torch.Tensor], torch.Tensor] = UNCERTAINTY[formula]

    def batch_scores(self, outputs) -> torch.Tensor:
        return outputs.uncertainty(self.of_probabilities)

    def score_logits(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.of_probabilities(torch.softmax(at_least_float32(logits), dim=1))


class LossScorer(Scorer):
    """Loss descending (thesis 3.1.3): the model's own loss with the true label."""

    uses = frozenset({"loss"})

    def batch_scores(self, outputs) -> torch.Tensor:
        return outputs.loss()

    def score_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cross_entropy_loss(logits, labels)


class RowCollector:
    """A joint scorer's per-item rows of the whole pool: ``rows_of(outputs)`` gives a batch's rows
    as named tensors [B, ...]; they are stored in pool order on the CPU, allocated on the first batch."""

    def __init__(self, n: int, rows_of: Callable[[object], dict[str, torch.Tensor]]):
        self.n, self.rows_of, self.filled = n, rows_of, 0
        self.rows: dict[str, torch.Tensor] = {}

    def add(self, outputs) -> None:
        batch = self.rows_of(outputs)
        size = next(iter(batch.values())).shape[0]
        for key, value in batch.items():
            if key not in self.rows:
                self.rows[key] = torch.empty((self.n, *value.shape[1:]), dtype=value.dtype)
            self.rows[key][self.filled : self.filled + size] = value.detach().cpu()
        self.filled += size

    def get(self, key: str, shape_like: torch.Tensor | None = None) -> torch.Tensor:
        """The rows of ``key``; with nothing collected, an empty [0, ...] tensor shaped like ``shape_like``'s rows."""
        if key in self.rows:
            return self.rows[key][: self.filled]
        return shape_like.new_empty((0, *shape_like.shape[1:]))


def build_scorer(node, ignore: tuple[str, ...] = ()) -> Scorer:
    """The scorer of a ``scorer`` config node (``_target_`` + its arguments); ``ignore``: task options."""
    from src.config.instantiate import build

    cfg = {k: v for k, v in dict(node).items() if k not in ignore}
    if "_target_" not in cfg:
        raise UserError(
            f"scorer={cfg.get('name')!r} has no _target_ (the Scorer class its yaml builds); "
            f"known scorers: {', '.join(scorer_names())}"
        )
    scorer = build(cfg)
    if not isinstance(scorer, Scorer):
        raise UserError(f"scorer._target_={cfg['_target_']} is not a src.selection.scorers.Scorer")
    return scorer


def get_scorer(name: str) -> Scorer:
    """The scorer ``conf/scorer/<name>.yaml`` builds, with its defaults."""
    path = CONF_SCORERS / f"{name}.yaml"
    if name not in scorer_names():
        raise UserError(f"scorer.name={name!r} is not a known scorer; allowed: {', '.join(scorer_names())}")
    return build_scorer(yaml.safe_load(path.read_text()) or {})


def random_scores(n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform scores: ranking by them is a seeded random permutation."""
    return torch.rand(n, generator=generator, dtype=torch.float64)
