"""docs/configuration.md's option table: the generated one, every option file named, the defaults
those Hydra composes."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from src.config.options_table import END, NO_OPTION, NOT_LISTED, START, options_table
from tests.conftest import CONF, REPO

DOC = REPO / "docs" / "configuration.md"
REGENERATE = (
    "docs/configuration.md's option table differs from conf/: run `python -m src.config.options_table` "
    f"and paste its output between the {START} and {END} markers"
)


def table_in_doc() -> str:
    text = DOC.read_text()
    assert text.count(START) == 1 and text.count(END) == 1, (
        f"docs/configuration.md needs one {START} and one {END}"
    )
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def rows() -> dict[str, tuple[set[str], str]]:
    """group -> (its options, its default cell) as the doc's table writes them."""
    parsed = {}
    for line in table_in_doc().splitlines()[2:]:
        group, options, default = (cell.strip() for cell in line.strip().strip("|").split("|"))
        parsed[group.strip("`")] = ({o.strip().strip("`") for o in options.split(",")}, default.strip("`"))
    return parsed


def test_the_doc_holds_the_generated_table():
    assert table_in_doc() == options_table(), REGENERATE


@pytest.mark.parametrize("group", ["scorer", "dataset", "model", "trainer", "logger", "experiment"])
def test_every_option_file_of_a_group_is_in_the_table(group):
    files = {path.stem for path in (CONF / group).glob("*.yaml")}
    assert files, f"conf/{group} has no options"
    assert group in rows(), f"no row for {group}; {REGENERATE}"
    assert rows()[group][0] == files, REGENERATE


def test_the_defaults_column_is_what_hydra_composes():
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base=None):
            choices = compose("config", return_hydra_config=True).hydra.runtime.choices
    finally:
        GlobalHydra.instance().clear()
    table = rows()
    for group in ("dataset", "scorer", "model", "trainer"):
        assert table[group][1] == choices[group], f"{group}: {REGENERATE}"
    for group, (_, default) in table.items():
        if default == NOT_LISTED:
            assert group not in choices, f"{group}: {REGENERATE}"
        else:
            assert default == (NO_OPTION if choices[group] is None else choices[group]), (
                f"{group}: {REGENERATE}"
            )
