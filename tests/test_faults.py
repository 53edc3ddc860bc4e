"""Run directories under faults and refusals: nothing a refused command touches, one writer, and
every user mistake one line with exit status 2 before any work (issue 9)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.errors import UserError
from src.records import RoundRecord, lock_run_dir
from src.tracking import CsvTracker
from tests.conftest import REPO, read_jsonl, run_cli

TINY = ["debug=fast", "selection.rounds=2"]


def snapshot(root):
    """Every file under ``root`` with the hash of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.slow
def test_refused_commands_leave_every_file_of_the_run_directory_unchanged(tmp_path):
    run_dir = tmp_path / "run"
    run_cli(*TINY, f"hydra.run.dir={run_dir}")
    before = snapshot(run_dir)
    assert ".hydra/config.yaml" in before and "rounds.jsonl" in before
    # a second command into the same directory without resume=true
    line = one_error_line(run_cli(*TINY, "selection.pivot=0.5", f"hydra.run.dir={run_dir}", check=False))
    assert str(run_dir) in line
    # a resume with changed settings
    line = one_error_line(
        run_cli(*TINY, "selection.pivot=0.5", "resume=true", f"hydra.run.dir={run_dir}", check=False)
    )
    assert "selection.pivot" in line
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_a_refused_multirun_leaves_the_sweep_directory_unchanged(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("--multirun", *TINY, "seed=1", f"hydra.sweep.dir={sweep}")
    before = snapshot(sweep)
    assert "multirun.yaml" in before and any(k.endswith("rounds.jsonl") for k in before)
    # the same sweep with changed settings and without resume=true: its one job is refused
    line = one_error_line(
        run_cli(
            "--multirun", *TINY, "seed=1", "model.init.init_seed=7", f"hydra.sweep.dir={sweep}", check=False
        )
    )
    assert str(sweep) in line
    assert snapshot(sweep) == before


@pytest.mark.slow
def test_a_second_writer_stops_at_once_naming_the_directory_and_the_other_process(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with lock_run_dir(run_dir):
        proc = run_cli(*TINY, f"hydra.run.dir={run_dir}", check=False)
    line = one_error_line(proc)
    assert str(run_dir) in line and f"pid {os.getpid()}" in line
    assert not (run_dir / "rounds.jsonl").exists()


def test_the_lock_of_a_killed_process_is_released_by_the_kernel(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from src.records import lock_run_dir\n"
            f"held = lock_run_dir({str(tmp_path)!r}); held.__enter__(); print('locked', flush=True); time.sleep(60)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match=rf"{tmp_path}.*pid {holder.pid}"):
        with lock_run_dir(tmp_path):
            pass
    holder.kill()
    holder.wait()
    with lock_run_dir(tmp_path):  # a kill -9 never blocks a resume
        fd = os.open(tmp_path / ".lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)


def record(r: int) -> RoundRecord:
    return RoundRecord(
        round=r,
        n_labelled=10 * (r + 1),
        n_selected=10,
        selection="base" if r == 0 else "margin",
        selected_ids=list(range(10 * r, 10 * r + 10)),
        selected_scores=[],
        epochs=1,
        best_epoch=0,
        metrics={"test/acc": 0.1 * r, "val/acc": 0.2 * r},
    )


def test_csv_history_is_rebuilt_from_the_committed_rounds_on_start(tmp_path):
    # a first process logged rounds 0-1 and was killed after committing round 2 (before logging it)
    first = CsvTracker()
    first.start({}, tmp_path, "id")
    first.log_round(record(0))
    first.log_round(record(1))
    resumed = CsvTracker()
    resumed.start({}, tmp_path, "id")
    resumed.replay([record(0), record(1), record(2)])
    resumed.log_round(record(3))
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert [row.split(",")[header.index("al/round")] for row in rows[1:]] == ["0", "1", "2", "3"]


def test_a_folder_dataset_with_one_class_names_the_root_and_the_count(tmp_path):
    from PIL import Image

    from src.data.folder import ImageFolderSource

    (tmp_path / "cats").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cats" / "a.png")
    with pytest.raises(UserError, match=rf"{tmp_path}: 1 class found \(cats\)"):
        ImageFolderSource(tmp_path).scan()


def test_an_output_directory_under_a_file_is_one_line(tmp_path):
    from src.config.overrides import check_output_dirs

    (tmp_path / "file").write_text("x")
    message = check_output_dirs([f"hydra.run.dir={tmp_path / 'file' / 'run'}"])
    assert message and f"{tmp_path / 'file'} is not a directory" in message
    assert check_output_dirs([f"hydra.run.dir={tmp_path / 'new' / 'run'}"]) is None


def test_a_mistyped_key_in_process_names_the_nearest_key():
    from src.config.overrides import check_keys

    assert (
        check_keys(["debug=fast", "selection.pivto=0.5"])
        == "selection.pivto: no such config key; did you mean selection.pivot?"
    )
    assert (
        check_keys(
            ["task=detection", "scorer=margin,entropy", "selection.pivot=0.5", "model.init.checkpoint=null"]
        )
        is None
    )


# One run directory killed at every point in turn: each resume continues what the last kill left.
# (setup: before round 0; fit and pool: inside round 0; after_state: round 0's commit; half_record:
# round 1's; temp_unrenamed: round 2's state file; after_record: round 2 committed; before_summary:
# all rounds done.) Chained so the matrix costs 10 CLI runs, not 17.
KILL_CHAIN = [
    "setup",
    "fit",
    "pool",
    "after_state",
    "half_record",
    "temp_unrenamed",
    "after_record",
    "before_summary",
]
FAULT_RUN = ["debug=fast", "selection.rounds=5", "logger=csv"]
# the W&B kill matrix (test_wandb_history_...): tracker_epochs is reached by the W&B tracker only
WANDB_KILL_CHAIN = ["after_record:2", "tracker_epochs:1", "half_record:2", "before_summary"]


def run_with_fault(point: str | None, *args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, env={"AL_SELECT_FAULT": point} if point else None, timeout=600, check=False)


@pytest.mark.slow
def test_sigkill_at_every_point_then_resume_gives_the_uninterrupted_records_and_csv_history(tmp_path):
    from src.records import FAULT_POINTS
    from tests.conftest import without_timings

    # every kill point is tested, here or in the W&B matrix
    assert set(KILL_CHAIN) | {p.split(":")[0] for p in WANDB_KILL_CHAIN} == set(FAULT_POINTS)
    reference = tmp_path / "reference"
    run_cli(*FAULT_RUN, f"hydra.run.dir={reference}")
    killed = tmp_path / "killed"
    for i, point in enumerate(KILL_CHAIN):
        resume = ["resume=true"] if i else []
        proc = run_with_fault(point, *FAULT_RUN, *resume, f"hydra.run.dir={killed}")
        assert proc.returncode == -9, f"{point}: rc {proc.returncode}\n{proc.stderr[-3000:]}"
    assert not (killed / "summary.json").exists()
    run_cli(*FAULT_RUN, "resume=true", f"hydra.run.dir={killed}")

    expected = read_jsonl(reference / "rounds.jsonl")
    assert [r["round"] for r in expected] == [0, 1, 2, 3, 4]
    assert without_timings(read_jsonl(killed / "rounds.jsonl")) == without_timings(expected)
    import csv

    with open(killed / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(row["al/round"]) for row in rows] == [0, 1, 2, 3, 4]
    assert [float(row["test/acc_top1"]) for row in rows] == [r["test/acc_top1"] for r in expected]
    summary_keys = set(__import__("json").loads((reference / "summary.json").read_text()))
    assert set(__import__("json").loads((killed / "summary.json").read_text())) == summary_keys


@pytest.mark.slow
def test_wandb_history_after_kills_and_resumes_holds_every_round_once_in_order(tmp_path):
    """The W&B run as `wandb sync` of its offline folders assembles it: their histories in folder order."""
    import json

    from src.tracking.offline import read_offline_run, wait_until_finished

    run = ["debug=fast", "selection.rounds=5", "logger=wandb", f"hydra.run.dir={tmp_path}"]
    # killed right after committing round 1 (before logging it), between round 2's epoch rows and its
    # round row, inside round 3's record, before the summary
    for i, point in enumerate(WANDB_KILL_CHAIN):
        proc = run_with_fault(point, *run, *(["resume=true"] if i else []))
        assert proc.returncode == -9, f"{point}: rc {proc.returncode}\n{proc.stderr[-3000:]}"
    run_cli(*run, "resume=true")
    folders = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(folders) == 5
    assert wait_until_finished(folders[-1])
    run_cli(*run, "resume=true")  # a finished job: no new, empty offline run
    assert sorted((tmp_path / "wandb").glob("offline-run-*")) == folders

    runs = [read_offline_run(f) for f in folders]
    rounds = [int(row["al/round"]) for r in runs for row in r.history if "al/round" in row]
    assert rounds == [0, 1, 2, 3, 4]
    records = read_jsonl(tmp_path / "rounds.jsonl")
    n_labelled = [row["al/n_labelled"] for r in runs for row in r.history if "al/round" in row]
    assert n_labelled == [rec["n_labelled"] for rec in records]
    # every round's fit, epoch by epoch, once and in order, with the recorded values
    epochs = [
        (row["fit/round"], row["fit/epoch"], row[f"fit/round_{row['fit/round']:03d}/val/loss"])
        for r in runs
        for row in r.history
        if "fit/round" in row
    ]
    assert epochs == [
        (rec["round"], e, loss)
        for rec in records
        for e, loss in zip(rec["history"]["epoch"], rec["history"]["val/loss"])
    ]
    assert runs[-1].config["selection"]["rounds"] == 5
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {k: runs[-1].summary[k] for k in summary} == pytest.approx(summary)


# ---- a table of bad inputs through the real CLI: exit status 2, one line naming what is wrong, no file changed ----
#
# Each case is a command line run as `python -m src.run ...` in its own process (see run_cli).


def _tree(root, classes: dict[str, int]) -> None:
    from PIL import Image

    root.mkdir(parents=True)
    for name, n in classes.items():
        (root / name).mkdir()
        for i in range(n):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / name / f"{i}.png")


def _folder(classes: dict[str, int], root="tree"):
    def make(d):
        _tree(d / "tree", classes)
        return ["dataset=folder", f"dataset.root={d / root}"]

    return make


def _coco(text: str):
    def make(d):
        from PIL import Image

        (d / "images").mkdir()
        Image.new("RGB", (8, 8)).save(d / "outside.png")
        (d / "ann.json").write_text(text)
        return [
            "task=detection",
            "baseline=none",
            "dataset=coco",
            f"dataset.source.annotations={d / 'ann.json'}",
            f"dataset.source.images={d / 'images'}",
        ]

    return make


def _coco_images(file_name: str) -> str:
    import json

    return json.dumps(
        {
            "images": [{"id": 1, "file_name": file_name, "width": 8, "height": 8}],
            "annotations": [],
            "categories": [{"id": 1, "name": "cat"}],
        }
    )


def _checkpoint(write):
    def make(d):
        write(d / "w.pt")
        return [f"model.init.checkpoint={d / 'w.pt'}"]

    return make


def _pickled_object(path):
    import collections

    import torch

    torch.save({"weights": collections.OrderedDict(a=slice(1))}, path)


def _line(r):
    import json

    return json.dumps(record(r).to_json(), separators=(",", ":")) + "\n"


def _run_dir(records_text: str, state: dict | str | None):
    def make(d):
        import json

        (d / "run" / ".hydra").mkdir(parents=True)
        (d / "run" / ".hydra" / "config.yaml").write_text("seed: 1\n")
        (d / "run" / "rounds.jsonl").write_text(records_text)
        (d / "run" / ".lock").touch()  # as every run directory has it from its first run
        if state is not None:
            (d / "run" / "state.json").write_text(state if isinstance(state, str) else json.dumps(state))
        return ["resume=true"]

    return make


def _args(*argv):
    return lambda d: list(argv)


def _under_a_file(d):
    (d / "file").write_text("x")
    return [f"hydra.run.dir={d / 'file' / 'run'}"]


BAD_INPUTS = [
    # config values
    ("pivot above 1", _args("selection.pivot=1.5"), "selection.pivot=1.5 is outside [0, 1]"),
    ("pivot below 0", _args("selection.pivot=-0.1"), "selection.pivot=-0.1"),
    ("negative base set", _args("selection.base_size=-1"), "selection.base_size=-1"),
    (
        "base set above pool",
        _args("selection.base_size=500"),
        "selection.base_size=500 is larger than the pool (120 items)",
    ),
    ("zero budget", _args("selection.budget=0"), "selection.budget=0 must be a positive integer"),
    ("negative budget in list", _args("selection.budget=[10,-5]"), "selection.budget=[10, -5]"),
    (
        "budget beyond the pool",
        _args("selection.rounds=9"),
        "selection.budget: the rounds select 180 items in total but the pool has only 120",
    ),
    ("zero rounds", _args("selection.rounds=0"), "selection.rounds=0"),
    ("unknown mode", _args("selection.mode=whatever"), "selection.mode='whatever'"),
    (
        "negative patience",
        _args("callbacks.early_stopping.patience=-1"),
        "callbacks.early_stopping.patience=-1 must be an integer >= 0",
    ),
    ("zero epochs", _args("trainer.max_epochs=0"), "trainer.max_epochs=0"),
    ("zero steps per epoch", _args("fit.steps_per_epoch=0"), "fit.steps_per_epoch=0"),
    ("zero batch size", _args("dataset.batch_size=0"), "dataset.batch_size=0"),
    ("negative pool size", _args("dataset.sizes.pool=-3"), "dataset.sizes.pool=-3"),
    ("progress not a choice", _args("progress=maybe"), "progress='maybe'"),
    ("unknown scorer name", _args("scorer.name=bogus"), "scorer.name='bogus'"),
    (
        "missing checkpoint",
        _args("model.init.checkpoint=/nonexistent/w.pt"),
        "model.init.checkpoint=/nonexistent/w.pt",
    ),
    # the command line itself
    (
        "typo key",
        _args("selection.pivto=0.5"),
        "selection.pivto: no such config key; did you mean selection.pivot?",
    ),
    ("typo nested key", _args("trainer.max_epoch=3"), "did you mean trainer.max_epochs?"),
    (
        "unknown scorer option",
        _args("scorer=entropie"),
        "scorer='entropie' is not a known option of the 'scorer' config group",
    ),
    ("unknown dataset option", _args("dataset=digitz"), "dataset='digitz'"),
    ("output dir under a file", _under_a_file, "is not a directory"),
    ("output dir not writable", _args("hydra.run.dir=/sys/al-select-run"), "/sys is not writable"),
    ("resume with nothing to resume", _args("resume=true"), "holds no run to resume"),
    # data trees
    ("one-class folder", _folder({"cats": 2}), "1 class found (cats)"),
    ("folder without class folders", _folder({}), "has no class folders"),
    ("missing folder root", _folder({}, root="missing"), "not found at"),
    ("class folders without images", _folder({"a": 0, "b": 0}), "holds no images"),
    # annotation files
    ("coco not json", _coco("{not json"), "ann.json:1:2: not valid JSON"),
    (
        "coco image missing",
        _coco(_coco_images("x.png")),
        "names image 'x.png', which does not exist under the image root",
    ),
    ("coco path leaving the root", _coco(_coco_images("../outside.png")), "../outside.png"),
    ("coco absolute path", _coco(_coco_images("/etc/passwd")), "/etc/passwd"),
    # weight files
    (
        "checkpoint garbage",
        _checkpoint(lambda p: p.write_bytes(b"garbage")),
        "not a readable torch weights file",
    ),
    ("checkpoint with a pickled object", _checkpoint(_pickled_object), "not a readable torch weights file"),
    # run directories
    ("records without state", _run_dir(_line(0), None), "state.json is missing"),
    ("state ahead of records", _run_dir(_line(0), {"completed_rounds": 3}), "says 3 rounds are complete but"),
    (
        "doubled rounds.jsonl",
        _run_dir(_line(0) + _line(1) + _line(0) + _line(1), {"completed_rounds": 2}),
        "holds 4",
    ),
    ("state not JSON", _run_dir(_line(0), "{half"), "state.json: not a JSON state file"),
    ("record not JSON", _run_dir("{oops\n", {"completed_rounds": 1}), "rounds.jsonl:1: not a JSON line"),
    (
        "record without fields",
        _run_dir('{"round": 0}\n', {"completed_rounds": 1}),
        "a round record without n_labelled",
    ),
]


def bad_input_outcome(case_dir: Path, name: str) -> dict:
    """One case's command: its exit status and stderr, with the case folder's files before and after
    (each case in its own test, so the test workers share the cases out)."""
    make_case = next(c[1] for c in BAD_INPUTS if c[0] == name)
    argv = make_case(case_dir)
    if not any(a.startswith("hydra.run.dir=") for a in argv):
        argv.append(f"hydra.run.dir={case_dir / 'run'}")
    before = snapshot(case_dir)
    proc = run_cli("debug=fast", "logger=none", *argv, check=False)
    return {
        "returncode": proc.returncode,
        "stderr": proc.stderr,
        "before": before,
        "after": snapshot(case_dir),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name,needle", [(c[0], c[2]) for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_naming_it_and_changes_no_file(tmp_path, name, needle):
    assert_refused(bad_input_outcome(tmp_path, name), needle)


def assert_refused(outcome: dict, needle: str) -> None:
    """A refused command's outcome (returncode, stderr, the case folder's files before and after):
    exit status 2, one stderr line, an ``error: `` naming ``needle``, every file and folder as before."""
    lines = [line for line in outcome["stderr"].splitlines() if line.strip()]
    assert outcome["returncode"] == 2, outcome["stderr"][-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome["stderr"][-3000:]
    assert needle in lines[0]
    assert outcome["after"] == outcome["before"]
