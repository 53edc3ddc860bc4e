"""The report on bad inputs and on what it writes: a malformed file of a run directory or an
output folder that cannot be written is one line (``error: ...``, exit status 2) through the
real CLI, before any work and with every file left as it was; the decode cache goes only where
the user said; the grouping line, axis ticks, class names and audit text say what is there."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from PIL import Image

from src.analysis import aggregate as agg
from src.analysis import plots
from src.analysis.report import build_report
from src.report import main
from tests.conftest import run_module
from tests.test_report import make_run


# -- helpers --------------------------------------------------------------------------------------
def snapshot(root: Path) -> dict:
    """Every file under ``root`` (links not followed) with a digest of its bytes: what 'unchanged' means."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def report_cli(*args: str):
    """``python -m src.report ARGS`` in a process of its own, as a user runs it."""
    return run_module("src.report", *args, timeout=120)


def one_error_line(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def run(tmp_path, compose_cfg) -> Path:
    """One finished run directory as `python -m src.run` writes it (two rounds, debug=fast digits)."""
    return make_run(tmp_path / "runs", compose_cfg("debug=fast"), "entropy", 1, [0.2, 0.3], True)


def _cannot_write(folder: Path) -> bool:
    try:
        fd, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        return True
    os.close(fd)
    os.unlink(probe)
    return False


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write into: a chmod 555 folder, or for root (whom permissions do
    not stop) a read-only place of the system."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    if _cannot_write(folder):
        return folder
    for candidate in (Path("/sys"), Path("/proc/sys")):
        if candidate.is_dir() and _cannot_write(candidate):
            return candidate
    pytest.skip("no folder on this machine refuses this process a file")


# -- 6. --out that cannot be written: one line, exit 2, before any work -------------------------
@pytest.mark.parametrize("where", ["a regular file", "under a regular file", "a read-only place"])
def test_an_output_folder_that_cannot_be_written_is_one_line_before_any_work(run, tmp_path, where):
    existing = tmp_path / "notes.txt"
    existing.write_text("my notes\n")
    if where == "a regular file":
        out, says = existing, "is a file, not a folder"
    elif where == "under a regular file":
        out, says = existing / "report", f"{existing} is a file"
    else:
        out, says = read_only_folder(tmp_path) / "al-select-report", "cannot write in"
    before, listing = snapshot(run), sorted(p.name for p in tmp_path.iterdir())
    try:
        line = one_error_line(report_cli(str(run), "--out", str(out)))
    finally:
        (tmp_path / "read_only").exists() and (tmp_path / "read_only").chmod(0o755)
    assert f"--out {out}" in line and says in line
    assert existing.read_text() == "my notes\n"
    assert snapshot(run) == before and not (run / "report").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
    assert out == existing or not out.exists()


def test_a_data_cache_that_is_a_file_is_refused_before_any_work(run, tmp_path):
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    line = one_error_line(report_cli(str(run), "--out", str(tmp_path / "rep"), "--data-cache", str(cache)))
    assert f"--data-cache {cache}: is a file" in line and not (tmp_path / "rep").exists()


# -- 7. a malformed file of a run directory: one line naming the file (and line) ------------------
RECORD = {
    "round": 0,
    "n_labelled": 2,
    "n_selected": 2,
    "selection": "entropy",
    "selected_ids": [3, 1],
    "selected_scores": [0.9, 0.1],
    "epochs": 3,
    "best_epoch": 1,
    "test/acc_top1": 0.2,
}


def _jsonl(*objects) -> str:
    return "".join(json.dumps(o) + "\n" for o in objects)


MALFORMED = [
    # (file, content, what the line says besides the file)
    (
        ".hydra/config.yaml",
        "seed: 1\ndataset:\n  name: [digits\n  sizes: 3\n",
        "config.yaml:4: not valid YAML",
    ),
    (".hydra/config.yaml", "seed: 1\nscorer:\n  name: a\n  name: b\n", "config.yaml:4: not valid YAML"),
    (
        ".hydra/config.yaml",
        "seed: 1\nrun: !!python/object/apply:os.system ['touch pwned']\n",
        "config.yaml:2: not valid YAML",
    ),
    (".hydra/config.yaml", "seed: 1\ntask_name: ${oops\n", "config.yaml:2: not a config"),
    (".hydra/config.yaml", "- seed=1\n- scorer=entropy\n", "config.yaml: not a config (a YAML mapping"),
    (".hydra/config.yaml", b"seed: 1\nname: caf\xe9\n", "config.yaml:2: not UTF-8 text"),
    (".hydra/overrides.yaml", '- scorer=entropy\n- "seed=1\n', "overrides.yaml:3: not valid YAML"),
    (".hydra/overrides.yaml", "scorer: entropy\n", "overrides.yaml: not a list of overrides"),
    (".hydra/hydra.yaml", "hydra:\n  runtime: {choices: {scorer: entropy}\n", "hydra.yaml:3: not valid YAML"),
    (
        ".hydra/hydra.yaml",
        "hydra:\n  runtime:\n    choices: [scorer, entropy]\n",
        "hydra.yaml: hydra.runtime.choices",
    ),
    ("summary.json", '{\n  "auc": 0.5,\n  oops\n}\n', "summary.json:3: not valid JSON"),
    ("summary.json", "[0.5]\n", "summary.json: not a JSON object"),
    ("rounds.jsonl", _jsonl(RECORD) + '{"round": 1,\n', "rounds.jsonl:2: not a JSON line"),
    (
        "rounds.jsonl",
        _jsonl(RECORD, {**RECORD, "round": "one"}),
        "rounds.jsonl:2: a round record whose round is 'one', not an integer >= 0",
    ),
    (
        "rounds.jsonl",
        _jsonl({**RECORD, "selected_ids": [3, "x"]}),
        "rounds.jsonl:1: a round record whose selected_ids is [3, 'x'], not a list of integer ids",
    ),
    (
        "rounds.jsonl",
        _jsonl({**RECORD, "selected_predictions": [1]}),
        "rounds.jsonl:1: a round record whose selected_predictions is [1], not one integer class per selected id",
    ),
    (
        "rounds.jsonl",
        _jsonl({**RECORD, "fit_seconds": [1]}),
        "rounds.jsonl:1: a round record whose fit_seconds is [1]",
    ),
    ("rounds.jsonl", "\n" + "[" * 100_000 + "\n", "rounds.jsonl:2: not a round record"),
    ("rounds.jsonl", b"\xff\xfe{}\n", "rounds.jsonl:1: not UTF-8 text"),
    (
        "rounds/round_000/metrics.csv",
        b"epoch,val/loss,val/acc_top1\n0,1.0,\xff\n",
        "metrics.csv:2: not UTF-8 text",
    ),
    (
        "rounds/round_000/metrics.csv",
        'epoch,val/loss,val/acc_top1\n0,"' + "x" * 200_000 + '",0.5\n',
        "metrics.csv:2: not a CSV file",
    ),
    (".hydra/config.yaml", None, "config.yaml: not a regular file"),  # a folder where the file should be
]


@pytest.mark.parametrize(
    "name, content, says",
    MALFORMED,
    ids=[f"{n.rsplit('/', 1)[-1]}-{i}" for i, (n, _, _) in enumerate(MALFORMED)],
)
def test_a_malformed_run_file_is_one_line_naming_it(run, tmp_path, name, content, says):
    path = run / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        path.unlink()
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    before = snapshot(run)
    out = tmp_path / "rep"
    line = one_error_line(report_cli(str(run), "--out", str(out), "--no-grids"))
    assert str(run / name) in line and says in line, line
    assert snapshot(run) == before and not out.exists()
    assert not (Path.cwd() / "pwned").exists()


def test_files_the_report_does_not_read_cannot_stop_it(run, tmp_path):
    """state.json, model.json and class_distribution.json belong to the run and src.select, not the report."""
    for name in ("state.json", "model.json", "class_distribution.json"):
        (run / name).write_text("{ not json")
    assert main([str(run), "--out", str(tmp_path / "rep"), "--no-grids"]) == 0


def test_selections_that_are_no_rows_of_the_rebuilt_dataset_skip_the_grids_with_a_note(run, tmp_path):
    records = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    records[1]["selected_ids"][0] = 10_000  # the debug=fast digits have 240 rows
    (run / "rounds.jsonl").write_text(_jsonl(*records))
    res = build_report([run], out=tmp_path / "rep", metrics=["test/acc_top1"])
    assert not res.grids and not res.audit_grids
    assert any("rounds.jsonl: round 1 selects row 10000" in n for n in res.notes), res.notes


# -- the decoded-image cache: where the user said, never ./data/cache -----------------------------
def _images(root: Path) -> Path:
    for c, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((12, 12, 3), 10 * i + 120 * c, dtype=np.uint8)).save(
                root / cls / f"{i}.png"
            )
    return root


def folder_run(root: Path, compose_cfg, images: Path, *overrides: str) -> Path:
    """A dataset=folder run directory whose config is saved as Hydra saves it: unresolved."""
    cfg = compose_cfg(
        "debug=fast",
        "dataset=folder",
        f"dataset.root={images}",
        "dataset.image_size=8",
        "dataset.sizes.pool=null",
        "dataset.sizes.val=null",
        "dataset.sizes.test=null",
        *overrides,
    )
    run = root / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    (run / "rounds.jsonl").write_text(
        _jsonl(
            {
                **RECORD,
                "n_labelled": 3,
                "n_selected": 3,
                "selected_ids": [0, 1, 2],
                "selected_scores": [0.9, 0.5, 0.1],
            }
        )
    )
    return run


def test_the_decode_cache_goes_under_the_report_folder_not_into_the_working_directory(
    tmp_path, compose_cfg, monkeypatch
):
    images = _images(tmp_path / "images")
    run = folder_run(tmp_path / "received", compose_cfg, images)  # paths.cache_dir: ${paths.data_dir}/cache
    assert "${" in yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["paths"]["cache_dir"]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "rep"
    assert main([str(run), "--out", str(out)]) == 0
    assert list(cwd.iterdir()) == []  # no ./data/cache
    assert any((out / "cache").glob("*/images.u8"))
    assert (out / "figures" / "audit_00.png").is_file()


def test_a_runs_own_cache_is_read_where_it_holds_the_images_and_never_written(
    tmp_path, compose_cfg, monkeypatch
):
    images = _images(tmp_path / "images")
    own = tmp_path / "runs_cache"
    run = folder_run(tmp_path / "received", compose_cfg, images, f"paths.cache_dir={own}")
    monkeypatch.chdir(tmp_path)
    # the run's cache is made as the run made it (here: by the report, told to write there)
    assert main([str(run), "--out", str(tmp_path / "first"), "--data-cache", str(own)]) == 0
    before = snapshot(own)
    assert any(p.endswith("images.u8") for p in before)
    assert main([str(run), "--out", str(tmp_path / "rep")]) == 0
    assert (
        snapshot(own) == before and not (tmp_path / "rep" / "cache").exists()
    )  # read, and not decoded again
    assert (tmp_path / "rep" / "figures" / "audit_00.png").is_file()

    # a recorded cache without these images is not written: the report decodes under its own folder
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    run2 = folder_run(tmp_path / "received2", compose_cfg, images, f"paths.cache_dir={empty}")
    assert main([str(run2), "--out", str(tmp_path / "rep2")]) == 0
    assert list(empty.iterdir()) == [] and any((tmp_path / "rep2" / "cache").glob("*/images.u8"))


def test_a_recorded_cache_that_is_not_a_plain_absolute_path_is_not_used(tmp_path, compose_cfg, monkeypatch):
    images = _images(tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    run = folder_run(tmp_path / "received", compose_cfg, images, "paths.cache_dir=relative/cache")
    assert main([str(run), "--out", str(tmp_path / "rep")]) == 0
    assert not (tmp_path / "relative").exists() and any((tmp_path / "rep" / "cache").glob("*/images.u8"))


# -- the grouping line names the choice the user made -------------------------------------------------
def _sweep(root: Path, compose_cfg, arms: dict[str, list[str]], overrides=True, choices=None) -> Path:
    """Runs of two seeds per arm: ``arms`` maps a run-name stem to its command-line overrides."""
    for stem, items in arms.items():
        cfg = compose_cfg("debug=fast", *items)
        for seed in (1, 2):
            run = make_run(
                root, cfg, str(cfg.scorer.name), seed, [0.2, 0.3 + 0.1 * seed], True, name=f"{stem}-s{seed}"
            )
            recorded = [*items, f"seed={seed}"] if overrides else []
            (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(recorded))
            if choices is not None:
                (run / ".hydra" / "hydra.yaml").write_text(
                    yaml.safe_dump(
                        {
                            "hydra": {
                                "runtime": {
                                    "choices": {
                                        "dataset": "digits",
                                        "hydra/launcher": "basic",
                                        **choices[stem],
                                    }
                                }
                            }
                        }
                    )
                )
    return root


def test_the_grouping_line_names_the_config_group_chosen_not_its_leaf_keys(tmp_path, compose_cfg):
    root = _sweep(
        tmp_path / "sweep", compose_cfg, {"entropy": ["scorer=entropy"], "random": ["scorer=random"]}
    )
    runs = agg.load_runs([root])
    _, keys = agg.group_runs(runs)
    assert len(keys) > 1 and all(k.startswith("scorer.") for k in keys)  # the leaves that changed with it
    res = build_report([root], out=tmp_path / "rep", grids=False, fmt="svg", metrics=["test/acc_top1"])
    assert res.grouping == ["scorer"]
    md = res.markdown.read_text()
    assert "Runs grouped by scorer;" in md and "scorer._target_" not in md
    svg = (tmp_path / "rep" / "figures" / "test_acc_top1.svg").read_text()
    assert "grouped by scorer<" in svg and "scorer._target_" not in svg


def test_a_key_set_directly_keeps_its_name_beside_a_chosen_group(tmp_path, compose_cfg):
    root = _sweep(
        tmp_path / "sweep",
        compose_cfg,
        {
            "e0": ["scorer=entropy", "selection.pivot=0"],
            "e5": ["scorer=entropy", "selection.pivot=0.5"],
            "r0": ["scorer=random", "selection.pivot=0"],
            "r5": ["scorer=random", "selection.pivot=0.5"],
        },
    )
    res = build_report([root], out=tmp_path / "rep", grids=False, metrics=["test/acc_top1"])
    assert res.grouping == ["scorer", "selection.pivot"]
    assert "Runs grouped by scorer, selection.pivot;" in res.markdown.read_text()


def test_without_overrides_the_groups_choices_name_it(tmp_path, compose_cfg):
    """No command line recorded: .hydra/hydra.yaml's choices say which group's option differs."""
    root = _sweep(
        tmp_path / "sweep",
        compose_cfg,
        {"entropy": ["scorer=entropy"], "random": ["scorer=random"]},
        overrides=False,
        choices={"entropy": {"scorer": "entropy"}, "random": {"scorer": "random"}},
    )
    runs = agg.load_runs([root])
    groups, keys = agg.group_runs(runs)
    assert agg.grouping_names(groups, keys) == ["scorer"]
    assert agg.grouping_names(groups, keys, ["scorer"]) == ["scorer"]
    # and without any record of the choices, the leaf keys stay (nothing else says what varied)
    for r in runs:
        r.choices = {}
    assert agg.grouping_names(groups, keys) == keys


# -- integer ticks: labelled counts and epochs ------------------------------------------------------
@pytest.fixture
def figures(monkeypatch):
    """Every figure the report's plots save, kept for a look at its axes."""
    kept = []
    save = plots._save

    def keep(fig, path):
        kept.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return kept


def _visible(ticks, limits) -> list[float]:
    low, high = sorted(limits)
    return [float(t) for t in ticks if low - 1e-9 <= t <= high + 1e-9]


def test_labelled_count_and_epoch_axes_have_integer_ticks_and_best_epoch_shows_0(
    tmp_path, compose_cfg, figures
):
    from tests.test_report import EPOCHS, write_epoch_logs

    root = tmp_path / "runs"
    for scorer in ("entropy", "random"):  # 20 and 40 labelled: matplotlib's own ticks were 20, 22.5, ...
        run = make_run(root, compose_cfg("debug=fast"), scorer, 1, [0.2, 0.3], True)
        write_epoch_logs(run, EPOCHS)
    build_report([root], out=tmp_path / "rep", grids=False, metrics=["test/acc_top1", "epochs", "best_epoch"])
    axes = [ax for fig in figures for ax in fig.axes if ax.get_xlabel() == "labelled images"]
    assert len(axes) == 5  # three metrics, the two panels of the best-epoch view
    for ax in axes:
        xs = _visible(ax.get_xticks(), ax.get_xlim())
        assert len(xs) >= 2 and all(x.is_integer() for x in xs), xs
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert not any("." in t for t in labels), labels
    epoch_axes = [ax for ax in axes if ax.get_ylabel() in ("epochs", "best_epoch", "best epoch (0 = first)")]
    assert len(epoch_axes) == 3
    for ax in epoch_axes:
        ys = _visible(ax.get_yticks(), ax.get_ylim())
        assert all(y.is_integer() for y in ys) and 0.0 in ys, (ax.get_ylabel(), ys)


def test_one_point_still_gets_integer_ticks(tmp_path, compose_cfg, figures):
    make_run(tmp_path / "runs", compose_cfg("debug=fast"), "entropy", 1, [0.2], True)
    build_report([tmp_path / "runs"], out=tmp_path / "rep", grids=False, metrics=["test/acc_top1"])
    (ax,) = figures[0].axes
    xs = _visible(ax.get_xticks(), ax.get_xlim())
    assert 20.0 in xs and all(x.is_integer() for x in xs), xs


# -- the class-distribution figure names its classes ------------------------------------------------
def test_the_class_distribution_names_the_classes_in_count_order():
    from src.data.plots import NAMED_TICKS, class_distribution_figure

    names = ["cat", "dog", "a_rather_long_class_name_indeed"]
    counts = {"pool": [3, 9, 5], "val": [1, 0, 2], "test": [2, 2, 2]}
    fig = class_distribution_figure(counts, names, "folder (/data/pets)")
    fig.canvas.draw()
    pool, val, test = ([t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes)
    assert pool == ["dog", "a_rather_long…", "cat"]  # most first, a long name cut
    assert val == ["a_rather_long…", "cat"]  # classes absent from a split are left out
    assert test == ["cat", "dog", "a_rather_long…"]  # ties keep the class order
    for ax in fig.axes:
        ys = _visible(ax.get_yticks(), ax.get_ylim())
        assert all(y.is_integer() for y in ys)
    # hundreds of classes: as many names as can be read, evenly over the bars, first and last included
    many = [f"class_{i:04d}" for i in range(300)]
    fig = class_distribution_figure({s: list(range(300, 0, -1)) for s in ("pool", "val", "test")}, many)
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(labels) == NAMED_TICKS and labels[0] == "class_0000" and labels[-1] == "class_0299"
    assert f"{NAMED_TICKS} of 300 named" in fig.axes[0].get_xlabel()


def test_the_class_distribution_title_names_the_source_actually_used(tmp_path, compose_cfg):
    from src.config.instantiate import build
    from src.experiment.console import data_title

    images = _images(tmp_path / "images")
    cfg = compose_cfg("dataset=folder", f"dataset.root={images}")
    assert data_title(cfg, build(cfg.dataset)) == f"folder ({images})"
    cfg = compose_cfg("dataset=v2")  # a recipe over the source group: the group names it
    assert data_title(cfg, build(cfg.dataset)) == "v2 (embedded)"
    cfg = compose_cfg()  # digits: its own source, not the source group's
    assert data_title(cfg, build(cfg.dataset)) == "digits (uci_digits)"


# -- the audit text states the number the grids show -------------------------------------------------
def test_the_audit_text_states_how_many_items_are_shown(run, tmp_path):
    res = build_report(
        [run], out=tmp_path / "rep", metrics=["test/acc_top1"]
    )  # --audit-n 100, selections of 20
    md = res.markdown.read_text()
    assert "the 20 highest-scored selected items (all of a selection smaller than --audit-n=100)" in md
    assert "100 highest-scored" not in md
    res = build_report([run], out=tmp_path / "rep5", metrics=["test/acc_top1"], audit_n=5)
    md = res.markdown.read_text()
    assert "the 5 highest-scored selected items, in rank order" in md and "smaller than" not in md
