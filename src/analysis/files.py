"""Reading the files of a run directory received from someone else, as data.

Every file the report reads from a run directory (``.hydra/config.yaml``,
``.hydra/overrides.yaml``, ``.hydra/hydra.yaml``, ``summary.json``, ``rounds.jsonl``, the
per-epoch ``metrics.csv``) comes through here: one that cannot be read, is not text, or
does not parse is a ``UserError`` of one line naming the file and, where the parser knows
it, the line; never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.errors import UserError


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, shortened: parsers' messages run over lines."""
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _line_of(data: bytes | str, position: int) -> int:
    return data[:position].count(b"\n" if isinstance(data, bytes) else "\n") + 1


def read_text(path: Path) -> str:
    """The file's text (UTF-8); one line naming the file when it is no readable text file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not a regular file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror or first_line(err)})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path}:{_line_of(data, err.start)}: not UTF-8 text (byte {data[err.start]:#04x})"
        ) from None


def yaml_error(path: Path, err: yaml.YAMLError, text: str) -> UserError:
    """One line of a YAML parser's error: the file, the line it stopped at and what it found."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is not None:
        line = mark.line + 1
    elif isinstance(getattr(err, "position", None), int):  # a ReaderError: a character YAML refuses
        line = _line_of(text, err.position)
    else:
        line = None
    what = getattr(err, "problem", None) or first_line(err)
    context = getattr(err, "context", None)
    if context and getattr(err, "problem", None):
        what = f"{context}: {what}"
    return UserError(f"{path}{f':{line}' if line else ''}: not valid YAML ({what})")


def load_yaml(path: Path):
    """A YAML file parsed with the safe loader (no tags, no objects)."""
    text = read_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise yaml_error(path, err, text) from None


def _line_of_key(text: str, dotted) -> int | None:
    """The line of a dotted key (``dataset.sizes.pool``) in a YAML mapping, where it can be found."""
    if not isinstance(dotted, str) or not dotted:
        return None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in dotted.split("."):
        if not isinstance(node, yaml.MappingNode):
            return line
        match = next(
            ((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None
        )
        if match is None:
            return line
        line, node = match[0].start_mark.line + 1, match[1]
    return line


def load_config(path: Path) -> DictConfig:
    """A saved config (``.hydra/config.yaml``) as OmegaConf reads it, unresolved: a mapping or one line."""
    text = read_text(path)
    try:
        cfg = OmegaConf.create(text) if text.strip() else OmegaConf.create({})  # OmegaConf's safe YAML loader
    except yaml.YAMLError as err:
        raise yaml_error(path, err, text) from None
    except (OmegaConfBaseException, ValueError, TypeError) as err:
        line = _line_of_key(text, getattr(err, "full_key", None))
        raise UserError(
            f"{path}{f':{line}' if line else ''}: not a config OmegaConf can read ({first_line(err)})"
        ) from None
    if not isinstance(cfg, DictConfig):
        raise UserError(f"{path}: not a config (a YAML mapping of keys), but a {type(cfg).__name__}")
    return cfg


def load_json(path: Path):
    """A JSON file; one line naming the file and line when it does not parse."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to read as JSON") from None
