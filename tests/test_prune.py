"""Pruning a labelled set in the loop (``selection.mode=prune``, issue 14): the plan of kept
counts, the candidates and the labelled set of a prune round, the report's final-round
comparison, and end to end through the real CLI (a subset of round 0's set, chosen by the
loss of round 0's model, resumed after a kill to the same records).

Expected values are worked out by hand in comments."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from scipy import stats as st

from src.analysis import aggregate as agg
from src.analysis.report import build_report, resolve_statistic
from src.selection import policy
from src.selection.ranking import select
from src.selection.schedule import keep_count, plan_budgets, plan_prune, plan_selections
from tests.conftest import read_jsonl, run_cli, without_timings


# --------------------------------------------------------------------------------------
# kept counts
# --------------------------------------------------------------------------------------
def test_keep_count_rounds_half_to_even_and_keeps_at_least_one():
    assert keep_count(600, 0.5) == 300
    assert keep_count(120, 0.25) == 30
    assert keep_count(5, 0.5) == 2  # 2.5 -> 2 (half to even, as src.select mode=keep)
    assert keep_count(7, 0.5) == 4  # 3.5 -> 4
    assert keep_count(3, 0.1) == 1  # 0.3 -> 0 -> at least one
    assert keep_count(600, 1) == 600


def test_fraction_shrinks_the_set_round_after_round():
    assert plan_prune(600, 0, 60, 2, 0.5) == [300]  # base round on all 600, then 300
    assert plan_prune(600, 0, 60, None, 0.5) == [300]  # rounds=null: one prune round
    assert plan_prune(120, 0, 20, 4, 0.5) == [60, 30, 15]  # 120 -> 60 -> 30 -> 15
    assert plan_prune(10, 0, 1, 3, 0.5) == [5, 2]  # 10 -> 5 -> 2.5 rounds to 2
    assert plan_prune(600, 200, 60, 2, 0.5) == [100]  # a random base set of 200: half of it
    assert plan_prune(600, 0, 60, 2, 1.0) == [600]  # keep everything: a refit on the whole set
    assert plan_prune(600, 0, 60, 1, 0.5) == []  # the base round alone


def test_budget_keeps_that_many_in_every_prune_round():
    assert plan_prune(600, 0, 100, 3, None) == [100, 100]  # 600 -> 100 -> the same 100 re-ranked
    assert plan_prune(600, 0, 300, None, None) == [300]
    assert plan_prune(600, 0, [300, 100], None, None) == [300, 100]
    assert plan_prune(600, 0, [300, 100, 50], 3, None) == [300, 100]
    assert plan_prune(600, 0, 600, 2, None) == [600]


@pytest.mark.parametrize(
    "args,message",
    [
        (
            (600, 0, 700, 2, None),
            "selection.budget=700: prune round 1 would keep 700 items but round 0 trains on "
            "only 600 (the whole pool)",
        ),
        (
            (600, 50, 60, 2, None),
            "prune round 1 would keep 60 items but round 0 trains on only 50 (the base set)",
        ),
        (
            (600, 0, [300, 400], None, None),
            "prune round 2 would keep 400 items but round 1 trains on only 300",
        ),
        ((600, 0, [300], 3, None), "selection.budget lists 1 kept counts but selection.rounds=3 needs 2"),
        ((600, 0, 60, 2, 0.0), "selection.fraction=0.0 must be a number in (0, 1]"),
        ((600, 0, 60, 2, 1.5), "selection.fraction=1.5 must be a number in (0, 1]"),
        ((600, 0, 60, 2, True), "selection.fraction=True must be a number in (0, 1]"),
        ((600, 700, 60, 2, None), "selection.base_size=700 is larger than the pool (600 items)"),
        ((0, 0, 60, 2, 0.5), "the pool is empty"),
        ((600, 0, 60, 0, None), "selection.rounds=0 must be a positive integer or null"),
    ],
)
def test_a_plan_that_cannot_be_kept_names_the_key(args, message):
    with pytest.raises(ValueError) as err:
        plan_prune(*args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_other_modes_plan_as_before_and_refuse_a_fraction():
    assert (
        plan_selections("accumulate", 250, 0, 100, None) == plan_budgets(250, 0, 100, None) == [100, 100, 50]
    )
    assert plan_selections("reselect", 250, 50, 100, 3) == [100, 100]
    assert plan_selections("prune", 600, 0, 60, 2, 0.5) == [300]
    with pytest.raises(ValueError, match=r"selection.fraction=0.5 applies to selection.mode=prune only"):
        plan_selections("accumulate", 250, 0, 100, None, 0.5)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["selection.mode=prune", "selection.budget=200"],
            "selection.budget=200: prune round 1 would keep 200 items but round 0 trains on only 120 (the whole pool)",
        ),
        (
            [
                "selection.mode=prune",
                "selection.base_size=50",
                "selection.budget=[40,45]",
                "selection.rounds=3",
            ],
            "prune round 2 would keep 45 items but round 1 trains on only 40 (what it kept)",
        ),
        (["selection.fraction=0.5"], "selection.fraction=0.5 applies to selection.mode=prune only"),
        (["selection.mode=prune", "selection.fraction=0"], "selection.fraction=0 must be a number in (0, 1]"),
        (
            ["selection.mode=prune", "selection.fraction=half"],
            "selection.fraction='half' must be a number in (0, 1]",
        ),
        (["selection.mode=prune", "selection.pivot=1.5"], "selection.pivot=1.5 is outside [0, 1]"),
        (["selection.mode=prunes"], "selection.mode='prunes'; allowed: accumulate, reselect, prune"),
    ],
)
def test_a_bad_prune_config_is_one_line_naming_the_key_before_any_work(compose_cfg, overrides, message):
    from src.errors import UserError
    from src.validate import validate

    with pytest.raises(UserError) as err:
        validate(compose_cfg("debug=fast", *overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_prune_config_validates(compose_cfg):
    from src.validate import validate

    validate(compose_cfg("debug=fast", "selection.mode=prune"))  # keeps budget=20 of 120
    validate(
        compose_cfg("debug=fast", "selection.mode=prune", "selection.fraction=0.25", "selection.rounds=4")
    )


# --------------------------------------------------------------------------------------
# what a prune round chooses from and trains on
# --------------------------------------------------------------------------------------
def test_prune_base_is_the_whole_pool_without_a_random_draw():
    pool = np.array([9, 3, 7, 5, 1])
    rng = np.random.default_rng(0)
    assert policy.base_set("prune", pool, 0, rng).tolist() == [1, 3, 5, 7, 9]
    assert rng.random() == np.random.default_rng(0).random()  # nothing drawn
    # a base size draws exactly as the other modes do
    drawn = [policy.base_set(mode, pool, 3, np.random.default_rng(4)).tolist() for mode in policy.MODES]
    assert drawn[0] == drawn[1] == drawn[2] and len(set(drawn[0])) == 3
    assert policy.base_set("accumulate", pool, 0, rng).tolist() == []
    assert [policy.has_base_round(m, 0) for m in policy.MODES] == [False, False, True]
    assert policy.has_base_round("accumulate", 10)


def test_prune_candidates_are_the_labelled_set_and_the_kept_ids_replace_it():
    pool, base = np.arange(10), np.arange(10)
    labelled = np.array([7, 2, 9, 4])  # what the previous round trained on, in rank order
    candidates, budget = policy.candidates_and_budget("prune", pool, labelled, base, [6, 2], 1)
    assert candidates.tolist() == [2, 4, 7, 9] and budget == 2
    assert policy.kept_labelled("prune", labelled, base).tolist() == []
    assert policy.labelled_after("prune", labelled, base, [9, 4]).tolist() == [9, 4]
    # the other modes are unchanged: accumulate adds to the labelled set, reselect to the base
    assert policy.candidates_and_budget("accumulate", pool, labelled, base[:0], [6, 2], 1)[0].tolist() == [
        0,
        1,
        3,
        5,
        6,
        8,
    ]
    assert policy.labelled_after("accumulate", labelled, base, [1]).tolist() == [7, 2, 9, 4, 1]


def test_a_loss_ranked_prune_keeps_the_window_around_the_pivot():
    # ten labelled items with their losses under the round-0 model
    ids = np.arange(100, 110)
    loss = np.array([0.10, 2.50, 0.40, 0.05, 1.20, 0.70, 3.90, 0.20, 0.90, 0.60])
    # ranking, highest loss first: 106 (3.9), 101 (2.5), 104 (1.2), 108 (0.9), 105 (0.7),
    # 109 (0.6), 102 (0.4), 107 (0.2), 100 (0.1), 103 (0.05)
    ranked = [106, 101, 104, 108, 105, 109, 102, 107, 100, 103]
    # keep 4 (fraction 0.4): pivot 0 -> ranks 0..3; pivot 1 -> ranks 6..9
    assert select(ids, loss, keep_count(10, 0.4), pivot=0.0).ids.tolist() == ranked[0:4]
    assert select(ids, loss, 4, pivot=1.0).ids.tolist() == ranked[6:10]
    # pivot 0.5: centre rank 0.5 * 9 = 4.5; a window of 4 centred there starts at 4.5 - 1.5 = 3
    chosen = select(ids, loss, 4, pivot=0.5)
    assert chosen.ids.tolist() == ranked[3:7] == [108, 105, 109, 102]
    assert chosen.scores.tolist() == [0.9, 0.7, 0.6, 0.4] and chosen.ranks.tolist() == [3, 4, 5, 6]
    # class diversity with true labels, k = ceil(4 / 2) = 2: the window holds 108, 105, 109 of class 0
    # and 102 of class 1; the third class-0 item (109, rank 5) is refused, the walk outwards takes
    # rank 2 (104, class 1) before rank 7 (107)
    classes = np.array([1, 0, 1, 0, 1, 0, 0, 0, 0, 0])  # by id 100..109
    assert select(ids, loss, 4, pivot=0.5, classes=classes).ids.tolist() == [104, 108, 105, 102]


# --------------------------------------------------------------------------------------
# the report: a prune sweep is compared on its final round
# --------------------------------------------------------------------------------------
# test/acc_top1 per round, by hand: (arm, seed) -> values; whole set 600, subsets 300
ARMS = {"whole_set": [600, 600], "loss_p0.5": [600, 300], "random": [600, 300]}
ACC = {
    ("whole_set", 1): [0.80, 0.82],
    ("whole_set", 2): [0.78, 0.80],
    ("whole_set", 3): [0.79, 0.78],
    ("loss_p0.5", 1): [0.80, 0.76],
    ("loss_p0.5", 2): [0.78, 0.75],
    ("loss_p0.5", 3): [0.79, 0.77],
    ("random", 1): [0.80, 0.70],
    ("random", 2): [0.78, 0.73],
    ("random", 3): [0.79, 0.71],
}


def make_prune_run(root: Path, cfg, arm: str, seed: int) -> Path:
    run = root / f"{arm}-s{seed}"
    (run / ".hydra").mkdir(parents=True)
    fraction = 1 if arm == "whole_set" else 0.5
    scorer = "loss" if arm.startswith("loss") else "random"
    c = OmegaConf.merge(
        cfg, {"seed": seed, "scorer": {"name": scorer}, "selection": {"mode": "prune", "fraction": fraction}}
    )
    OmegaConf.save(c, run / ".hydra" / "config.yaml")
    (run / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["experiment=prune", f"arm={arm}", f"seed={seed}"])
    )
    lines = []
    for r, (n, y) in enumerate(zip(ARMS[arm], ACC[arm, seed])):
        lines.append(
            json.dumps(
                {
                    "round": r,
                    "n_labelled": n,
                    "n_selected": n,
                    "selection": "base" if r == 0 else scorer,
                    "selected_ids": list(range(n)),
                    "selected_scores": [] if r == 0 else [0.0] * n,
                    "epochs": 3,
                    "best_epoch": 1,
                    "val/loss": 1 - y,
                    "test/loss": 1 - y,
                    "test/acc_top1": y,
                }
            )
        )
    (run / "rounds.jsonl").write_text("\n".join(lines) + "\n")
    (run / "summary.json").write_text("{}")
    return run


def test_the_report_compares_a_prune_sweep_on_its_final_round(tmp_path, compose_cfg):
    cfg = compose_cfg("debug=fast")
    root = tmp_path / "sweep"
    for arm, seed in ACC:
        make_prune_run(root, cfg, arm, seed)
    runs = agg.load_runs([root])
    assert resolve_statistic(runs, "auto") == "final"
    groups, _ = agg.group_runs(runs)
    assert [g.label for g in groups] == ["loss_p0.5", "random", "whole_set"]  # the arms, as swept
    loss, random, whole = groups
    final = agg.group_final(loss, "test/acc_top1")
    assert final.values == pytest.approx([0.76, 0.75, 0.77]) and final.mean == pytest.approx(0.76)
    assert final.std == pytest.approx(0.01)
    assert agg.final_counts(loss, "test/acc_top1") == [300] and agg.final_counts(whole, "test/acc_top1") == [
        600
    ]
    # the whole-set arm trains twice on 600: its curve point is the later fit, one value per run
    c = agg.group_curve(whole, "test/acc_top1")
    assert c.x.tolist() == [600] and c.n.tolist() == [3] and c.mean.tolist() == pytest.approx([0.80])
    c = agg.group_curve(random, "test/acc_top1")
    assert c.x.tolist() == [300, 600] and c.mean.tolist() == pytest.approx([(0.70 + 0.73 + 0.71) / 3, 0.79])

    res = build_report([root], out=tmp_path / "report", grids=False)
    assert res.statistic == "final"
    p = res.pvalues["test/acc_top1"]["loss_p0.5"]["random"].p
    assert p == pytest.approx(st.ttest_ind([0.76, 0.75, 0.77], [0.70, 0.73, 0.71], equal_var=False).pvalue)
    md = res.markdown.read_text()
    assert "## Final round" in md and "p-values, final test/acc_top1" in md
    assert "## Area under the curve" not in md and "does not grow from round to round" in md
    assert "| whole_set (3) | 600 | **0.8000 ± 0.0200** |" in md  # the best final top-1
    with open(res.csvs["final.csv"]) as fh:
        rows = {(r["group"], r["metric"]): r for r in csv.DictReader(fh)}
    assert rows["random", "test/acc_top1"]["n_labelled"] == "300"
    assert json.loads(rows["random", "test/acc_top1"]["values"]) == pytest.approx([0.70, 0.73, 0.71])
    # asked for, the AUCs are tested instead
    auc = build_report([root], out=tmp_path / "auc", grids=False, statistic="auc")
    assert auc.statistic == "auc" and "## Area under the curve" in auc.markdown.read_text()
    assert agg.group_auc(random, "test/acc_top1").values == pytest.approx(
        [0.75, 0.755, 0.75]
    )  # (0.80+0.70)/2 ...


def test_a_growing_sweep_still_compares_aucs(tmp_path, compose_cfg):
    from tests.test_report import make_run

    cfg = compose_cfg("debug=fast")
    for scorer, seed in (("entropy", 1), ("random", 1)):
        make_run(tmp_path, cfg, scorer, seed, [0.1, 0.3], finished=True)
    assert resolve_statistic(agg.load_runs([tmp_path]), "auto") == "auc"


# --------------------------------------------------------------------------------------
# end to end through the real CLI
# --------------------------------------------------------------------------------------
# debug=fast: a pool of 120; round 0 trains on all of it, round 1 on the 60 it keeps, round 2 on 30
PRUNE = [
    "debug=fast",
    "logger=csv",
    "selection.mode=prune",
    "selection.fraction=0.5",
    "scorer=loss",
    "selection.pivot=0.5",
]


@pytest.mark.slow
def test_prune_rounds_keep_a_loss_ranked_subset_of_the_set_before_and_resume_after_a_kill(
    tmp_path, compose_cfg
):
    full = tmp_path / "full"
    run_cli(*PRUNE, "selection.rounds=3", f"hydra.run.dir={full}")
    records = read_jsonl(full / "rounds.jsonl")
    assert [r["n_labelled"] for r in records] == [120, 60, 30]
    assert [r["selection"] for r in records] == ["base", "loss", "loss"]
    base, kept, kept_again = (r["selected_ids"] for r in records)
    assert len(set(base)) == 120 and base == sorted(base)  # the whole pool
    for before, after, n in ((base, kept, 60), (kept, kept_again, 30)):
        assert len(after) == len(set(after)) == n and set(after) <= set(before)
    for r in records[1:]:
        assert r["n_selected"] == r["n_labelled"] and r["selected_scores"] == sorted(
            r["selected_scores"], reverse=True
        )

    # an independent recomputation: the same command for one round saves round 0's model; its loss
    # on every pool item, ranked by hand, must give round 1's 60 in the same order
    first = tmp_path / "first"
    run_cli(*PRUNE, "selection.rounds=1", "save_model=true", f"hydra.run.dir={first}")
    assert without_timings(read_jsonl(first / "rounds.jsonl")) == without_timings(records[:1])
    import torch
    from torch.nn import functional as F

    from src.config.instantiate import build
    from src.labelling.trained import load_trained_model

    model, _, _ = load_trained_model(first)
    dm = build(compose_cfg(*PRUNE).dataset)
    dm.setup()
    losses, ids = [], []
    with torch.no_grad():
        for images, targets, batch_ids in dm.pool_dataloader(np.asarray(base)):
            losses += F.cross_entropy(model(images), targets, reduction="none").double().tolist()
            ids += batch_ids.tolist()
    ranked = sorted(zip(losses, ids), key=lambda t: (-t[0], t[1]))
    # pivot 0.5 on 120 ranks: centre 59.5; 60 ranks centred there start at 59.5 - 29.5 = 30
    assert [i for _, i in ranked[30:90]] == kept
    assert [s for s, _ in ranked[30:90]] == pytest.approx(records[1]["selected_scores"], rel=1e-5, abs=1e-6)

    # a keep count larger than the labelled set: one line, exit status 2, no file written
    refused = run_cli(
        *PRUNE,
        "selection.fraction=null",
        "selection.budget=121",
        f"hydra.run.dir={tmp_path / 'no'}",
        check=False,
    )
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1 and "selection.budget=121: prune round 1" in lines[0]
    assert not [f for f in tmp_path.glob("no/**/*") if f.is_file()]

    # killed while scoring round 1's set (the second pool pass: after round 0 was committed), then
    # resumed: round 1 trains again on the kept ids restored from state.json, and the records are equal
    killed = tmp_path / "killed"
    proc = run_cli(
        *PRUNE,
        "selection.rounds=3",
        f"hydra.run.dir={killed}",
        env={"AL_SELECT_FAULT": "pool:2"},
        check=False,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    state = json.loads((killed / "state.json").read_text())
    assert state["completed_rounds"] == 1 and state["pending"]["ids"] == kept
    run_cli(*PRUNE, "selection.rounds=3", "resume=true", f"hydra.run.dir={killed}")
    assert without_timings(read_jsonl(killed / "rounds.jsonl")) == without_timings(records)
    assert json.loads((killed / "state.json").read_text())["labelled_ids"] == kept_again
    assert math.isclose(
        json.loads((killed / "summary.json").read_text())["final/test/acc_top1"], records[-1]["test/acc_top1"]
    )
