"""What the entry points take from a user, checked before any work (issue 18): every epoch and step
count, every output location, every record of a run directory that is resumed (finished or not),
every override's syntax; a refused command leaves no folder of its own behind; the console counts
rounds as the records do; a joblib sweep's workers end with their launcher.

The command lines run through the real CLIs (``python -m src.run`` / ``src.pretrain`` / ``src.select``)
in a case folder of their own as the working directory, so that an output directory Hydra derives
(``outputs/<task>/<run name>/<time>``, ``multirun/<time>``) lands in it. Each is checked for exit
status 2, one line ``error: ...`` naming the culprit, and the case folder as it was: every file's
bytes and every folder, so that no directory is left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.errors import UserError
from src.records import LOCK_FILE, RoundRecord, lock_run_dir
from tests.conftest import REPO, cli_env, read_jsonl, run_cli, run_module
from tests.test_faults import assert_refused


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the hash of its bytes, and every folder."""
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


# ---- the command lines ------------------------------------------------------------------------------

RUN = ("src.run", ["debug=fast", "logger=none"])
PRETRAIN = ("src.pretrain", ["task=detection"])  # each refused before any data is built
SELECT = ("src.select", [])


def _args(*argv):
    return lambda d: list(argv)


def _file(d: Path) -> Path:
    (d / "file").write_text("x")
    return d / "file"


def _record(r: int, **changes) -> dict:
    """Round ``r`` of a plausible run (10 ids selected per round), as its rounds.jsonl object."""
    record = RoundRecord(
        round=r,
        n_labelled=10 * (r + 1),
        n_selected=10,
        selection="base" if r == 0 else "entropy",
        selected_ids=list(range(10 * r, 10 * r + 10)),
        selected_scores=[] if r == 0 else [0.5] * 10,
        epochs=3,
        best_epoch=1,
        metrics={"test/acc_top1": 0.1 * (r + 1), "val/loss": 1.0 - 0.1 * r},
        history={"epoch": [0, 1, 2], "val/loss": [1.2, 1.0, 1.1]},
    )
    return {**record.to_json(), **changes}


def _run_dir(
    records: list[dict], state_changes: dict | None = None, finished: bool = True, summary: str | None = None
):
    """A run directory of ``len(records)`` committed rounds whose files agree with each other (a state
    after the last record, its last_record, and with ``finished`` a summary), then changed by hand;
    resumed with ``resume=true``."""

    def make(d: Path) -> list[str]:
        run = d / "run"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text("seed: 1\n")
        (run / LOCK_FILE).touch()  # as every run directory has it from its first run
        (run / "rounds.jsonl").write_text(
            "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        )
        last = records[-1] if records else None
        state = {
            "completed_rounds": len(records),
            "base_ids": [],
            "labelled_ids": list(range(last["n_labelled"] if isinstance(last, dict) else 0)),
            "pending": None,
            "fingerprint": {},
            "last_record": last,
            **(state_changes or {}),
        }
        (run / "state.json").write_text(json.dumps(state, indent=1))
        if finished:
            (run / "summary.json").write_text(
                summary
                if summary is not None
                else json.dumps({"al/rounds": len(records), "al/n_labelled": 20})
            )
        return ["resume=true", f"hydra.run.dir={run}"]

    return make


def _changed(r: int, **changes):
    """Records 0 and 1 of a run with round ``r``'s record changed by hand (the state keeps the original)."""
    records = [_record(0), _record(1)]
    records[r] = {**records[r], **changes}
    state = {"last_record": _record(1)}
    return records, state


def _with_folder_as_baseline_file(d: Path) -> list[str]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from src.models.named_baselines import baseline_path

    args = [*PRETRAIN[1], f"baseline.dir={d / 'b'}"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        path = baseline_path(compose(config_name="config", overrides=args))
    GlobalHydra.instance().clear()
    path.mkdir(parents=True)  # where the weights file of these settings goes
    return args[len(PRETRAIN[1]) :]


def _empty_dir(d: Path) -> list[str]:
    (d / "empty").mkdir()
    return ["resume=true", f"hydra.run.dir={d / 'empty'}"]


CASES = [
    # 4. epoch and step counts, one check for both entry points
    ("pretrain: negative baseline epochs", PRETRAIN, _args("baseline.epochs=-1"), "baseline.epochs=-1"),
    (
        "pretrain: zero baseline epochs",
        PRETRAIN,
        _args("baseline=real", "baseline.epochs=0"),
        "baseline.epochs=0",
    ),
    ("pretrain: negative max epochs", PRETRAIN, _args("trainer.max_epochs=-1"), "trainer.max_epochs=-1"),
    (
        "pretrain: zero log interval",
        PRETRAIN,
        _args("trainer.log_every_n_steps=0"),
        "trainer.log_every_n_steps=0",
    ),
    (
        "pretrain: empty baseline pool",
        PRETRAIN,
        _args("baseline.dataset.sizes.pool=0"),
        "baseline.dataset.sizes.pool=0",
    ),
    (
        "run: baseline to make with negative epochs",
        RUN,
        _args("task=detection", "baseline.epochs=-1"),
        "baseline.epochs=-1",
    ),
    ("run: negative max epochs", RUN, _args("trainer.max_epochs=-1"), "trainer.max_epochs=-1"),
    ("run: negative min epochs", RUN, _args("trainer.min_epochs=-1"), "trainer.min_epochs=-1"),
    (
        "run: min epochs above max",
        RUN,
        _args("trainer.min_epochs=5"),
        "trainer.min_epochs=5 is above trainer.max_epochs=3",
    ),
    ("run: negative fit epochs", RUN, _args("fit.epochs=-2"), "fit.epochs=-2"),
    ("run: negative steps per epoch", RUN, _args("fit.steps_per_epoch=-4"), "fit.steps_per_epoch=-4"),
    ("run: zero max steps", RUN, _args("+trainer.max_steps=0"), "trainer.max_steps=0"),
    (
        "run: no patience",
        RUN,
        _args("callbacks.early_stopping.patience=null"),
        "callbacks.early_stopping.patience=None",
    ),
    (
        "run: zero training batches",
        RUN,
        _args("+trainer.limit_train_batches=0"),
        "trainer.limit_train_batches=0",
    ),
    # 5. output locations, tried before any work
    (
        "pretrain: baseline dir is a file",
        PRETRAIN,
        lambda d: [f"baseline.dir={_file(d)}"],
        "is not a directory",
    ),
    (
        "pretrain: baseline dir under a file",
        PRETRAIN,
        lambda d: [f"baseline.dir={_file(d) / 'sub'}"],
        "is not a directory",
    ),
    (
        "pretrain: baseline dir read-only",
        PRETRAIN,
        _args("baseline.dir=/sys/al-select-baselines"),
        "/sys is not writable",
    ),
    (
        "pretrain: baseline file is a folder",
        PRETRAIN,
        _with_folder_as_baseline_file,
        ".pt exists and is not a regular file",
    ),
    (
        "run: baseline to make into a file",
        RUN,
        lambda d: ["task=detection", f"baseline.dir={_file(d)}"],
        "is not a directory",
    ),
    (
        "run: output root is a file",
        RUN,
        lambda d: [f"paths.output_dir={_file(d)}"],
        "file is not a directory",
    ),
    (
        "run: sweep root is a file",
        RUN,
        lambda d: ["--multirun", f"paths.multirun_dir={_file(d)}"],
        "file is not a directory",
    ),
    # 9. the records of a resumed run, finished or not
    ("finished run: round not an integer", RUN, _run_dir(*_changed(1, round="two")), "round is 'two'"),
    (
        "unfinished run: round not an integer",
        RUN,
        _run_dir(*_changed(1, round="two"), finished=False),
        "round is 'two'",
    ),
    ("rounds out of order", RUN, _run_dir([_record(0), _record(2)]), "round 2 where round 1 belongs"),
    (
        "selected id not an integer",
        RUN,
        _run_dir(*_changed(0, selected_ids=["0", *range(1, 10)])),
        "selected_ids is",
    ),
    (
        "metric not a number",
        RUN,
        _run_dir(*_changed(1, **{"test/acc_top1": "high"})),
        "metric test/acc_top1 is 'high'",
    ),
    ("boolean epochs", RUN, _run_dir(*_changed(0, epochs=True)), "epochs is True"),
    (
        "history not numbers",
        RUN,
        _run_dir(*_changed(1, history={"epoch": [0], "val/loss": ["x"]})),
        "history is not an object of lists of numbers",
    ),
    (
        "selected count disagrees",
        RUN,
        _run_dir(*_changed(0, n_selected=3)),
        "n_selected is 3 but selected_ids holds 10",
    ),
    (
        "state's last record differs",
        RUN,
        _run_dir(*_changed(1, **{"test/acc_top1": 0.99})),
        "its last_record differs from round 1",
    ),
    (
        "state's labelled ids not a list",
        RUN,
        _run_dir([_record(0), _record(1)], {"labelled_ids": "all"}),
        "labelled_ids is not a list of integer ids",
    ),
    (
        "state's labelled count disagrees",
        RUN,
        _run_dir([_record(0), _record(1)], {"labelled_ids": [1, 2, 3]}),
        "3 labelled ids but round 1 had 20 labelled",
    ),
    (
        "state's count a string",
        RUN,
        _run_dir([_record(0), _record(1)], {"completed_rounds": "2"}),
        "no integer completed_rounds",
    ),
    (
        "summary not JSON",
        RUN,
        _run_dir([_record(0), _record(1)], summary="{"),
        "summary.json: not a JSON summary",
    ),
    (
        "summary of other rounds",
        RUN,
        _run_dir([_record(0), _record(1)], summary='{"al/rounds": 5}'),
        "counts 5 rounds but 2 are committed",
    ),
    # 10. an override Hydra cannot parse: one line naming it, for every entry point
    (
        "run: unclosed list",
        RUN,
        _args("selection.budget=[1,2"),
        "'selection.budget=[1,2' is not a valid override",
    ),
    ("run: no value", RUN, _args("selection.pivot"), "'selection.pivot' is not a valid override"),
    ("run: sweep unclosed", RUN, _args("--multirun", "seed=1,(2"), "'seed=1,(2' is not a valid override"),
    (
        "pretrain: unclosed list",
        PRETRAIN,
        _args("baseline.epochs=[1"),
        "'baseline.epochs=[1' is not a valid override",
    ),
    ("select: unclosed list", SELECT, _args("budget=[1,2"), "'budget=[1,2' is not a valid override"),
    # 11. no folder of a refused command stays (the cases above run with the case folder as the working
    # directory, so Hydra's outputs/... and multirun/... folders land there too)
    (
        "new run dir three levels down",
        RUN,
        lambda d: ["selection.pivot=1.5", f"hydra.run.dir={d / 'a' / 'b' / 'c'}"],
        "selection.pivot=1.5",
    ),
    (
        "new sweep dir three levels down",
        RUN,
        lambda d: ["--multirun", "selection.pivot=1.5", f"hydra.sweep.dir={d / 'a' / 'b' / 'c'}"],
        "selection.pivot=1.5",
    ),
    (
        "sweep under the working directory",
        RUN,
        _args("--multirun", "selection.pivot=1.5,0.5"),
        "selection.pivot=1.5",
    ),
    ("refused under the lock in a new run dir", RUN, _args("resume=true"), "holds no run to resume"),
    ("refused under the lock in an existing empty dir", RUN, _empty_dir, "holds no run to resume"),
]


# a refusal takes seconds; a command still running after this was not refused (e.g. training forever)
CASE_TIMEOUT_S = 120


def refused_outcome(case_dir: Path, name: str) -> dict:
    """One case's command run with the case folder as its working directory: its exit status and
    stderr, with the folder before and after. (Each case runs in its own test, so the test workers
    share the cases out instead of one worker running them all while the other waits.)"""
    (module, base), make_case = next((c[1], c[2]) for c in CASES if c[0] == name)
    argv = make_case(case_dir)
    flags = [a for a in argv if a.startswith("--")]  # Hydra takes its flags before the overrides
    before = snapshot(case_dir)
    try:
        proc = run_module(
            module, *flags, *base, *[a for a in argv if a not in flags], cwd=case_dir, timeout=CASE_TIMEOUT_S
        )
        returncode, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as late:  # still working: it was not refused
        returncode, stderr = "timed out", late.stderr or ""
    return {"returncode": returncode, "stderr": stderr, "before": before, "after": snapshot(case_dir)}


@pytest.mark.slow
@pytest.mark.parametrize("name,needle", [(c[0], c[3]) for c in CASES], ids=[c[0] for c in CASES])
def test_refused_with_one_line_naming_it_and_nothing_left_behind(tmp_path, name, needle):
    # snapshot: every file's bytes, and no new folder
    assert_refused(refused_outcome(tmp_path, name), needle)


# ---- the pieces, without the CLI -----------------------------------------------------------------------


def test_the_override_check_names_the_first_unparsable_override():
    from src.config.overrides import check_override_syntax

    assert (
        check_override_syntax(
            ["--multirun", "seed=1,2", "scorer=margin", "+x.y=[1,2]", "~callbacks", "--cfg", "job"]
        )
        is None
    )
    message = check_override_syntax(["seed=1", "selection.budget=[1,2", "a=(("])
    assert message.startswith("'selection.budget=[1,2' is not a valid override (") and "\n" not in message


@pytest.mark.parametrize(
    "override,needle",
    [
        ("trainer.max_epochs=-1", "trainer.max_epochs=-1 must be an integer >= 1"),
        ("baseline.epochs=-1", "baseline.epochs=-1 must be an integer >= 1"),
        (
            "callbacks.early_stopping.patience=-1",
            "callbacks.early_stopping.patience=-1 must be an integer >= 0",
        ),
        ("trainer.num_sanity_val_steps=-2", "trainer.num_sanity_val_steps=-2"),
        ("+trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0"),
    ],
)
def test_run_and_pretrain_share_one_check_of_the_counts(compose_cfg, override, needle):
    from src.validate import check_pretraining, validate

    cfg = compose_cfg("task=detection", override)
    for check in (validate, check_pretraining):
        with pytest.raises(UserError, match=needle.replace("+", r"\+")):
            check(cfg)


def test_counts_that_mean_something_at_zero_or_minus_one_pass(compose_cfg):
    from src.validate import check_pretraining

    check_pretraining(
        compose_cfg(
            "trainer.min_epochs=0",
            "trainer.num_sanity_val_steps=-1",
            "+trainer.max_steps=-1",
            "callbacks.early_stopping.patience=0",
            "+trainer.limit_val_batches=0",
            "+trainer.limit_train_batches=0.5",
            "baseline=untrained",
        )
    )


def test_a_lock_file_a_refused_command_made_goes_and_one_it_found_stays(tmp_path):
    with pytest.raises(UserError):
        with lock_run_dir(tmp_path):
            assert (tmp_path / LOCK_FILE).exists()
            raise UserError("refused")
    assert not (tmp_path / LOCK_FILE).exists()
    (tmp_path / LOCK_FILE).touch()
    with pytest.raises(UserError):
        with lock_run_dir(tmp_path):
            raise UserError("refused")
    assert (tmp_path / LOCK_FILE).exists()
    with lock_run_dir(tmp_path / ""):  # an accepted run keeps its lock file
        pass
    assert (tmp_path / LOCK_FILE).exists()


def test_only_the_empty_folders_this_process_made_are_removed(monkeypatch, tmp_path):
    from src import launch

    monkeypatch.setattr(launch, "_noted_dirs", {})
    (tmp_path / "old").mkdir()
    launch.note_new_dirs(tmp_path / "old" / "a" / "b")
    launch.note_new_dirs(tmp_path / "old")
    launch.note_new_dirs(tmp_path / "kept" / "x")
    assert launch.made_by_this_process(tmp_path / "old" / "a" / "b") is True
    assert launch.made_by_this_process(tmp_path / "old" / "a" / "b" / "job") is True
    assert launch.made_by_this_process(tmp_path / "old") is False
    assert launch.made_by_this_process(tmp_path / "elsewhere") is None
    (tmp_path / "old" / "a" / "b").mkdir(parents=True)
    (tmp_path / "kept" / "x").mkdir(parents=True)
    (tmp_path / "kept" / "note.txt").write_text("someone else's")
    launch.remove_new_dirs()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "kept",
        "kept/note.txt",
        "old",
    ]


def test_records_with_fields_of_the_wrong_type_are_refused():
    good = _record(1)
    assert RoundRecord.from_json(good).to_json() == good
    for changes, needle in [
        ({"round": "two"}, "round is 'two'"),
        ({"n_labelled": -1}, "n_labelled is -1"),
        ({"best_epoch": "x"}, "best_epoch is 'x'"),
        ({"selection": 3}, "selection is 3"),
        ({"selected_scores": [0.5] * 9}, "selected_scores holds 9 scores for 10"),
        ({"selected_predictions": [1]}, "selected_predictions is [1]"),
        ({"fit_seconds": "1s"}, "fit_seconds is '1s'"),
    ]:
        with pytest.raises(UserError, match="^" + re.escape(f"r:2: a round record whose {needle}")):
            RoundRecord.from_json({**good, **changes}, where="r:2")


# ---- run names and round numbers ---------------------------------------------------------------------


def test_a_prune_run_name_names_the_fraction_that_decides_the_count(compose_cfg):
    assert (
        compose_cfg("selection.mode=prune", "selection.fraction=0.5").run_name == "entropy-p0-f0.5-base0-s1"
    )
    assert compose_cfg("selection.mode=prune").run_name == "entropy-p0-b100-base0-s1"
    assert (
        compose_cfg("task=detection", "selection.mode=prune", "selection.fraction=0.25").run_name
        == "entropy-blsynthetic-p0-f0.25-base0-s1"
    )


@pytest.mark.slow
def test_a_resumed_run_counts_its_rounds_from_0_in_every_line(tmp_path):
    run = ["debug=fast", "selection.rounds=3", "logger=none", f"hydra.run.dir={tmp_path}"]
    killed = run_cli(*run, env={"AL_SELECT_FAULT": "after_record:2"}, check=False)  # round 1 committed
    assert killed.returncode == -9, killed.stderr[-3000:]
    run_cli(*run, "resume=true")
    log = (tmp_path / "run.log").read_text().splitlines()
    lines = [
        line.split(" - ", 1)[1].split(" | ")[0]
        for line in log
        if " - round " in line or " - resuming " in line
    ]
    assert lines == ["round 0 (1 of 3)", f"resuming {tmp_path} after round 1 (2 of 3)", "round 2 (3 of 3)"]
    assert [r["round"] for r in read_jsonl(tmp_path / "rounds.jsonl")] == [0, 1, 2]
    table = "\n".join(log)[("\n".join(log)).index("per-round results:") :].splitlines()
    assert [row.split()[0] for row in table[3:6]] == ["0", "1", "2"]


# ---- 14. a joblib sweep's workers end with their launcher ---------------------------------------------


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_the_workers_of_a_joblib_sweep_end_when_its_launcher_is_killed(tmp_path):
    sweep = tmp_path / "sweep"
    # four jobs of 2 x 20 epochs, two at a time: each takes longer than the test waits
    args = [
        "--multirun",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "debug=fast",
        "logger=none",
        "fit.epochs=20",
        "callbacks=none",
        "seed=1,2,3,4",
        f"hydra.sweep.dir={sweep}",
    ]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "src.run", *args],
        cwd=REPO,
        env={**cli_env(), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while (
            not list(sweep.glob("*/.hydra/config.yaml"))
            and launcher.poll() is None
            and time.time() < deadline
        ):
            time.sleep(0.05)
        assert list(sweep.glob("*/.hydra/config.yaml")), "no job started"
        started = sorted(p.name for p in sweep.iterdir() if p.is_dir())
        os.kill(launcher.pid, signal.SIGKILL)  # the launcher alone; its workers are on their own
        launcher.wait()
        deadline = time.time() + 20
        while _group_alive(launcher.pid) and time.time() < deadline:
            time.sleep(0.1)
        left = subprocess.run(
            ["ps", "-o", "pid,ppid,cmd", "-g", str(launcher.pid)], capture_output=True, text=True
        ).stdout
        assert not _group_alive(launcher.pid), f"processes of the sweep still running:\n{left}"
        time.sleep(1)
        jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
        # no further job was started: the two that were running when the launcher died, at most
        assert (
            set(started) <= set(jobs) and len(jobs) <= 2 and not any(j.startswith(("2_", "3_")) for j in jobs)
        )
        assert not any((sweep / job / "summary.json").exists() for job in jobs)
    finally:
        if _group_alive(launcher.pid):
            os.killpg(launcher.pid, signal.SIGKILL)
