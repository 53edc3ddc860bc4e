"""The report on hand-made run directories: known means, stds, AUCs and p-values;
figures and pages that open; the W&B summary run read back from its offline log."""
from __future__ import annotations

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
from src.analysis.stats import compare, pvalue_matrix
from src.analysis.wandb_offline import media, read_offline_run, read_table, wait_until_finished
from src.loop.records import RoundRecord
from src.report import build_report, main
from src.tasks import classification

X = [20, 40, 60]
# test/acc_top1 per round, by hand: two methods, three seeds; random's seed 3 crashed after 2 rounds
ACC = {("entropy", 1): [0.1, 0.2, 0.4], ("entropy", 2): [0.2, 0.3, 0.5], ("entropy", 3): [0.3, 0.4, 0.3],
       ("random", 1): [0.1, 0.1, 0.1], ("random", 2): [0.2, 0.2, 0.3], ("random", 3): [0.5, 0.6]}
CRASHED = {("random", 3)}


def make_run(root: Path, cfg, scorer: str, seed: int, acc: list[float], finished: bool, budget: int = 20,
             name: str | None = None) -> Path:
    """A run directory as `python -m src.run` writes it, with chosen metric values."""
    run = root / (name or f"{scorer}-s{seed}")
    (run / ".hydra").mkdir(parents=True)
    c = OmegaConf.merge(cfg, {"seed": seed, "scorer": {"name": scorer}, "selection": {"budget": budget}})
    OmegaConf.save(c, run / ".hydra" / "config.yaml")
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"scorer={scorer}", f"seed={seed}"]))
    rng = np.random.default_rng(seed)
    lines = []
    for r, y in enumerate(acc):
        ids = rng.choice(120, size=budget, replace=False).tolist()      # rows of the debug=fast pool
        lines.append(json.dumps({
            "round": r, "n_labelled": budget * (r + 1), "n_selected": budget, "selection": scorer,
            "selected_ids": ids, "selected_scores": sorted(rng.random(budget).tolist(), reverse=True),
            "epochs": 3 + r, "best_epoch": 1, "val/loss": 2.0 - y, "test/loss": 2.0 - y, "test/acc_top1": y,
            "select_seconds": 0.1, "reset_seconds": 0.0, "fit_seconds": 1.0, "test_seconds": 0.1}))
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
    # the seed and what follows from it (model.baseline.init_seed, run_name) never group
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
    assert c.std.tolist() == pytest.approx([0.1, 0.1, 0.1])               # sample std (ddof 1)
    # the crashed run counts up to its last completed round
    c = agg.group_curve(random, "test/acc_top1")
    assert c.n.tolist() == [3, 3, 2]
    assert c.mean.tolist() == pytest.approx([0.8 / 3, 0.9 / 3, 0.2])
    assert c.std[2] == pytest.approx(math.sqrt(((0.1 - 0.2) ** 2 + (0.3 - 0.2) ** 2) / 1))

    a = agg.group_auc(entropy, "test/acc_top1")
    assert a.values == pytest.approx([0.225, 0.325, 0.35])                 # (20*.15 + 20*.3)/40 ...
    assert a.values == pytest.approx([auc_by_hand(ACC["entropy", s]) for s in (1, 2, 3)])
    assert a.mean == pytest.approx(0.3)
    assert a.std == pytest.approx(math.sqrt((0.075 ** 2 + 0.025 ** 2 + 0.05 ** 2) / 2))
    r = agg.group_auc(random, "test/acc_top1")
    assert r.values == pytest.approx([0.1, 0.225]) and r.n_excluded == 1  # crashed run left out
    assert agg.group_auc(random, "test/acc_top1", include_incomplete=True).values == pytest.approx([0.1, 0.225, 0.55])


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
    assert m["x"]["x"].p == 1.0 and m["x"]["y"].p == m["y"]["x"].p and m["x"]["y"].effect == -m["y"]["x"].effect


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
    res = build_report([sweep], out=out, grid_k=3)
    names = {p.name for p in res["figures"]}
    assert {"test_acc_top1.png", "test_loss.png", "val_loss.png", "epochs.png"} <= names
    for p in res["figures"] + res["grids"]:
        _png_ok(p)
    assert len(res["grids"]) == 2                     # one selection grid per method
    assert res["pvalues"]["test/acc_top1"]["entropy"]["random"].p == pytest.approx(
        st.ttest_ind([0.225, 0.325, 0.35], [0.1, 0.225], equal_var=False).pvalue)

    html = res["html"].read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    local = [r for r in refs if not r.startswith(("data:", "#", "http"))]
    assert local and all((out / r).is_file() for r in local)
    assert sum(r.startswith("data:image/png;base64,") for r in refs) == len(res["figures"]) + len(res["grids"])
    md = res["markdown"].read_text()
    for target in re.findall(r"\]\(([^)]+)\)", md):
        assert (out / target).is_file(), target
    assert "random (3, 1 incomplete)" in md and "still running or crashed" in md
    assert "**0.3000 ± 0.0661**" in md                 # entropy's AUC of top-1, mean ± std, the best

    rows = [line.split(",") for line in res["curves_csv"].read_text().splitlines()]
    assert rows[0] == ["group", "metric", "n_labelled", "mean", "std", "runs"]
    top1 = {(r[0], int(r[2])): float(r[3]) for r in rows[1:] if r[1] == "test/acc_top1"}
    assert top1["entropy", 40] == pytest.approx(0.3) and top1["random", 60] == pytest.approx(0.2)


def test_cli_names_grouping_keys_and_logs_a_wandb_summary_run(sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "rep"
    assert main([str(sweep), "--out", str(out), "--group-by", "scorer", "--paired", "--include-incomplete", "--no-grids", "--wandb",
                 "--metrics", "test/acc_top1", "epochs"]) == 0
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
    assert media(row, "report/test_acc_top1")["_type"] == "image-file"
    assert wb.summary["auc/test/acc_top1/random"] == pytest.approx((0.1 + 0.225 + 0.55) / 3)


def test_missing_directory_is_a_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "no such run or multirun directory" in capsys.readouterr().err


def test_wandb_tracker_logs_the_selection_table_and_top_images(tmp_path, compose_cfg, monkeypatch):
    """The run-side W&B extras, with the real SDK offline and the real (debug=fast) dataset."""
    import hydra

    from src.analysis.wandb_offline import media_files
    from src.tracking import WandbTracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    dm = hydra.utils.instantiate(compose_cfg("debug=fast").dataset)
    dm.setup()
    tracker = WandbTracker(project="p", group="g", job_type="entropy", name="n", selection_images=3)
    tracker.start({"seed": 1}, tmp_path, "abc123", item_view=functools.partial(classification.item_view, dm))
    ids, scores = [5, 9, 2, 7], [0.2, 0.9, 0.5, 0.1]
    tracker.log_round(RoundRecord(round=0, n_labelled=4, n_selected=4, selection="entropy", selected_ids=ids,
                                  selected_scores=scores, epochs=2, best_epoch=1, metrics={"test/acc_top1": 0.5}))
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
