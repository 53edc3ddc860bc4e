"""The layers of ``src/`` as the README draws them: every import, read from the source files
(function-level imports included), goes down the picture, or sideways only where listed below.

The picture is the README's block between ``<!-- layers:start -->`` and ``<!-- layers:end -->``:
one row per layer, top to bottom, its packages (a folder or a module of ``src/``) after the
layer's name. Changing the layering means changing the picture, in the same commit.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"

# Imports between two packages of one row, each with why it is allowed. Anything else sideways fails.
SIDEWAYS = {
    ("records", "errors"): "a damaged record file is a one-line user error",
    ("selection", "models"): "MC-dropout and learning-loss scorers adapt the model they score with",
    ("experiment", "labelling"): "a finished run saves its model for src.select (labelling.trained)",
    ("experiment", "launch"): "a sweep job's thread share and device (launch.prepare_job)",
    ("experiment", "validate"): "the run's one-line checks before anything is built",
    ("experiment", "pretraining"): "a missing named baseline is made before the model is built",
    ("labelling", "validate"): "src.select checks the detection scoring options as src.run does",
}


def layer_rows() -> list[tuple[str, list[str]]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- layers:start -->(.*?)<!-- layers:end -->", text, re.S)
    assert match, "README.md has no layer picture between <!-- layers:start --> and <!-- layers:end -->"
    rows = []
    for line in match.group(1).splitlines():
        if not line.strip() or line.startswith("```"):
            continue
        name, _, packages = line.partition("  ")
        rows.append((name.strip(), [p.strip() for p in packages.split("·") if p.strip()]))
    return rows


def package_of(module: str) -> str:
    """``src.loop.active_loop`` -> ``loop``; ``src.run`` -> ``run``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports_of(path: Path, root: Path = REPO) -> set[str]:
    """The ``src.*`` modules a file under ``root`` imports anywhere in it (relative imports resolved)."""
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {name for name in found if name == "src" or name.startswith("src.")}


def test_every_package_of_src_is_in_the_picture():
    drawn = [p for _, packages in layer_rows() for p in packages]
    assert len(drawn) == len(set(drawn)), f"a package drawn twice: {drawn}"
    present = {p.stem for p in SRC.glob("*.py") if p.name != "__init__.py"}
    present |= {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert sorted(present) == sorted(drawn)


def test_imports_go_down_the_picture():
    row_of = {p: i for i, (_, packages) in enumerate(layer_rows()) for p in packages}
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        here = package_of(".".join(path.relative_to(REPO).with_suffix("").parts))
        if here == "__init__":
            continue
        for target in sorted(imports_of(path)):
            there = package_of(target)
            if there == here or target == "src":
                continue
            if row_of[there] < row_of[here] or (
                row_of[there] == row_of[here] and (here, there) not in SIDEWAYS
            ):
                wrong.append(f"{path.relative_to(REPO)} imports {target} ({here} -> {there})")
    assert not wrong, "imports against the README's layer picture:\n" + "\n".join(wrong)


def test_the_sideways_imports_form_no_cycle():
    graph: dict[str, set[str]] = {}
    for a, b in SIDEWAYS:
        graph.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ())
        )

    assert not [a for a in graph if reaches(a, a, set())]


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The reader finds imports at any depth and resolves relative ones (else the test above passes
    on nothing)."""
    nested = tmp_path / "src" / "models"
    nested.mkdir(parents=True)
    file = nested / "bad.py"
    file.write_text(
        "import os\ndef f():\n    from src.loop.active_loop import X\n    from ..selection import bald\n"
    )
    assert imports_of(file, root=tmp_path) == {"src.loop.active_loop", "src.selection"}
