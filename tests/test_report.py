"""The report on hand-made run directories: known means, stds, AUCs and p-values;
figures and pages that open; the W&B summary run read back from its offline log."""

from __future__ import annotations

import collections
import csv
import functools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from PIL import Image
from scipy import stats as st

from src.analysis import aggregate as agg
from src.analysis import plots, selections
from src.analysis.report import build_report
from src.analysis.stats import compare, pvalue_matrix
from src.records import RoundRecord
from src.report import main
from src.tasks import classification
from src.tracking.offline import media, media_files, read_offline_run, read_table, wait_until_finished

X = [20, 40, 60]
# test/acc_top1 per round, by hand: two methods, three seeds; random's seed 3 crashed after 2 rounds
ACC = {
    ("entropy", 1): [0.1, 0.2, 0.4],
    ("entropy", 2): [0.2, 0.3, 0.5],
    ("entropy", 3): [0.3, 0.4, 0.3],
    ("random", 1): [0.1, 0.1, 0.1],
    ("random", 2): [0.2, 0.2, 0.3],
    ("random", 3): [0.5, 0.6],
}
CRASHED = {("random", 3)}


def make_run(
    root: Path,
    cfg,
    scorer: str,
    seed: int,
    acc: list[float],
    finished: bool,
    budget: int = 20,
    name: str | None = None,
) -> Path:
    """A run directory as `python -m src.run` writes it, with chosen metric values."""
    run = root / (name or f"{scorer}-s{seed}")
    (run / ".hydra").mkdir(parents=True)
    c = OmegaConf.merge(cfg, {"seed": seed, "scorer": {"name": scorer}, "selection": {"budget": budget}})
    OmegaConf.save(c, run / ".hydra" / "config.yaml")
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"scorer={scorer}", f"seed={seed}"]))
    rng = np.random.default_rng(seed)
    lines = []
    for r, y in enumerate(acc):
        ids = rng.choice(120, size=budget, replace=False).tolist()  # rows of the debug=fast pool
        lines.append(
            json.dumps(
                {
                    "round": r,
                    "n_labelled": budget * (r + 1),
                    "n_selected": budget,
                    "selection": scorer,
                    "selected_ids": ids,
                    "selected_scores": sorted(rng.random(budget).tolist(), reverse=True),
                    "epochs": 3 + r,
                    "best_epoch": 1,
                    "val/loss": 2.0 - y,
                    "test/loss": 2.0 - y,
                    "test/acc_top1": y,
                    "select_seconds": 0.1,
                    "reset_seconds": 0.0,
                    "fit_seconds": 1.0,
                    "test_seconds": 0.1,
                }
            )
        )
    (run / "rounds.jsonl").write_text("\n".join(lines) + "\n")
    if finished:
        (run / "summary.json").write_text(json.dumps({"auc/test/acc_top1": 0.0}))
    return run


@pytest.fixture
def sweep(tmp_path, compose_cfg):
    cfg = compose_cfg("debug=fast")
    root = tmp_path / "multirun" / "2026-01-01_00-00-00"
    for (scorer, seed), acc in ACC.items():
        make_run(root, cfg, scorer, seed, acc, finished=(scorer, seed) not in CRASHED)
    return root


def auc_by_hand(y):
    # trapezoid over x = 20, 40, 60 (steps of 20) divided by the range
    return sum(20 * (a + b) / 2 for a, b in zip(y[:-1], y[1:])) / (20 * (len(y) - 1))


def test_groups_by_the_differing_key_with_seeds_as_repetitions(sweep):
    runs = agg.load_runs([sweep])
    groups, keys = agg.group_runs(runs)
    # the seed and what follows from it (model.init.init_seed, run_name) never group
    assert keys == ["scorer.name"]
    assert [g.label for g in groups] == ["entropy", "random"]
    assert [sorted(r.seed for r in g.runs) for g in groups] == [[1, 2, 3], [1, 2, 3]]
    assert [g.legend for g in groups] == ["entropy (3)", "random (3, 1 incomplete)"]
    crashed = [r for r in runs if not r.finished]
    assert len(crashed) == 1 and crashed[0].seed == 3 and len(crashed[0].records) == 2


def test_mean_std_and_auc_match_the_hand_computation(sweep):
    groups, _ = agg.group_runs(agg.load_runs([sweep]))
    entropy, random = groups
    c = agg.group_curve(entropy, "test/acc_top1")
    assert c.x.tolist() == X and c.n.tolist() == [3, 3, 3]
    assert c.mean.tolist() == pytest.approx([0.2, 0.3, 0.4])
    assert c.std.tolist() == pytest.approx([0.1, 0.1, 0.1])  # sample std (ddof 1)
    # the crashed run counts up to its last completed round
    c = agg.group_curve(random, "test/acc_top1")
    assert c.n.tolist() == [3, 3, 2]
    assert c.mean.tolist() == pytest.approx([0.8 / 3, 0.9 / 3, 0.2])
    assert c.std[2] == pytest.approx(math.sqrt(((0.1 - 0.2) ** 2 + (0.3 - 0.2) ** 2) / 1))

    a = agg.group_auc(entropy, "test/acc_top1")
    assert a.values == pytest.approx([0.225, 0.325, 0.35])  # (20*.15 + 20*.3)/40 ...
    assert a.values == pytest.approx([auc_by_hand(ACC["entropy", s]) for s in (1, 2, 3)])
    assert a.mean == pytest.approx(0.3)
    assert a.std == pytest.approx(math.sqrt((0.075**2 + 0.025**2 + 0.05**2) / 2))
    r = agg.group_auc(random, "test/acc_top1")
    assert r.values == pytest.approx([0.1, 0.225]) and r.n_excluded == 1  # crashed run left out
    assert agg.group_auc(random, "test/acc_top1", include_incomplete=True).values == pytest.approx(
        [0.1, 0.225, 0.55]
    )


def test_pvalues_equal_scipy_and_effect_size_is_cohens_d():
    a, b = [0.225, 0.325, 0.35], [0.1, 0.175, 0.2]
    welch = compare(a, [1, 2, 3], b, [1, 2, 3])
    assert welch.test == "welch" and welch.p == pytest.approx(st.ttest_ind(a, b, equal_var=False).pvalue)
    pooled = math.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
    assert welch.effect == pytest.approx((np.mean(a) - np.mean(b)) / pooled)
    # paired by seed, whatever order the runs came in
    paired = compare(a, [1, 2, 3], b[::-1], [3, 2, 1], paired=True)
    assert paired.test == "paired" and paired.p == pytest.approx(st.ttest_rel(a, b).pvalue)
    d = np.subtract(a, b)
    assert paired.effect == pytest.approx(d.mean() / d.std(ddof=1))
    # seeds that do not match fall back to Welch's test; a single run gives no test
    assert compare(a, [1, 2, 3], b, [4, 5, 6], paired=True).test == "welch"
    assert math.isnan(compare(a, [1, 2, 3], [0.1], [1]).p)
    m = pvalue_matrix({"x": (a, [1, 2, 3]), "y": (b, [1, 2, 3])})
    assert (
        m["x"]["x"].p == 1.0 and m["x"]["y"].p == m["y"]["x"].p and m["x"]["y"].effect == -m["y"]["x"].effect
    )


def test_different_budgets_are_drawn_on_their_own_x_and_auc_is_normalised(tmp_path, compose_cfg):
    cfg = compose_cfg("debug=fast")
    make_run(tmp_path, cfg, "entropy", 1, [0.2, 0.4], True, budget=20, name="b20")
    make_run(tmp_path, cfg, "entropy", 1, [0.2, 0.4], True, budget=40, name="b40")
    groups, keys = agg.group_runs(agg.load_runs([tmp_path]))
    assert keys == ["selection.budget"] and [g.label for g in groups] == ["budget=20", "budget=40"]
    assert [agg.group_curve(g, "test/acc_top1").x.tolist() for g in groups] == [[20, 40], [40, 80]]
    # same shape over different ranges: equal normalised AUC
    assert [agg.group_auc(g, "test/acc_top1").mean for g in groups] == pytest.approx([0.3, 0.3])


def _png_ok(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()


def test_report_writes_figures_tables_and_pages_that_open(sweep, tmp_path):
    out = tmp_path / "report"
    res = build_report([sweep], out=out, grid_k=3, audit_n=4)
    names = {p.name for p in res.figures}
    assert {"test_acc_top1.png", "test_loss.png", "val_loss.png", "epochs.png"} <= names
    for p in res.all_figures:
        _png_ok(p)
    assert len(res.grids) == 2  # one selection grid per method
    assert res.pvalues["test/acc_top1"]["entropy"]["random"].p == pytest.approx(
        st.ttest_ind([0.225, 0.325, 0.35], [0.1, 0.225], equal_var=False).pvalue
    )

    html = res.html.read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    local = [r for r in refs if not r.startswith(("data:", "#", "http"))]
    assert local and all((out / r).is_file() for r in local)
    assert sum(r.startswith("data:image/png;base64,") for r in refs) == len(res.all_figures)
    md = res.markdown.read_text()
    for target in re.findall(r"\]\(([^)]+)\)", md):
        assert (out / target).is_file(), target
    assert "random (3, 1 incomplete)" in md and "still running or crashed" in md
    assert "**0.3000 ± 0.0661**" in md  # entropy's AUC of top-1, mean ± std, the best

    rows = [line.split(",") for line in res.csvs["curves.csv"].read_text().splitlines()]
    assert rows[0] == ["group", "metric", "n_labelled", "mean", "std", "runs"]
    top1 = {(r[0], int(r[2])): float(r[3]) for r in rows[1:] if r[1] == "test/acc_top1"}
    assert top1["entropy", 40] == pytest.approx(0.3) and top1["random", 60] == pytest.approx(0.2)


def test_cli_names_grouping_keys_and_logs_a_wandb_summary_run(sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    write_epoch_logs(sweep / "entropy-s1", EPOCHS)
    out = tmp_path / "rep"
    assert (
        main(
            [
                str(sweep),
                "--out",
                str(out),
                "--group-by",
                "scorer",
                "--paired",
                "--include-incomplete",
                "--wandb",
                "--metrics",
                "test/acc_top1",
                "epochs",
                "--audit-n",
                "4",
                "--grid-k",
                "2",
            ]
        )
        == 0
    )
    md = (out / "report.md").read_text()
    assert "(paired)" in md and not (out / "figures" / "test_loss.png").exists()
    (log_dir,) = (out / "wandb").glob("offline-run-*")
    assert wait_until_finished(log_dir)
    wb = read_offline_run(log_dir)
    # the sweep's group (no W&B logs in these runs: task name / sweep folder)
    assert wb.job_type == "report" and wb.group == f"al/{sweep.name}"
    row = next(h for h in wb.history if any(k.startswith("report/auc/") for k in h))
    columns, data = read_table(log_dir, media(row, "report/auc"))
    by_group = {(r[0], r[1]): r[2] for r in data}
    assert by_group["entropy", "test/acc_top1"] == pytest.approx(0.3)
    assert wb.summary["auc/test/acc_top1/random"] == pytest.approx((0.1 + 0.225 + 0.55) / 3)
    # every figure of the report is a W&B image with the report's pixels: curves, epochs, selection
    # grids, label audits, the loss-vs-accuracy view
    figures = sorted((out / "figures").glob("*.png"))
    assert {f.stem for f in figures} == {
        "test_acc_top1",
        "epochs",
        "selection_00",
        "selection_01",
        "audit_00",
        "audit_01",
        "best_epochs_by_loss_and_accuracy",
    }
    for f in figures:
        image = media(row, f"report/{f.stem}")
        assert image["_type"] == "image-file"
        (logged,) = media_files(log_dir, image)
        assert np.array_equal(np.asarray(Image.open(logged)), np.asarray(Image.open(f))), f.name
    # the CSVs as tables: the audit to annotate, the best epochs
    columns, data = read_table(log_dir, media(row, "report/label_audit"))
    assert columns[:8] == ["group", "seed", "run", "round", "rank", "id", "score", "label"] and len(data) == 8
    columns, data = read_table(log_dir, media(row, "report/loss_vs_accuracy"))
    gaps = [r[columns.index("epoch_gap")] for r in data]
    assert gaps == [2 - 1, 1 - 1]


def test_wandb_tracker_logs_the_selection_table_and_top_images(tmp_path, compose_cfg, monkeypatch):
    """The run-side W&B extras, with the real SDK offline and the real (debug=fast) dataset."""
    import hydra

    from src.tracking import WandbTracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    dm = hydra.utils.instantiate(compose_cfg("debug=fast").dataset)
    dm.setup()
    tracker = WandbTracker(project="p", group="g", job_type="entropy", name="n", selection_images=3)
    tracker.start({"seed": 1}, tmp_path, "abc123", item_view=functools.partial(classification.item_view, dm))
    ids, scores = [5, 9, 2, 7], [0.2, 0.9, 0.5, 0.1]
    tracker.log_round(
        RoundRecord(
            round=0,
            n_labelled=4,
            n_selected=4,
            selection="entropy",
            selected_ids=ids,
            selected_scores=scores,
            epochs=2,
            best_epoch=1,
            metrics={"test/acc_top1": 0.5},
        )
    )
    tracker.finish({"auc/test/acc_top1": 0.5})

    (log_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert wait_until_finished(log_dir)
    row = next(h for h in read_offline_run(log_dir).history if "al/n_labelled" in h)
    columns, rows = read_table(log_dir, media(row, "al/selection"))
    assert columns == ["round", "n_labelled", "rank", "id", "score", "label"]
    assert [r[3] for r in rows] == ids and [r[4] for r in rows] == pytest.approx(scores)
    assert [r[5] for r in rows] == [dm.data.class_names[int(dm.data.labels[i])] for i in ids]
    top = media(row, "al/top_selected")
    # the three highest scores, highest first
    assert [c.split()[1] for c in top["captions"]] == ["9", "2", "5"]
    files = media_files(log_dir, top)
    assert len(files) == 3 and all(f.is_file() for f in files)
    for f in files:
        _png_ok(f)


# -- one spelling of values in run names and group labels --------------------------------------
def test_run_names_spell_a_swept_and_a_default_pivot_alike(compose_cfg):
    # Hydra parses the swept `0` as an int, the yaml default `0.0` as a float: one name for both
    assert compose_cfg().run_name == compose_cfg("selection.pivot=0").run_name == "entropy-p0-b100-base0-s1"
    assert compose_cfg("selection.pivot=0.25").run_name == "entropy-p0.25-b100-base0-s1"
    assert compose_cfg("task=detection", "baseline=none").run_name == "entropy-blnone-p0-b30-base0-s1"
    assert compose_cfg("task=detection", "baseline=real").run_name == "entropy-blreal-p0-b30-base0-s1"


def test_group_labels_spell_booleans_and_numbers_as_typed(tmp_path, compose_cfg):
    cfg = compose_cfg("debug=fast")
    for shuffle in (True, False):
        run = make_run(
            tmp_path,
            OmegaConf.merge(cfg, {"selection": {"shuffle": shuffle, "pivot": 0.0}}),
            "entropy",
            1,
            [0.2, 0.4],
            True,
            name=f"shuffle-{shuffle}",
        )
        (run / ".hydra" / "overrides.yaml").write_text("[]\n")  # labels from the config, not the command line
    groups, keys = agg.group_runs(agg.load_runs([tmp_path]))
    assert keys == ["selection.shuffle"] and [g.label for g in groups] == ["shuffle=false", "shuffle=true"]
    assert (
        agg.group_runs(agg.load_runs([tmp_path]), ["selection.pivot", "selection.shuffle"])[0][0].label
        == "pivot=0, shuffle=false"
    )


# -- figures: groups with identical values stay visible -------------------------------------------
def _colour_pixels(png: Path, hex_colour: str, tolerance: float = 60.0) -> int:
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.float64)
    target = np.asarray([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)
    return int((np.linalg.norm(rgb - target, axis=-1) < tolerance).sum())


def test_identical_epoch_curves_each_stay_visible(tmp_path, compose_cfg):
    cfg = compose_cfg("debug=fast")
    for scorer in ("entropy", "random"):  # same epochs every round (3, 4, 5, ...)
        make_run(tmp_path / "runs", cfg, scorer, 1, [0.1] * 6, True)
    groups, _ = agg.group_runs(agg.load_runs([tmp_path / "runs"]))
    path = plots.plot_metric(groups, "epochs", tmp_path / "epochs.png")
    # matplotlib's first two cycle colours; the second group is drawn on top of the first
    first, second = _colour_pixels(path, "#1f77b4"), _colour_pixels(path, "#ff7f0e")
    # a legend entry alone is ~65 pixels (all that was left of the first group when both were
    # drawn as equal solid lines); a visible curve across the axes is over a thousand
    assert first > 600 and second > 600, (first, second)


# -- selection grid legends ---------------------------------------------------------------------
def test_random_selection_grid_does_not_call_its_picks_hardest(sweep, tmp_path):
    res = build_report(
        [sweep], out=tmp_path / "rep", grid_k=2, audit_n=3, fmt="svg", metrics=["test/acc_top1"]
    )
    texts = {p.name: p.read_text() for p in res.grids}
    entropy, random = texts["selection_00.svg"], texts["selection_01.svg"]
    assert "red: hardest (highest score) selected" in entropy
    assert "hardest" not in random and "random draws" in random


# -- label-quality audit (thesis table 4.1) -------------------------------------------------------
def test_label_audit_lists_the_top_selections_with_labels_and_predictions(tmp_path, compose_cfg):
    import hydra

    cfg = compose_cfg("debug=fast")
    root = tmp_path / "runs"
    for scorer in ("entropy", "random"):
        make_run(root, cfg, scorer, 1, [0.2, 0.3], True)
    # the entropy run's records carry the model's predictions (class index per selected id)
    path = root / "entropy-s1" / "rounds.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records:
        r["selected_predictions"] = [(i * 7) % 10 for i in r["selected_ids"]]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))

    res = build_report([root], out=tmp_path / "rep", audit_n=5, metrics=["test/acc_top1"])
    data = hydra.utils.instantiate(cfg.dataset)
    data.setup()
    names, labels = data.data.class_names, data.data.labels
    rows = list(csv.DictReader(open(res.csvs["label_audit.csv"])))
    assert list(rows[0]) == [
        "group",
        "seed",
        "run",
        "round",
        "rank",
        "id",
        "score",
        "label",
        "prediction",
        "disagree",
        "comment",
    ]
    for scorer in ("entropy", "random"):
        first = json.loads((root / f"{scorer}-s1" / "rounds.jsonl").read_text().splitlines()[0])
        mine = [r for r in rows if r["group"] == scorer]
        # the five highest-scored ids of the first selection, hardest first (make_run writes them sorted)
        assert [int(r["id"]) for r in mine] == first["selected_ids"][:5]
        assert [int(r["rank"]) for r in mine] == [1, 2, 3, 4, 5] and {r["round"] for r in mine} == {"0"}
        assert [float(r["score"]) for r in mine] == pytest.approx(first["selected_scores"][:5])
        assert [r["label"] for r in mine] == [names[int(labels[i])] for i in first["selected_ids"][:5]]
        expected = (
            [names[(i * 7) % 10] for i in first["selected_ids"][:5]] if scorer == "entropy" else [""] * 5
        )
        assert [r["prediction"] for r in mine] == expected
        assert all(r["disagree"] == "" and r["comment"] == "" for r in mine)
    assert len(res.audit_grids) == 2 and "label_audit.csv" in res.markdown.read_text()


# -- best epoch by val loss vs by val accuracy (thesis 4.2.3) -------------------------------------
# per round: (val loss, val top-1) per epoch; round 1's file holds a killed first attempt, then the
# resumed fit from epoch 0 again: only the last attempt counts
EPOCHS = {
    0: [[(1.00, 0.30), (0.80, 0.40), (0.90, 0.50), (0.95, 0.45)]],
    1: [[(0.10, 0.90), (0.05, 0.95)], [(0.70, 0.50), (0.60, 0.60), (0.65, 0.55)]],
}


def write_epoch_logs(run: Path, epochs: dict) -> None:
    """Per-epoch logs as Lightning's CSVLogger writes them: val and train rows apart, a test row last."""
    for rnd, attempts in epochs.items():
        lines = ["epoch,step,test/acc_top1,test/loss,train/loss,val/acc_top1,val/loss"]
        for attempt in attempts:
            for e, (loss, acc) in enumerate(attempt):
                lines += [f"{e},{3 * e + 2},,,,{acc},{loss}", f"{e},{3 * e + 2},,,2.5,,"]
        lines.append(f"{len(attempts[-1])},99,0.5,1.2,,,")
        d = run / "rounds" / f"round_{rnd:03d}"
        d.mkdir(parents=True)
        (d / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_best_epochs_by_loss_and_by_accuracy_per_round(tmp_path, compose_cfg):
    run = make_run(tmp_path / "runs", compose_cfg("debug=fast"), "entropy", 1, [0.2, 0.3], True)
    write_epoch_logs(run, EPOCHS)
    res = build_report([tmp_path / "runs"], out=tmp_path / "rep", grids=False, metrics=["test/acc_top1"])
    rows = list(csv.DictReader(open(res.csvs["loss_vs_accuracy.csv"])))
    assert [int(r["round"]) for r in rows] == [0, 1] and [int(r["n_labelled"]) for r in rows] == [20, 40]
    for r, rnd in zip(rows, (0, 1)):
        loss, acc = np.asarray(EPOCHS[rnd][-1]).T
        assert int(r["epochs"]) == len(loss)
        assert int(r["best_epoch_by_loss"]) == np.argmin(loss) and int(
            r["best_epoch_by_accuracy"]
        ) == np.argmax(acc)
        assert int(r["epoch_gap"]) == np.argmax(acc) - np.argmin(loss)
        assert float(r["accuracy_given_up"]) == pytest.approx(acc.max() - acc[np.argmin(loss)])
    # by hand: round 0 loss-best epoch 1 (0.80), accuracy-best epoch 2 (0.50), 0.10 given up; round 1 agree
    assert [(r["best_epoch_by_loss"], r["best_epoch_by_accuracy"]) for r in rows] == [("1", "2"), ("1", "1")]
    md = res.markdown.read_text()
    # one group: 2 rounds, accuracy peaks later in 1 of 2, mean gap 0.5, given up 0.05 ± std(0.1, 0)
    assert f"| all runs (1) | 2 | 0.50 | 0.50 | 0.0500 ± {np.std([0.1, 0.0], ddof=1):.4f} |" in md
    _png_ok(res.mismatch_figures[0])


def test_a_detection_run_gets_selection_grids_with_its_boxes_drawn(tmp_path, compose_cfg):
    cfg = compose_cfg("task=detection", "baseline=none", "debug=fast")
    run = make_run(tmp_path / "runs", cfg, "entropy", 1, [0.2, 0.3], True)
    res = build_report([run], out=tmp_path / "rep", metrics=["test/acc_top1"], grid_k=2, audit_n=3)
    assert len(res.grids) == 1 and len(res.audit_grids) == 1
    _png_ok(res.grids[0])

    # each shown image carries its ground-truth boxes: the box outline is drawn in yellow
    dm = selections.DatasetCache(tmp_path / "cache").get(agg.load_runs([run])[0])
    record = json.loads((run / "rounds.jsonl").read_text().splitlines()[0])
    item = record["selected_ids"][0]
    image, target = dm.dm.source.load(item)
    drawn = dm.image(item)
    assert drawn.shape == (3, *image.shape[1:])
    for x0, y0, x1, y1 in target["boxes"].round().int().tolist():
        assert (drawn[:, y0, x0] == [255, 255, 0]).all() or (drawn[:, y1, x1] == [255, 255, 0]).all()
    names = [dm.dm.class_names[int(c)] for c in target["labels"]]
    counts = collections.Counter(names)
    assert dm.label(item) == ", ".join(
        n if counts[n] == 1 else f"{n} x{counts[n]}" for n in sorted(counts, key=lambda n: (-counts[n], n))
    )


def test_wandb_tracker_logs_detection_selections_with_their_boxes(tmp_path, compose_cfg, monkeypatch):
    """The top selected images on W&B with ground-truth and predicted boxes, labelled by class counts."""
    import hydra

    from src.experiment.build import build_model
    from src.tasks import detection
    from src.tracking import WandbTracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_cfg("task=detection", "baseline=none", "debug=fast")
    dm = hydra.utils.instantiate(cfg.dataset)
    dm.setup()
    model, _ = build_model(cfg, dm)
    tracker = WandbTracker(project="p", group="g", job_type="entropy", name="n", selection_images=2)
    tracker.start(
        {"seed": 1}, tmp_path, "abc123", item_view=functools.partial(detection.item_view, dm, model=model)
    )
    ids, scores = [int(i) for i in dm.pool_ids[:3]], [0.1, 0.9, 0.5]
    tracker.log_round(
        RoundRecord(
            round=0,
            n_labelled=3,
            n_selected=3,
            selection="entropy",
            selected_ids=ids,
            selected_scores=scores,
            epochs=1,
            best_epoch=0,
            metrics={"test/map": 0.1},
        )
    )
    tracker.finish({})

    (log_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert wait_until_finished(log_dir)
    row = next(h for h in read_offline_run(log_dir).history if "al/n_labelled" in h)
    _, rows = read_table(log_dir, media(row, "al/selection"))
    targets = {i: dm.source.load(i)[1] for i in ids}
    for r in rows:  # the label column: the image's class counts
        counts = collections.Counter(dm.class_names[int(c)] for c in targets[r[3]]["labels"])
        assert all(f"{n} x{k}" in r[5] if k > 1 else n in r[5] for n, k in counts.items())
    top = media(row, "al/top_selected")
    assert [c.split()[1] for c in top["captions"]] == [str(ids[1]), str(ids[2])]  # highest scores first
    for item, boxes in zip((ids[1], ids[2]), top["all_boxes"]):
        assert set(boxes) == {"ground_truth", "predictions"}
        truth = json.loads((log_dir / "files" / boxes["ground_truth"]["path"]).read_text())
        positions = [[b["position"][k] for k in ("minX", "minY", "maxX", "maxY")] for b in truth["box_data"]]
        np.testing.assert_allclose(positions, targets[item]["boxes"].numpy(), atol=1e-4)
        assert [b["class_id"] for b in truth["box_data"]] == targets[item]["labels"].tolist()


@pytest.mark.parametrize(
    "args, says",
    [
        (["--metrics", "test/nope"], "--metrics test/nope: not in the runs; present: test/acc_top1"),
        (["--group-by", "selection.nope"], "selection.nope: not a key of the runs' configs"),
        (["--facet", "nope"], "nope: not a key of the runs' configs"),
        (["--grid-k", "0"], "--grid-k=0: must be at least 1"),
        (["--audit-n", "many"], "argument --audit-n: invalid int value: 'many'"),
    ],
)
def test_command_line_mistakes_are_one_line_and_status_2(sweep, tmp_path, capsys, args, says):
    out = tmp_path / "rep"
    try:
        status = main([str(sweep), "--out", str(out), "--no-grids", *args])
    except SystemExit as exited:  # argparse's own checks exit from inside parse_args
        status = exited.code
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert not out.exists()
