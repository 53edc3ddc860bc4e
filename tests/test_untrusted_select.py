"""``python -m src.select`` on a saved model received from someone else: its ``model.json`` is data.

The recorded overrides may only choose options of the project's config groups (files under
``conf/``) and set plain values; no ``hydra.*`` (a search path composes YAML from anywhere),
no code keys, no resolver that reads this machine. Each refusal is one line, exit status 2,
before anything is built, with the run directory left as it was. Every output location is
tried before the work too. The resolver check is the one ``src.report`` applies
(``src.config.trust``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

from src.config import trust
from src.errors import UserError
from src.labelling.trained import save_trained_model
from tests.conftest import CONF, run_module
from tests.test_report_trust import _run_dir as report_run_dir

DIGITS = [str(d) for d in range(10)]
SECRET = "s3cr3t-untrusted-select"


# -- a received run directory ---------------------------------------------------------------------
def _evil_searchpath(root: Path, marker: Path) -> Path:
    """A config folder outside the project: ``model=evil`` is the small CNN whose scheduler node
    calls ``builtins.open(marker, "w")`` when Hydra instantiates the model."""
    folder = root / "evil"
    (folder / "model").mkdir(parents=True)
    small = (CONF / "model" / "small_cnn.yaml").read_text()
    assert "    scheduler: null\n" in small
    (folder / "model" / "evil.yaml").write_text(
        small.replace(
            "    scheduler: null\n",
            f"    scheduler:\n      _target_: builtins.open\n      file: {marker}\n      mode: w\n",
        )
    )
    return folder


def _received_run(root: Path, overrides: list[str]) -> Path:
    """A run directory as ``save_model=true`` leaves it (a real small CNN's weights, model.json with
    ``overrides``), plus one image to select from."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[])
    GlobalHydra.instance().clear()
    model = hydra.utils.instantiate(cfg.model.module, num_classes=10, in_channels=1)
    run = root / "run"
    run.mkdir(parents=True)
    save_trained_model(run, model, "classification", DIGITS, channels=1, overrides=overrides)
    (root / "pool").mkdir()
    Image.fromarray(np.zeros((18, 22, 3), np.uint8)).save(root / "pool" / "a.png")
    return run


def _contents(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _one_error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (
        proc.returncode,
        proc.stderr[-3000:],
    )
    return lines[0]


def test_the_attack_is_real_when_hydra_composes_the_overrides_unchecked(tmp_path):
    """What the refusals below stop: Hydra itself composes the outside YAML and instantiates its code."""
    marker = tmp_path / "MARKER"
    evil = _evil_searchpath(tmp_path, marker)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"hydra.searchpath=[file://{evil}]", "model=evil"])
    finally:
        GlobalHydra.instance().clear()
    hydra.utils.instantiate(cfg.model.module, num_classes=10, in_channels=1)
    assert marker.exists()


ATTACKS = {
    # name: (the recorded overrides, given the outside config folder; what the one line says)
    "searchpath": (
        lambda evil: [f"hydra.searchpath=[file://{evil}]", "model=evil"],
        "changes Hydra's own settings (hydra.searchpath)",
    ),
    "add searchpath": (
        lambda evil: [f"+hydra.searchpath=[file://{evil}]", "model=evil"],
        "changes Hydra's own settings (hydra.searchpath)",
    ),
    "force-add searchpath": (
        lambda evil: [f"++hydra.searchpath=[file://{evil}]", "model=evil"],
        "changes Hydra's own settings (hydra.searchpath)",
    ),
    "hydra group": (
        lambda evil: ["hydra/job_logging=disabled", "model=small_cnn"],
        "changes Hydra's own settings (hydra/job_logging)",
    ),
    "delete hydra": (lambda evil: ["~hydra", "model=small_cnn"], "changes Hydra's own settings (hydra)"),
    "outside option": (lambda evil: ["model=evil"], "'evil' is not an option of the 'model' config group"),
    "option as a path": (
        lambda evil: [f"model=../../{evil}/model/evil"],
        "is not an option of the 'model' config",
    ),
    "package": (lambda evil: ["model@hydra=small_cnn"], "places a config under another package (@)"),
    "target key": (
        lambda evil: ["model.module.scheduler._target_=builtins.open"],
        "names code to instantiate (_target_)",
    ),
    "target in a node": (
        lambda evil: ["model.module.scheduler={_target_: builtins.open, file: x, mode: w}"],
        "names code to instantiate (_target_)",
    ),
    # interpolations that bring nodes holding code into the model: only the composed config shows them
    "node with code": (
        lambda evil: ["model.module.scheduler=${optim}"],
        "composes to model.module.scheduler._partial_=True, which the project's conf files do not",
    ),
    "resolver making code": (
        lambda evil: [f"+model.module.net.extra=${{folder_sources:[{evil}],16,null,null,{evil}/cache,0}}"],
        "composes to model.module.net.extra[0]._target_='src.data.folder.ImageFolderSource'",
    ),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_overrides_that_leave_the_projects_conf_are_refused_in_one_line(tmp_path, attack):
    marker = tmp_path / "MARKER"
    evil = _evil_searchpath(tmp_path, marker)
    overrides, message = ATTACKS[attack]
    run = _received_run(tmp_path, overrides(evil))
    before, outside = _contents(run), _contents(evil)
    proc = run_module(
        "src.select", f"run_dir={run}", f"images={tmp_path / 'pool'}", "budget=1", f"out={tmp_path / 'out'}"
    )
    line = _one_error_line(proc)
    assert line.startswith(f"error: {run / 'model.json'}: ") and message in line, line
    assert not marker.exists()
    assert _contents(run) == before and not (run / "labelling.jsonl").exists()
    assert _contents(evil) == outside and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "value",
    [
        "${oc.env:AL_UNTRUSTED_SECRET}",
        r"$\{oc.env\:AL_UNTRUSTED_SECRET\}",  # Hydra unescapes it to the above
        "'${oc.${x}:AL_UNTRUSTED_SECRET}'",  # a resolver name built by interpolation
        "'x-${oc.select:nope,${oc.env:AL_UNTRUSTED_SECRET}}'",
    ],
)
def test_a_resolver_that_reads_this_machine_is_refused_in_one_line(tmp_path, value):
    run = _received_run(tmp_path, ["+x=env", f"model.module.net.name={value}"])
    before = _contents(run)
    proc = run_module(
        "src.select",
        f"run_dir={run}",
        f"images={tmp_path / 'pool'}",
        "budget=1",
        f"out={tmp_path / 'out'}",
        env={"AL_UNTRUSTED_SECRET": SECRET},
    )
    line = _one_error_line(proc)
    assert "model.module.net.name calls the resolver 'oc." in line and "allowed: " in line
    assert SECRET not in proc.stderr + proc.stdout
    assert _contents(run) == before and not (tmp_path / "out").exists()


def test_the_projects_own_choices_and_values_still_rebuild_the_model(tmp_path):
    run = _received_run(
        tmp_path,
        [
            "model=small_cnn",
            "optim=sgd",
            "optim.lr=0.01",
            "seed=3",
            "+x=1",
            "selection.pivot=0.5",
            "model.module.net.name=${slug:small_cnn}",
        ],
    )
    proc = run_module(
        "src.select", f"run_dir={run}", f"images={tmp_path / 'pool'}", "budget=1", f"out={tmp_path / 'out'}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "ranked.csv").is_file() and (run / "labelling.jsonl").is_file()


def test_the_report_refuses_a_resolver_name_built_by_interpolation(
    tmp_path, compose_cfg, capsys, monkeypatch
):
    """The report's check is the same one: before, its text search missed ``${oc.${x}:...}``."""
    from src.report import main

    monkeypatch.setenv("AL_UNTRUSTED_SECRET", SECRET)
    cfg = OmegaConf.to_container(compose_cfg("debug=fast"), resolve=True)
    cfg["x"] = "env"
    cfg["dataset"]["name"] = "${oc.${x}:AL_UNTRUSTED_SECRET}"
    run = report_run_dir(tmp_path, cfg)
    assert main([str(run), "--out", str(tmp_path / "report"), "--no-grids"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset.name calls the resolver 'oc.${x}'" in err[0] and SECRET not in err[0]
    assert not (tmp_path / "report").exists()


def test_the_report_and_src_select_share_one_resolver_check():
    import src.analysis.aggregate as aggregate
    import src.analysis.trust as report_trust

    assert aggregate.check_resolvers is trust.check_resolvers
    assert not hasattr(report_trust, "check_resolvers") and not hasattr(report_trust, "allowed_resolvers")


# -- output locations, tried before the work ----------------------------------------------------------
@pytest.fixture
def unloadable_run(tmp_path):
    """Weights that fit no model of the project: any error about them would mean the checks came too late."""
    run = tmp_path / "run"
    run.mkdir()
    save_trained_model(run, torch.nn.Linear(1, 10), "classification", DIGITS, channels=1, overrides=[])
    (tmp_path / "pool").mkdir()
    Image.fromarray(np.zeros((18, 22, 3), np.uint8)).save(tmp_path / "pool" / "a.png")
    return run


@pytest.mark.parametrize(
    "case, message",
    [
        ("out is a file", "out={out}: a file, not a folder; name a new or existing folder"),
        ("out under a file", "out={out}/sub: {out} is not a folder, so {out}/sub cannot be created"),
        (
            "out read-only",
            "out=/sys/al-untrusted-select: /sys is not writable; choose a folder you can write",
        ),
        ("ranked.csv a folder", "out={out}: {out}/ranked.csv is not a file; ranked.csv is written there"),
        ("tasks.xml a folder", "out={out}: {out}/tasks.xml is not a file; tasks.xml is written there"),
        (
            "audit a folder",
            "run_dir={run}: {run}/labelling.jsonl is not a file; the proposals are recorded in "
            "labelling.jsonl beside the model",
        ),
        ("keep: out read-only", "out=/sys/al-untrusted-select: /sys is not writable"),
        ("keep: out is a file", "out={out}: a file, not a folder"),
    ],
)
def test_an_output_location_that_cannot_be_written_is_one_line_before_the_work(
    unloadable_run, tmp_path, case, message
):
    run, out = unloadable_run, tmp_path / "out"
    args = [f"run_dir={run}", f"images={tmp_path / 'pool'}", "budget=1"]
    if case.startswith("keep"):
        (tmp_path / "tree" / "3").mkdir(parents=True)
        Image.fromarray(np.zeros((18, 22, 3), np.uint8)).save(tmp_path / "tree" / "3" / "a.png")
        args = [f"run_dir={run}", f"images={tmp_path / 'tree'}", "mode=keep", "scorer=loss"]
    if case.endswith("is a file") or case == "out under a file":
        out.write_text("keep me\n")
    elif case.endswith("a folder") and case != "audit a folder":
        (out / case.split()[0]).mkdir(parents=True)
    elif case == "audit a folder":
        (run / "labelling.jsonl").mkdir()
    if case.endswith("read-only"):
        out_arg = "/sys/al-untrusted-select"
    else:
        out_arg = f"{out}/sub" if case == "out under a file" else str(out)
    if case == "tasks.xml a folder":
        args.append("export=labelstudio")
    proc = run_module("src.select", *args, f"out={out_arg}")
    line = _one_error_line(proc)
    assert message.format(out=out, run=run) in line, line
    assert "does not fit" not in line
    if out.is_file():
        assert out.read_text() == "keep me\n"


# -- the shared checks, unit by unit ------------------------------------------------------------------
ACCEPTED = [
    # (override, is a group choice)
    ("debug=fast", True),
    ("model=small_cnn", True),
    ("+experiment=pivot", True),
    ("scale=null", True),
    ("~training", True),
    ("seed=3", False),
    ("selection.pivot=0.5", False),
    ("dataset.root=/data/_target_/x", False),  # a value that merely contains the text
    ("source.roots=[/a,/b]", False),
    ("+trainer.precision=bf16-mixed", False),
    ("model.module.net.name=${slug:a b}", False),  # the project's pure resolvers
    ("model.module.net.width=${oc.select:seed,32}", False),
    ("run_name='${fmt:${seed}}'", False),
    (r"run_name=\${oc.env:HOME}", False),  # escaped: OmegaConf keeps it as text
]

REFUSED = [
    # (override, what the one line says)
    ("hydra.searchpath=[file:///tmp/x]", "changes Hydra's own settings (hydra.searchpath)"),
    ("+hydra.searchpath=[file:///tmp/x]", "changes Hydra's own settings (hydra.searchpath)"),
    ("++hydra.searchpath=[file:///tmp/x]", "changes Hydra's own settings (hydra.searchpath)"),
    ("~hydra", "changes Hydra's own settings (hydra)"),
    ("hydra.run.dir=/tmp/x", "changes Hydra's own settings (hydra.run.dir)"),
    ("hydra/launcher=joblib", "changes Hydra's own settings (hydra/launcher)"),
    ("model=evil", "'evil' is not an option of the 'model' config group"),
    ("model=../../x", "'../../x' is not an option of the 'model' config group"),
    ("+model=/tmp/evil", "'/tmp/evil' is not an option of the 'model' config group"),
    ("model=${oc.env:X}", "is not an option of the 'model' config group"),
    ("dataset/base=detection_files", "dataset/base is not one of the project's config groups"),
    ("nogroup/sub=x", "nogroup/sub is not one of the project's config groups"),
    ("model@foo=small_cnn", "places a config under another package (@)"),
    ("model=small_cnn,resnet18", "is a sweep"),
    ("seed=range(1,3)", "is a sweep"),
    ("model.module._target_=os.system", "names code to instantiate (_target_)"),
    ("+model.module.net._partial_=true", "names code to instantiate (_partial_)"),
    ("model.module.optimizer={_target_: os.system, command: ls}", "names code to instantiate (_target_)"),
    ("x.y=[[{_args_: [1]}]]", "names code to instantiate (_args_)"),
    ("+x={a: {_recursive_: false}}", "names code to instantiate (_recursive_)"),
    ("+x={_convert_: all}", "names code to instantiate (_convert_)"),
    ("model.module.net.name=${oc.env:HOME}", "model.module.net.name calls the resolver 'oc.env'"),
    (r"model.module.net.name=$\{oc.env\:HOME\}", "calls the resolver 'oc.env'"),
    ("model.module.net.name='${oc.${x}:HOME}'", "calls the resolver 'oc.${x}'"),
    ("model.module.net.name='${${x}:HOME}'", "calls the resolver '${x}'"),
    ("x=[1,{b: ${oc.env:HOME}}]", "x[1].b calls the resolver 'oc.env'"),
    ("x='${oc.select:a,${oc.env:HOME}}'", "calls the resolver 'oc.env'"),
    ("x=${oc.decode:x}", "calls the resolver 'oc.decode'"),
    ("x=${oc.create:x}", "calls the resolver 'oc.create'"),
    ("x=${hydra:runtime.cwd}", "calls the resolver 'hydra'"),
    ("x=${run_dir:/,true}", "calls the resolver 'run_dir'"),  # the project's, but reads this machine
    ("x=${now:%Y}", "calls the resolver 'now'"),
    ("a=b=c=", "is not a valid override"),
]


@pytest.mark.parametrize("override, choice", ACCEPTED)
def test_overrides_a_received_run_may_record(override, choice):
    assert trust.check_received_overrides([override], "model.json") == ([override] if choice else [])


@pytest.mark.parametrize("override, message", REFUSED)
def test_overrides_a_received_run_may_not_record(override, message):
    with pytest.raises(UserError, match="^model.json: ") as err:
        trust.check_received_overrides(["debug=fast", override], "model.json")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", ["debug=fast", {"a": "b"}, [1], None])
def test_overrides_that_are_not_a_list_of_strings_are_refused(overrides):
    with pytest.raises(UserError, match="model.json: expected a list of override strings"):
        trust.check_received_overrides(overrides, "model.json")


@pytest.mark.parametrize(
    "text, calls",
    [
        ("plain", []),
        ("${seed}", []),
        ("${a.${b}}", []),
        (r"\${oc.env:HOME}", []),
        ("${oc.env:HOME}", ["oc.env"]),
        ("${ oc.env : HOME }", ["oc.env"]),
        ("a-${slug:${oc.env:HOME}}-${fmt:1}", ["slug", "oc.env", "fmt"]),
        ("${oc.${x}:HOME}", ["oc.${x}"]),
        ("${${x}:HOME}", ["${x}"]),
        (
            "${oc.env:HOME",
            ["oc.env"],
        ),  # not parseable: what it seems to call (OmegaConf would not evaluate it)
    ],
)
def test_resolver_calls_are_found_as_omegaconf_parses_them(text, calls):
    assert trust.resolver_calls(text) == calls


def test_check_resolvers_names_the_key_and_the_allowed_ones():
    trust.check_resolvers({"a": {"b": "${slug:x}", "c": ["${oc.select:a.b,1}"]}}, "c.yaml")
    with pytest.raises(UserError) as err:
        trust.check_resolvers({"a": {"b": "ok", "c": [1, "${oc.${x}:HOME}"]}}, "c.yaml")
    assert str(err.value) == (
        "c.yaml: a.c[1] calls the resolver 'oc.${x}', which the report does not evaluate in a "
        f"run's config; allowed: {', '.join(trust.allowed_resolvers())}"
    )


def test_code_keys_the_projects_conf_does_not_put_there_are_refused():
    own = {
        "model": {
            "module": {"_target_": "src.A", "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True}}
        }
    }
    trust.check_code_keys(own, own, "m.json")
    changed = {
        "model": {"module": {"_target_": "src.A", "optimizer": {"_target_": "os.system", "_partial_": True}}}
    }
    with pytest.raises(
        UserError,
        match=r"m.json: the run's config composes to "
        r"model.module.optimizer._target_='os.system', which the project's conf",
    ):
        trust.check_code_keys(changed, own, "m.json")
    moved = {
        "model": {
            "module": {
                "_target_": "src.A",
                "net": {"_target_": "torch.optim.Adam"},
                "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True},
            }
        }
    }
    with pytest.raises(UserError, match="model.module.net._target_='torch.optim.Adam'"):
        trust.check_code_keys(moved, own, "m.json")
    in_a_list = {**own, "x": [{"y": {"_args_": ["rm"]}}]}
    with pytest.raises(UserError, match=r"x\[0\].y._args_=\['rm'\]"):
        trust.check_code_keys(in_a_list, own, "m.json")
