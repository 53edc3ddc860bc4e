"""``--wandb`` of the report: the aggregate figures and tables as one W&B run.

The run joins the sweep's group (read from the runs' own W&B logs, so it lands next to
them in the dashboard), with ``job_type = "report"``. Offline without credentials, like
the runs: ``wandb sync <dir>`` uploads it later.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from src.analysis.aggregate import RunData

log = logging.getLogger(__name__)


def runs_wandb_identity(runs: list[RunData]) -> tuple[str, str | None, str]:
    """(project, entity, group) shared by most of the runs."""
    from src.analysis.wandb_offline import read_offline_run

    groups = Counter()
    for run in runs:
        for log_dir in sorted((run.path / "wandb").glob("*run-*")):
            if list(log_dir.glob("run-*.wandb")):
                try:
                    groups[read_offline_run(log_dir).group] += 1
                except Exception:     # a log still being written: fall back to the config
                    pass
                break
    if groups:
        group = groups.most_common(1)[0][0]
    else:
        task = Counter(str(r.config.get("task_name", "al")) for r in runs).most_common(1)[0][0]
        parents = Counter(r.path.parent.name for r in runs).most_common(1)[0][0]
        group = f"{task}/{parents}"
    project = Counter(str(r.config.get("logger.project", "al-select")) for r in runs).most_common(1)[0][0]
    entity = Counter(r.config.get("logger.entity") for r in runs).most_common(1)[0][0]
    return project, entity, group


def log_report(runs: list[RunData], content, out: Path, auc_rows: list[dict], pvalue_rows: list[dict]) -> str:
    import wandb

    from src.tracking import resolve_wandb_mode

    project, entity, group = runs_wandb_identity(runs)
    run = wandb.init(project=project, entity=entity, group=group, job_type="report", name="report",
                     dir=str(out), mode=resolve_wandb_mode("auto"), reinit="finish_previous",
                     settings=wandb.Settings(console="off"))
    payload = {}
    for caption, rel in content.figures:
        payload[f"report/{Path(rel).stem}"] = wandb.Image(str(out / rel), caption=caption)
    for caption, rel in content.grids:
        payload[f"report/{Path(rel).stem}"] = wandb.Image(str(out / rel), caption=caption)
    auc_cols = ["group", "metric", "mean", "std", "runs", "excluded_incomplete"]
    payload["report/auc"] = wandb.Table(columns=auc_cols, data=[[r[c] for c in auc_cols] for r in auc_rows])
    pv_cols = ["metric", "a", "b", "p", "cohens_d", "test"]
    payload["report/pvalues"] = wandb.Table(columns=pv_cols, data=[[r[c] for c in pv_cols] for r in pvalue_rows])
    run.log(payload)
    for r in auc_rows:
        run.summary[f"auc/{r['metric']}/{r['group']}"] = r["mean"]
    location = str(Path(run.dir).parent)
    run.finish()
    log.info("W&B report run in group %s saved in %s", group, location)
    return location
