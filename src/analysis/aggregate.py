"""From run directories to groups of repetitions: loading, grouping, curves and AUCs.

Reads only what a run wrote (``.hydra/config.yaml``, ``.hydra/overrides.yaml``,
``.hydra/hydra.yaml``, ``rounds.jsonl``, ``summary.json``), each through ``files``: a
malformed one is one line naming it. A run without ``summary.json`` is still running or
crashed: it is kept up to its last completed round and flagged ``incomplete``.

Runs are grouped by the configuration keys whose values differ between them; the seed
(and everything derived from it) is the repetition, never a grouping key.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.analysis import files
from src.analysis.curves import normalised_auc
from src.analysis.trust import inside
from src.config.resolvers import format_value
from src.config.trust import check_resolvers
from src.errors import UserError
from src.records import RECORDS_FILE, RoundRecord, parse_records

# Keys that name or place a run rather than change its result; never grouping keys.
IGNORED_PREFIXES = ("hydra.", "paths.", "logger.")
IGNORED_KEYS = {"seed", "run_name", "resume", "progress", "task_name"}
# Round-record fields drawn like metrics besides val/* and test/*.
EPOCH_METRICS = ("epochs", "best_epoch")


@dataclass
class RunData:
    path: Path
    config: dict  # flattened, resolved where possible: "selection.pivot" -> 0.25
    overrides: list[str]
    records: list[RoundRecord]
    summary: dict | None  # None: still running or crashed
    # Hydra's config-group choices of the run (.hydra/hydra.yaml runtime.choices): "scorer" -> "entropy"
    choices: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def seed(self):
        return self.config.get("seed")

    @property
    def status(self) -> str:
        return "finished" if self.finished else "incomplete"

    @property
    def grows(self) -> bool:
        """Whether the labelled count rises from every round to the next (false for ``selection.mode=prune``)."""
        counts = [r.n_labelled for r in self.records]
        return all(a < b for a, b in zip(counts, counts[1:]))

    def final(self, metric: str) -> tuple[float, float]:
        """(labelled count, value) of the last completed round that has ``metric``; NaNs when none has it."""
        x, y = self.curve(metric)
        return (float(x[-1]), float(y[-1])) if x.size else (math.nan, math.nan)

    def curve(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(labelled count, value) of every completed round that has ``metric``, in round order."""
        pts = [
            (r.n_labelled, r.value(metric))
            for r in self.records
            if isinstance(r.value(metric), (int, float)) and not isinstance(r.value(metric), bool)
        ]
        if not pts:
            return np.zeros(0), np.zeros(0)
        x, y = zip(*pts)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


@dataclass
class Group:
    label: str
    key: tuple  # the values of the grouping keys
    runs: list[RunData] = field(default_factory=list)

    @property
    def n_incomplete(self) -> int:
        return sum(not r.finished for r in self.runs)

    @property
    def legend(self) -> str:
        """The thesis' ``name (runs)`` legend; incomplete runs are named so nobody mistakes them."""
        extra = f", {self.n_incomplete} incomplete" if self.n_incomplete else ""
        return f"{self.label} ({len(self.runs)}{extra})"


# -- loading --------------------------------------------------------------------------------
def flatten(node, prefix: str = "") -> dict:
    """Nested dicts to dotted keys; lists stay one value (a list of sources is one setting)."""
    out = {}
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    return out


def raw_config(run_dir: Path) -> dict:
    """The run's saved config as written, interpolations unresolved; {} when it has none."""
    path = inside(run_dir, ".hydra/config.yaml")
    return {} if path is None else OmegaConf.to_container(files.load_config(path), resolve=False)


def load_config(run_dir: Path) -> dict:
    """The run's saved config, resolved with the project's resolvers only (see ``trust``)."""
    path = inside(run_dir, ".hydra/config.yaml")
    if path is None:
        return {}
    cfg = files.load_config(path)  # PyYAML's safe loader: no tags, no objects
    check_resolvers(OmegaConf.to_container(cfg, resolve=False), path)
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:  # an interpolation that needs what only the run had: keep it literal
        return OmegaConf.to_container(cfg, resolve=False)


def load_overrides(run_dir: Path) -> list[str]:
    """The run's command-line overrides (``.hydra/overrides.yaml``: a list of ``key=value`` strings)."""
    path = inside(run_dir, ".hydra/overrides.yaml")
    if path is None:
        return []
    items = files.load_yaml(path)
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(o, (str, int, float, bool)) for o in items):
        raise UserError(f"{path}: not a list of overrides (key=value strings), as Hydra writes it")
    return [str(o) for o in items]


def load_choices(run_dir: Path) -> dict:
    """The run's config-group choices (``.hydra/hydra.yaml``, ``hydra.runtime.choices``); {} without the file.
    Read as plain YAML: nothing in it is resolved."""
    path = inside(run_dir, ".hydra/hydra.yaml")
    if path is None:
        return {}
    choices = files.load_yaml(path)
    for key in ("hydra", "runtime", "choices"):
        choices = choices.get(key) if isinstance(choices, dict) else None
    if choices is None:
        return {}
    if not isinstance(choices, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, (str, int, float))) for k, v in choices.items()
    ):
        raise UserError(f"{path}: hydra.runtime.choices is not a mapping of config groups to their options")
    return {k: None if v is None else str(v) for k, v in choices.items()}


def load_summary(run_dir: Path) -> dict | None:
    path = inside(run_dir, "summary.json")
    if path is None:
        return None
    summary = files.load_json(path)
    if not isinstance(summary, dict):
        raise UserError(f"{path}: not a JSON object (a run's summary is one), but {type(summary).__name__}")
    return summary


def load_records(run_dir: Path) -> list[RoundRecord]:
    """The run's completed round records (``rounds.jsonl``), as ``read_records`` reads them (a partial
    last line, a kill mid-write, is left out), each checked by ``RoundRecord.from_json`` (the checks a
    resume makes): a malformed line is one line naming it."""
    path = inside(run_dir, RECORDS_FILE)
    if path is None:
        return []
    return parse_records(files.read_text(path), path)


def load_run(run_dir: str | Path) -> RunData:
    run_dir = Path(run_dir)
    return RunData(
        path=run_dir,
        config=flatten(load_config(run_dir)),
        overrides=load_overrides(run_dir),
        records=load_records(run_dir),
        summary=load_summary(run_dir),
        choices=load_choices(run_dir),
    )


def find_run_dirs(paths) -> list[Path]:
    """Every run directory (one with ``rounds.jsonl`` or ``.hydra/config.yaml``) under the paths.

    A run directory reached through a symlink that leads out of the directory given is
    refused: what the report reads stays inside what the user named.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise UserError(f"{p}: no such run or multirun directory")
        if (p / "rounds.jsonl").exists() or (p / ".hydra" / "config.yaml").exists():
            found.append(p.resolve())
            continue
        for marker in sorted(p.rglob("rounds.jsonl")):
            if "wandb" not in marker.parts:
                run = inside(p, marker.parent.relative_to(p).as_posix())
                found.append(run.resolve())
    return sorted(dict.fromkeys(found))


def load_runs(paths) -> list[RunData]:
    """The runs under ``paths``; none at all is a user error (nothing to report)."""
    runs = [load_run(d) for d in find_run_dirs(paths)]
    runs = [r for r in runs if r.records or r.config]
    if not runs:
        raise UserError(
            f"{', '.join(map(str, paths))}: no runs to report (no rounds.jsonl under it); "
            "give a run directory or a multirun (sweep) directory"
        )
    return runs


# -- grouping -------------------------------------------------------------------------------
def _hashable(value):
    return json.dumps(value, sort_keys=True, default=str)


def _seed_derived(key: str, runs: list[RunData]) -> bool:
    """True for keys that equal the seed in every run (model.init.init_seed = ${seed})."""
    return all(r.config.get(key) == r.seed for r in runs)


def differing_keys(runs: list[RunData]) -> list[str]:
    keys = sorted({k for r in runs for k in r.config})
    out = []
    for k in keys:
        if k in IGNORED_KEYS or k.startswith(IGNORED_PREFIXES):
            continue
        if len({_hashable(r.config.get(k)) for r in runs}) > 1 and not _seed_derived(k, runs):
            out.append(k)
    return out


def _override_items(run: RunData) -> dict:
    items = OrderedDict()
    for o in run.overrides:
        if "=" not in o:
            continue
        k, v = o.split("=", 1)
        k = k.lstrip("+~")
        if k in IGNORED_KEYS or k in ("logger", "paths", "hydra") or k.startswith(IGNORED_PREFIXES):
            continue
        items[k] = v
    return items


def _short(key: str, value) -> str:
    """``scorer=entropy`` reads as ``entropy``; ``selection.pivot=0.25`` as ``pivot=0.25``."""
    if "." not in key:
        return format_value(value)
    return f"{key.rsplit('.', 1)[-1]}={format_value(value)}"


def _label_from_config(run: RunData, keys: list[str]) -> str:
    # When a `<group>...name` key differs (dataset.name, scorer.name), the group's other
    # differing keys follow from it: the name alone labels it.
    named_roots = {k.split(".")[0] for k in keys if k.endswith(".name")}
    shown = [k for k in keys if k.endswith(".name") or k.split(".")[0] not in named_roots]
    shorts = [k.rsplit(".", 1)[-1] for k in shown]
    parts = []
    for k in shown:
        v = run.config.get(k)
        if k.endswith(".name"):
            parts.append(format_value(v))
        elif shorts.count(k.rsplit(".", 1)[-1]) > 1:
            parts.append(f"{k}={format_value(v)}")
        else:
            parts.append(_short(k, v))
    return ", ".join(parts) if parts else "all runs"


def group_runs(runs: list[RunData], by: list[str] | None = None) -> tuple[list[Group], list[str]]:
    """Groups of repetitions and the keys that define them.

    ``by``: grouping keys named by the user (config keys such as ``selection.pivot``, or
    config-group overrides such as ``scorer``); default: every key that differs.
    Labels come from the runs' command-line overrides when those tell the groups apart
    exactly as the config does (they read like the sweep command), else from the keys.
    """
    if by:
        keys = [resolve_key(k, runs) for k in by]
    else:
        keys = differing_keys(runs)
    groups: OrderedDict[tuple, Group] = OrderedDict()
    for run in sorted(runs, key=lambda r: (tuple(_hashable(r.config.get(k)) for k in keys), str(r.path))):
        gk = tuple(_hashable(run.config.get(k)) for k in keys)
        if gk not in groups:
            groups[gk] = Group(label=_label_from_config(run, keys), key=gk)
        groups[gk].runs.append(run)
    out = list(groups.values())
    _relabel_from_overrides(out)
    _dedupe_labels(out)
    return out, keys


def resolve_key(name: str, runs: list[RunData]) -> str:
    """A config key as given, or a config-group name (``scorer``) as the key naming its choice (``scorer.name``)."""
    if any(name in r.config for r in runs):
        return name
    candidate = f"{name}.name"
    if any(candidate in r.config for r in runs):
        return candidate
    raise UserError(
        f"{name}: not a key of the runs' configs; give a config key (e.g. selection.pivot) "
        "or a config group (e.g. scorer)"
    )


def _chosen_overrides(groups: list[Group]) -> list[dict] | None:
    """Per group, the command-line overrides that set it apart from the others (``scorer=random``,
    ``selection.pivot=0.25``), when they tell the groups apart exactly as the config does; else None."""
    if len(groups) < 2:
        return None
    common = _common_overrides(groups)
    per_group = []
    for g in groups:
        variants = {
            _hashable({k: v for k, v in _override_items(r).items() if k not in common}) for r in g.runs
        }
        if len(variants) != 1:
            return None
        per_group.append({k: v for k, v in _override_items(g.runs[0]).items() if k not in common})
    if len({_hashable(p) for p in per_group}) != len(groups) or not all(per_group):
        return None
    return per_group


def _relabel_from_overrides(groups: list[Group]) -> None:
    per_group = _chosen_overrides(groups)
    if per_group is None:
        return
    for g, items in zip(groups, per_group):
        # a swept key's value as the config holds it (0 and 0.0 read alike); a group choice as typed
        g.label = ", ".join(_short(k, g.runs[0].config.get(k, v)) for k, v in items.items())


def grouping_names(groups: list[Group], keys: list[str], by: list[str] | None = None) -> list[str]:
    """What the groups differ in, as the user chose it: the names given to ``--group-by``; else the
    command-line choices that tell the groups apart (``scorer``, ``arm``, a key set directly such as
    ``selection.pivot``); else the differing config keys, those under a config group whose option
    differs (``.hydra/hydra.yaml``'s choices) named by the group instead of leaf by leaf."""
    if by:
        return list(dict.fromkeys(by))
    per_group = _chosen_overrides(groups)
    if per_group is not None:
        return list(dict.fromkeys(k for items in per_group for k in items))
    runs = [r for g in groups for r in g.runs]
    direct = {k for r in runs for k in _override_items(r) if k in keys}
    differing = [
        c
        for c in dict.fromkeys(c for r in runs for c in r.choices)
        if len({r.choices.get(c) for r in runs}) > 1 and not c.startswith(("hydra/", "hydra."))
    ]
    names = []
    for k in keys:
        group = next(
            (c for c in sorted(differing, key=len, reverse=True) if k.startswith(c.replace("/", ".") + ".")),
            None,
        )
        names.append(group if group is not None and k not in direct else k)
    return list(dict.fromkeys(names))


def _common_overrides(groups: list[Group]) -> set:
    all_runs = [r for g in groups for r in g.runs]
    first = _override_items(all_runs[0])
    return {k for k, v in first.items() if all(_override_items(r).get(k) == v for r in all_runs)}


def _dedupe_labels(groups: list[Group]) -> None:
    seen: dict[str, int] = {}
    for g in groups:
        seen[g.label] = seen.get(g.label, 0) + 1
        if seen[g.label] > 1:
            g.label = f"{g.label} #{seen[g.label]}"


# -- metrics, curves, AUCs ------------------------------------------------------------------
def metric_names(runs: list[RunData]) -> list[str]:
    """Every numeric per-round metric present: test/* first, then val/*, train/* (the history at the
    tested epoch), then epochs."""
    found = set()
    for r in runs:
        for rec in r.records:
            found.update(k for k, v in rec.metrics.items() if isinstance(v, (int, float)))
            found.update(k for k in (rec.history or {}) if k.startswith("train/"))
            found.update(EPOCH_METRICS)

    def order(k: str):
        head = (
            0 if k.startswith("test/") else 1 if k.startswith("val/") else 2 if k.startswith("train/") else 3
        )
        return (head, k.count("/"), k)

    return sorted(found, key=order)


def sample_std(values) -> float:
    """Standard deviation over repetitions (ddof = 1); 0 for a single run."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=1)) if v.size > 1 else 0.0


@dataclass
class Curve:
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray  # runs contributing at each x


def group_curve(group: Group, metric: str) -> Curve:
    """Mean and std over the group's runs at each labelled count any of them reached.

    Runs are matched on their own x values (equal budgets give equal grids); a crashed
    run contributes only the rounds it completed, so ``n`` may fall along the curve.
    """
    by_x: dict[float, list[float]] = {}
    for run in group.runs:
        # a run that trains twice on the same count (a prune round keeping everything) counts its later round
        x, y = run.curve(metric)
        for xi, yi in dict(zip(x.tolist(), y.tolist())).items():
            by_x.setdefault(float(xi), []).append(float(yi))
    xs = sorted(by_x)
    return Curve(
        x=np.asarray(xs),
        mean=np.asarray([np.mean(by_x[x]) for x in xs]),
        std=np.asarray([sample_std(by_x[x]) for x in xs]),
        n=np.asarray([len(by_x[x]) for x in xs], dtype=np.int64),
    )


def run_auc(run: RunData, metric: str) -> float:
    x, y = run.curve(metric)
    return normalised_auc(x, y) if x.size else math.nan


@dataclass
class AucStats:
    """One per-run statistic of a group over its seeds: the AUC (``group_auc``) or the final value (``group_final``)."""

    values: list[float]  # one per run used, in run order
    seeds: list
    mean: float
    std: float
    n_excluded: int  # incomplete runs left out


def _per_run(group: Group, value_of, include_incomplete: bool) -> AucStats:
    """``value_of(run)`` of every finished run of the group (of every run with ``include_incomplete``),
    NaN values left out, with their seeds, mean and sample std."""
    used = [r for r in group.runs if r.finished or include_incomplete]
    pairs = [(v, r.seed) for v, r in ((value_of(r), r) for r in used) if not math.isnan(v)]
    values = [v for v, _ in pairs]
    return AucStats(
        values=values,
        seeds=[s for _, s in pairs],
        mean=float(np.mean(values)) if values else math.nan,
        std=sample_std(values) if values else math.nan,
        n_excluded=len(group.runs) - len(used),
    )


def group_auc(group: Group, metric: str, include_incomplete: bool = False) -> AucStats:
    """AUC of each run's curve (normalised: mean height over its labelled range).

    A crashed run's AUC covers a shorter range than a finished one's, so by default it is
    left out of the table and the tests (and counted); ``include_incomplete`` keeps it.
    """
    return _per_run(group, lambda r: run_auc(r, metric), include_incomplete)


def group_final(group: Group, metric: str, include_incomplete: bool = False) -> AucStats:
    """Each run's value of ``metric`` at its last completed round, as ``group_auc`` gathers AUCs
    (an unfinished run's last round is not its final one: left out unless ``include_incomplete``)."""
    return _per_run(group, lambda r: r.final(metric)[1], include_incomplete)


def final_counts(group: Group, metric: str, include_incomplete: bool = False) -> list[int]:
    """The distinct labelled counts of the group's final rounds (one, when its runs share a plan)."""
    used = [r for r in group.runs if r.finished or include_incomplete]
    return sorted({int(x) for x, _ in (r.final(metric) for r in used) if not math.isnan(x)})


def curves_table(groups: list[Group], metrics: list[str]) -> list[dict]:
    """Long-format rows of every group's aggregated curve: the CSV of the report."""
    rows = []
    for metric in metrics:
        for g in groups:
            c = group_curve(g, metric)
            for x, m, s, n in zip(c.x, c.mean, c.std, c.n):
                rows.append(
                    {
                        "group": g.label,
                        "metric": metric,
                        "n_labelled": int(x) if float(x).is_integer() else x,
                        "mean": float(m),
                        "std": float(s),
                        "runs": int(n),
                    }
                )
    return rows


def higher_is_better(metric: str) -> bool:
    name = metric.rsplit("/", 1)[-1]
    return not ("loss" in name or name in EPOCH_METRICS)
