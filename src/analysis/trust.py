"""What the report trusts in a run directory received from someone else: nothing executable.

A run directory is data. The report reads only files inside it, evaluates only the
project's own pure config resolvers (``src.config.trust.check_resolvers``, the one check
``src.select`` applies to a saved model's overrides too) and, to draw image grids,
instantiates only the project's own data classes (classes defined under ``src.data``,
and the dataset factories named in ``DATA_FACTORIES``). Anything else
is refused before any work with one line naming the file, the key and what is allowed.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from pathlib import Path

from src.config.trust import walk
from src.data.paths import inside_root, leads_to
from src.errors import UserError

DATA_PACKAGE = "src.data"
# Dataset factories that are functions, not classes (a function under src.data may write files).
DATA_FACTORIES = frozenset({"src.data.folder.folder_datamodule"})
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
# config keys that name a directory a data class writes into (the decoded-image cache)
WRITE_DIR_KEYS = ("cache_dir",)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")


def inside(root: Path, relative: str) -> Path | None:
    """``root/relative`` when it exists; refused when it resolves outside ``root`` (a symlink out)."""
    path = Path(root) / relative
    if not path.exists():
        return None
    if not inside_root(path, root):
        raise UserError(
            f"{path}: leads outside the run directory {root} (a symlink to "
            f"{leads_to(path)}); the report reads only files inside the directories it is given"
        )
    return path


def _locate_data_object(target: str):
    """The object a dotted name under ``src.data`` names: project modules imported, then attributes."""
    parts = target.split(".")
    name = ".".join(parts[:2])
    obj = importlib.import_module(name)
    in_package = True  # still walking src.data's own packages and modules
    for part in parts[2:]:
        if in_package and hasattr(obj, "__path__") and importlib.util.find_spec(f"{name}.{part}") is not None:
            name = f"{name}.{part}"
            obj = importlib.import_module(name)
        else:
            in_package = False
            obj = getattr(obj, part, None)
            if obj is None:
                return None
    return obj


def is_data_target(target) -> bool:
    """True for a project data class (defined under ``src.data``) or a named dataset factory."""
    if (
        not isinstance(target, str)
        or not _DOTTED.fullmatch(target)
        or not target.startswith(DATA_PACKAGE + ".")
    ):
        return False
    obj = _locate_data_object(target)
    if target in DATA_FACTORIES:
        return inspect.isfunction(obj) and f"{obj.__module__}.{obj.__qualname__}" == target
    return inspect.isclass(obj) and obj.__module__.startswith(DATA_PACKAGE + ".")


def check_dataset_config(dataset: dict, path: Path) -> None:
    """Every ``_target_`` in a run's ``dataset`` config must be a project data class, and the
    names that become cache folder names must stay plain names; else one line, nothing built."""
    for key, value in walk(dataset, "dataset"):
        if key.endswith("._target_") and not is_data_target(value):
            raise UserError(
                f"{path}: {key}={value!r} is not one of the project's data classes; the report "
                f"instantiates only classes under {DATA_PACKAGE} (and "
                f"{', '.join(sorted(DATA_FACTORIES))}); use --no-grids to report this run without "
                "rebuilding its dataset"
            )
        if key.endswith(".name") and isinstance(value, str) and not _SAFE_NAME.fullmatch(value):
            raise UserError(
                f"{path}: {key}={value!r} is not a plain name (letters, digits, . _ + = -); "
                "use --no-grids to report this run without rebuilding its dataset"
            )


def with_local_cache(dataset, cache_dir: Path):
    """A copy of ``dataset`` whose decoded-image cache is ``cache_dir`` on this machine, not a
    directory the received config names."""
    if isinstance(dataset, dict):
        return {
            k: (str(cache_dir) if k in WRITE_DIR_KEYS and v is not None else with_local_cache(v, cache_dir))
            for k, v in dataset.items()
        }
    if isinstance(dataset, list):
        return [with_local_cache(v, cache_dir) for v in dataset]
    return dataset
