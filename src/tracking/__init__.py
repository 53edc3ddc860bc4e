"""Experiment trackers: where per-round metrics go besides ``rounds.jsonl``.

``wandb``: one W&B run per experiment (per multirun job), offline automatically when
no credentials are configured; ``csv``: ``metrics.csv`` + ``summary.json`` in the run
directory; ``none``: only the run's own files. All share one small interface so the
loop does not know which is active.
"""

from __future__ import annotations

import collections
import csv
import io
import logging
import netrc
import os
from collections.abc import Callable
from pathlib import Path

from src.records import RoundRecord, fault_point

log = logging.getLogger(__name__)

# round-record fields logged per round, under their tracker names
ROUND_KEYS = {
    "round": "al/round",
    "n_labelled": "al/n_labelled",
    "epochs": "al/epochs",
    "best_epoch": "al/best_epoch",
    "select_seconds": "al/select_seconds",
    "fit_seconds": "al/fit_seconds",
}

# item_view(ids, images=True) -> (labels, images, boxes): what a tracker may show of selected items.
# labels: one string per id or None; images: HxW(xC) uint8 arrays or None (always None when
# images=False); boxes: None, or (class names, one {"ground_truth": [(x0, y0, x1, y1, class)],
# "predictions": [(x0, y0, x1, y1, class, score)]} per image) in image pixels.
ItemView = Callable[..., tuple[list[str] | None, list | None, tuple | None]]


def round_metrics(record: RoundRecord) -> dict:
    """The scalar metrics of a round record under the tracker metric keys (al/*, val/*, test/*)."""
    return {**{name: getattr(record, key) for key, name in ROUND_KEYS.items()}, **record.metrics}


def epoch_rows(record: RoundRecord) -> list[dict]:
    """The round's per-epoch history as tracker rows: ``fit/epoch``, ``fit/round`` and
    ``fit/round_NNN/<metric>`` (one series per round, so fits stay apart on one x-axis)."""
    history = record.history or {}
    rows = []
    for i, epoch in enumerate(history.get("epoch", [])):
        row = {"fit/epoch": epoch, "fit/round": record.round}
        row.update(
            {
                f"fit/round_{record.round:03d}/{key}": values[i]
                for key, values in history.items()
                if key != "epoch" and values[i] is not None
            }
        )
        rows.append(row)
    return rows


class Tracker:
    """Interface: start once (also on resume), log each committed round, finish once."""

    location: str | None = None

    def start(self, config: dict, run_dir: Path, run_id: str, item_view: ItemView | None = None) -> None: ...
    def log_round(self, record: RoundRecord) -> None: ...

    def replay(self, committed: list[RoundRecord]) -> None:
        """After ``start`` on a resumed run: bring the tracker's history up to the committed rounds
        (``rounds.jsonl`` is the source of truth; a killed process may not have logged its last ones)."""

    def finish(self, summary: dict, failed: bool = False) -> None: ...


class NoTracker(Tracker):
    pass


class CsvTracker(Tracker):
    def start(self, config, run_dir, run_id, item_view=None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.csv"
        self.rows: list[dict] = []
        self.location = str(self.path)

    def replay(self, committed):
        # rebuilt from the records, not appended to: the file of a killed process may lag or be absent
        self.rows = [round_metrics(r) for r in committed]
        if self.rows:
            self._write()

    def log_round(self, record):
        self.rows.append(round_metrics(record))
        self._write()

    def _write(self) -> None:
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        tmp = self.path.with_name(".metrics.csv.tmp")
        tmp.write_text(buf.getvalue())
        os.replace(tmp, self.path)

    def finish(self, summary, failed=False):
        pass  # the curve summary is written by the run itself (summary.json)


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


def wandb_boxes(class_names: list[str], overlay: dict) -> dict:
    """``wandb.Image``'s ``boxes`` argument from one image's overlay (pixel coordinates)."""
    labels = dict(enumerate(class_names))
    out = {}
    for key, items in overlay.items():
        data = []
        for x0, y0, x1, y1, c, *score in items:
            entry = {
                "position": {"minX": float(x0), "minY": float(y0), "maxX": float(x1), "maxY": float(y1)},
                "domain": "pixel",
                "class_id": int(c),
                "box_caption": class_names[c] + (f" {score[0]:.2f}" if score else ""),
            }
            if score:
                entry["scores"] = {"score": float(score[0])}
            data.append(entry)
        out[key] = {"box_data": data, "class_labels": labels}
    return out


class WandbTracker(Tracker):
    def __init__(
        self,
        project: str,
        group: str,
        job_type: str,
        name: str,
        mode: str = "auto",
        entity: str | None = None,
        tags: list[str] | None = None,
        log_selection: bool = True,
        selection_images: int = 8,
    ):
        self.kwargs = dict(
            project=project, group=group, job_type=job_type, name=name, entity=entity, tags=list(tags or [])
        )
        self.mode = resolve_wandb_mode(mode)
        self.log_selection = bool(log_selection)
        self.selection_images = int(selection_images)
        self.run = None
        self.replaying = False

    def start(self, config, run_dir, run_id, item_view=None):
        import wandb  # here, not at the top: only W&B runs pay for importing it

        os.environ.setdefault("WANDB_SILENT", "true")
        self.item_view = item_view
        self.run = wandb.init(
            config=config,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            mode=self.mode,
            reinit="finish_previous",
            settings=wandb.Settings(console="off"),
            **self.kwargs,
        )
        # every per-round metric is plotted against the number of labelled items
        self.run.define_metric("al/n_labelled")
        for pattern in ("al/*", "val/*", "test/*"):
            self.run.define_metric(pattern, step_metric="al/n_labelled")
        # each round's fit epoch by epoch: fit/round_NNN/<metric> against the epoch, one series per round
        self.run.define_metric("fit/epoch")
        self.run.define_metric("fit/*", step_metric="fit/epoch")
        self.location = str(Path(self.run.dir).parent)
        self.run_dir = Path(run_dir)

    def replay(self, committed):
        # What earlier processes of this run got into their W&B logs (a kill may lose the SDK's
        # unwritten tail, so only what is in the files counts), then the committed rounds after it.
        # Earlier folders are synced before this one, so history stays in order, each round once.
        from src.tracking.offline import read_offline_run

        this = Path(self.run.dir).parent.resolve()
        self.replaying = True
        logged, epochs_logged = -1, set()
        for folder in Path(self.location).parent.glob("*run-*"):
            if folder.resolve() == this or not any(folder.glob("run-*.wandb")):
                continue
            history = read_offline_run(folder).history
            logged = max([logged] + [int(row["al/round"]) for row in history if "al/round" in row])
            # a kill between a round's epoch rows and its round row leaves the epochs logged
            epochs_logged |= {
                (int(row["fit/round"]), row["fit/epoch"]) for row in history if "fit/round" in row
            }
        if not committed:  # the run's first start: its data's class counts (thesis figures 4.19-4.20)
            figure = self.run_dir / "class_distribution.png"
            if figure.exists():
                import wandb

                self.run.log({"data/class_distribution": wandb.Image(str(figure))})
        for record in committed:
            if record.round > logged:
                self.log_round(record, epochs_logged)
        self.replaying = False

    def log_round(self, record, epochs_logged: frozenset | set = frozenset()):
        """The round's fit epoch by epoch (those in ``epochs_logged`` as (round, epoch) left out), then
        its round row."""
        metrics = round_metrics(record)
        if self.log_selection and record.selected_ids:
            metrics.update(self.selection_media(record))
        for row in epoch_rows(record):
            if (record.round, row["fit/epoch"]) not in epochs_logged:
                self.run.log(row)
        fault_point("tracker_epochs")
        self.run.log(metrics)

    def selection_media(self, record: RoundRecord) -> dict:
        """The round's selection as a table (id, score, label) and its top-scored images, with
        their boxes (ground truth and the round's model's detections) for detection."""
        import wandb

        ids, scores = record.selected_ids, record.selected_scores
        names, _, _ = self.item_view(ids, images=False) if self.item_view else (None, None, None)
        rows = [
            [
                record.round,
                record.n_labelled,
                rank,
                int(i),
                float(scores[rank]) if rank < len(scores) else None,
                names[rank] if names else None,
            ]
            for rank, i in enumerate(ids)
        ]
        out = {
            "al/selection": wandb.Table(
                columns=["round", "n_labelled", "rank", "id", "score", "label"], data=rows
            )
        }
        if names:  # the selection's class histogram
            counts = sorted(collections.Counter(names).items(), key=lambda kv: (-kv[1], kv[0]))
            out["al/selected_classes"] = wandb.Table(
                columns=["round", "n_labelled", "class", "count"],
                data=[[record.round, record.n_labelled, c, n] for c, n in counts],
            )
        if self.item_view is None or not scores or self.selection_images <= 0:
            return out
        # highest scores first: the items the scorer found hardest (pivot 0 takes these)
        top = sorted(range(len(scores)), key=lambda k: -scores[k])[: self.selection_images]
        # a round replayed on resume is drawn without detections: the model no longer holds its weights
        top_names, images, boxes = self.item_view([ids[k] for k in top], predictions=not self.replaying)
        if images is not None:
            out["al/top_selected"] = [
                wandb.Image(
                    image,
                    caption=f"id {ids[k]} {label} score {scores[k]:.3f}",
                    boxes=wandb_boxes(boxes[0], boxes[1][n]) if boxes else None,
                )
                for n, (k, image, label) in enumerate(zip(top, images, top_names))
            ]
        return out

    def finish(self, summary, failed=False):
        for key, value in summary.items():
            self.run.summary[key] = value
        # always finished, also after a failure: otherwise the next multirun job logs into this run
        self.run.finish(exit_code=1 if failed else 0)
        log.info(
            "W&B run (%s) saved in %s%s",
            self.mode,
            self.location,
            f"; upload with: wandb sync {self.location}" if self.mode == "offline" else "",
        )
