"""Experiment trackers: where per-round metrics go besides ``rounds.jsonl``.

``wandb``: one W&B run per experiment (per multirun job), offline automatically when
no credentials are configured; ``csv``: ``metrics.csv`` + ``summary.json`` in the run
directory; ``none``: only the run's own files. All share one small interface so the
loop does not know which is active.
"""
from __future__ import annotations

import csv
import io
import logging
import netrc
import os
from pathlib import Path


log = logging.getLogger(__name__)

ROUND_KEYS = {"round": "al/round", "n_labelled": "al/n_labelled", "epochs": "al/epochs",
              "select_seconds": "al/select_seconds", "fit_seconds": "al/fit_seconds"}


def round_metrics(record: dict) -> dict:
    """The scalar metrics of a round record under the DESIGN.md metric keys."""
    out = {ROUND_KEYS[k]: record[k] for k in ROUND_KEYS if k in record}
    out.update({k: v for k, v in record.items() if "/" in k and isinstance(v, (int, float))})
    return out


class Tracker:
    """Interface: start once (also on resume), log each committed round, finish once."""

    def start(self, config: dict, run_dir: Path, run_id: str) -> None: ...
    def log_round(self, record: dict) -> None: ...
    def finish(self, summary: dict, failed: bool = False) -> None: ...
    location: str | None = None
    # set by the entry point: trackers that show selected images read them (and labels) here
    datamodule = None


class NoTracker(Tracker):
    pass


class CsvTracker(Tracker):
    def start(self, config, run_dir, run_id):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.csv"
        self.rows: list[dict] = []
        self.location = str(self.path)

    def log_round(self, record):
        self.rows.append(round_metrics(record))
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        tmp = self.path.with_name(".metrics.csv.tmp")
        tmp.write_text(buf.getvalue())
        os.replace(tmp, self.path)

    def finish(self, summary, failed=False):
        pass   # the curve summary is written by the run itself (summary.json)


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """'auto' -> the WANDB_MODE environment variable if set, else online with credentials, else offline."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    return "online" if wandb_has_credentials() else "offline"


class WandbTracker(Tracker):
    def __init__(self, project: str, group: str, job_type: str, name: str, mode: str = "auto",
                 entity: str | None = None, tags: list[str] | None = None, log_selection: bool = True,
                 selection_images: int = 8):
        self.kwargs = dict(project=project, group=group, job_type=job_type, name=name, entity=entity,
                           tags=list(tags or []))
        self.mode = resolve_wandb_mode(mode)
        self.log_selection = bool(log_selection)
        self.selection_images = int(selection_images)
        self.run = None

    def start(self, config, run_dir, run_id):
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(config=config, dir=str(run_dir), id=run_id, resume="allow", mode=self.mode,
                              reinit="finish_previous", settings=wandb.Settings(console="off"), **self.kwargs)
        # every per-round metric is plotted against the number of labelled items
        self.run.define_metric("al/n_labelled")
        for pattern in ("al/*", "val/*", "test/*"):
            self.run.define_metric(pattern, step_metric="al/n_labelled")
        self.location = str(Path(self.run.dir).parent)

    def log_round(self, record):
        metrics = round_metrics(record)
        if self.log_selection and record.get("selected_ids"):
            metrics.update(self.selection_media(record))
        self.run.log(metrics)

    def selection_media(self, record: dict) -> dict:
        """The round's selection as a table (id, score, label) and its top-scored images."""
        import wandb

        ids, scores = record["selected_ids"], record.get("selected_scores") or []
        labels = names = None
        data = getattr(self.datamodule, "data", None)
        if data is not None:
            labels = data.labels[ids].tolist()
            names = [data.label_name(i) for i in labels]
        rows = []
        for rank, i in enumerate(ids):
            rows.append([record["round"], record["n_labelled"], rank, int(i),
                         float(scores[rank]) if rank < len(scores) else None, names[rank] if names else None])
        out = {"al/selection": wandb.Table(columns=["round", "n_labelled", "rank", "id", "score", "label"], data=rows)}
        if data is not None and scores and self.selection_images > 0:
            # highest scores first: the items the scorer found hardest (pivot 0 takes these)
            top = sorted(range(len(scores)), key=lambda k: -scores[k])[: self.selection_images]
            images = []
            for k in top:
                img = data.images[ids[k]].numpy()
                img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
                images.append(wandb.Image(img, caption=f"id {ids[k]} {names[k]} score {scores[k]:.3f}"))
            out["al/top_selected"] = images
        return out

    def finish(self, summary, failed=False):
        for key, value in summary.items():
            self.run.summary[key] = value
        # always finished, also after a failure: otherwise the next multirun job logs into this run
        self.run.finish(exit_code=1 if failed else 0)
        log.info("W&B run (%s) saved in %s%s", self.mode, self.location,
                 f"; upload with: wandb sync {self.location}" if self.mode == "offline" else "")
