"""``--wandb`` of the report: the aggregate figures and tables as one W&B run.

The run joins the sweep's group (read from the runs' own W&B logs, so it lands next to
them in the dashboard), with ``job_type = "report"``. Every figure of the report is
logged as an image (``report/<file stem>``: curves, epochs, selection grids, the label
audit, the loss-vs-accuracy view) and every CSV as a table (``report/<csv stem>``).
Offline without credentials, like the runs: ``wandb sync <dir>`` uploads it later.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from src.analysis.aggregate import RunData
from src.tracking import resolve_wandb_mode
from src.tracking.offline import read_offline_run

log = logging.getLogger(__name__)


def runs_wandb_identity(runs: list[RunData]) -> tuple[str, str | None, str]:
    """(project, entity, group) shared by most of the runs."""
    from google.protobuf.message import DecodeError  # with wandb, whose logs are protobuf records

    groups = Counter()
    for run in runs:
        for log_dir in sorted((run.path / "wandb").glob("*run-*")):
            logs = list(log_dir.glob("run-*.wandb"))
            if logs and all(p.resolve().is_relative_to(run.path.resolve()) for p in [log_dir, *logs]):
                try:
                    groups[read_offline_run(log_dir).group] += 1
                except (
                    ValueError,
                    OSError,
                    DecodeError,
                ):  # a log being written, or no W&B log: use the config
                    pass
                break
    if groups:
        group = groups.most_common(1)[0][0]
    else:
        task = Counter(str(r.config.get("task_name", "al")) for r in runs).most_common(1)[0][0]
        parents = Counter(r.path.parent.name for r in runs).most_common(1)[0][0]
        group = f"{task}/{parents}"
    project = Counter(str(r.config.get("logger.project", "al-select")) for r in runs).most_common(1)[0][0]
    entities = (r.config.get("logger.entity") for r in runs)
    entity = Counter(e if isinstance(e, str) else None for e in entities).most_common(1)[0][0]
    return project, entity, group


def _cell(value):
    """A CSV cell as a W&B table accepts it (no None mixed into numeric columns' types)."""
    return "" if value is None else value


def log_report(
    runs: list[RunData], content, out: Path, tables: dict[str, tuple[list[str], list[dict]]]
) -> str:
    """Log the report's figures and tables to one W&B run; returns the run's local directory."""
    # wandb is imported only here: it takes seconds to import and only --wandb needs it
    import wandb

    project, entity, group = runs_wandb_identity(runs)
    run = wandb.init(
        project=project,
        entity=entity,
        group=group,
        job_type="report",
        name="report",
        dir=str(out),
        mode=resolve_wandb_mode("auto"),
        reinit="finish_previous",
        settings=wandb.Settings(console="off"),
    )
    payload = {}
    for caption, rel in content.figures + content.grids + content.audit_grids + content.mismatch_figures:
        payload[f"report/{Path(rel).stem}"] = wandb.Image(str(out / rel), caption=caption)
    for name, (columns, rows) in tables.items():
        payload[f"report/{Path(name).stem}"] = wandb.Table(
            columns=columns, data=[[_cell(r.get(c)) for c in columns] for r in rows], allow_mixed_types=True
        )
    run.log(payload)
    for r in tables.get("auc.csv", ([], []))[1]:
        run.summary[f"auc/{r['metric']}/{r['group']}"] = r["mean"]
    for r in tables.get("final.csv", ([], []))[1]:
        run.summary[f"final/{r['metric']}/{r['group']}"] = r["mean"]
    location = str(Path(run.dir).parent)
    run.finish()
    log.info("W&B report run in group %s saved in %s", group, location)
    return location
