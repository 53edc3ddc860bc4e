"""What a config received from someone else may do: carry values, never run code or read this machine.

Two readers take configs written elsewhere: the report (a run directory's
``.hydra/config.yaml``) and ``src.select`` (a saved model's recorded overrides,
``model.json``). Both go through the checks here, before anything is resolved or built:

- ``check_resolvers``: a config evaluates only the project's pure resolvers
  (``src.config.resolvers.PURE_RESOLVERS``) and OmegaConf's own that read the same config
  (``SAFE_BUILTIN_RESOLVERS``). ``${oc.env:...}`` would copy this machine's environment,
  credentials included, into a report or a run's labels. The resolver calls are found by
  OmegaConf's own grammar, so a name built from another interpolation (``${oc.${x}:HOME}``)
  is seen and refused too.
- ``check_received_overrides``: recorded command-line overrides may only choose options of
  the project's config groups (a file ``conf/<group>/<option>.yaml``) and set plain values:
  no ``hydra.*`` (``hydra.searchpath`` would compose YAML from anywhere), no package (``@``),
  no sweep, no key or value naming code (``CODE_KEYS``), no resolver outside the above.
- ``check_code_keys``: the composed config holds no code key that the project's own conf
  files (composed with the same group choices) do not put there, which also catches an
  interpolation that copies a node holding code to where it would be instantiated.
"""

from __future__ import annotations

import re
from pathlib import Path

from src.config.overrides import CONF_DIR, config_groups
from src.config.resolvers import PURE_RESOLVERS
from src.errors import UserError

# the keys Hydra's instantiate reads as code: what to call and how
CODE_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
# OmegaConf's own resolvers that only read other keys of the same config.
SAFE_BUILTIN_RESOLVERS = ("oc.select", "oc.dict.keys", "oc.dict.values")
# a resolver call as text: what a string that OmegaConf's grammar cannot parse is searched for
_RESOLVER_CALL = re.compile(r"\$\{\s*([A-Za-z_][\w.\-]*)\s*:")
_PLAIN = (str, int, float, bool, type(None))


def walk(node, where: str = "", with_keys: bool = False):
    """(dotted key, value) of every leaf under ``node``; with ``with_keys`` also (dotted key, key text)."""
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{where}.{k}" if where else str(k)
            if with_keys:
                yield key, str(k)
            yield from walk(v, key, with_keys)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{where}[{i}]", with_keys)
    else:
        yield where, node


def allowed_resolvers() -> list[str]:
    return sorted(SAFE_BUILTIN_RESOLVERS + tuple(PURE_RESOLVERS))


def resolver_calls(text: str) -> list[str]:
    """The names of the resolvers a config string calls, nested calls included, as OmegaConf parses
    it; a name built from an interpolation comes back as written (``oc.${x}``), never an allowed one."""
    if "${" not in text:
        return []
    from omegaconf.errors import GrammarParseError
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser
    from omegaconf.grammar_parser import parse

    try:
        tree = parse(text)
    except GrammarParseError:  # OmegaConf cannot evaluate it either; name what it seems to call
        return _RESOLVER_CALL.findall(text)
    names, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, OmegaConfGrammarParser.InterpolationResolverContext):
            names.append(node.resolverName().getText())
        stack.extend(reversed(getattr(node, "children", None) or []))
    return names


def refused_resolver(text: str) -> str | None:
    """The first resolver ``text`` calls that a received config may not call, else None."""
    allowed = set(allowed_resolvers())
    return next((name for name in resolver_calls(text) if name not in allowed), None)


def check_resolvers(node, path, reader: str = "the report", where: str = "") -> None:
    """Refuse ``node`` (a plain container or a value) when a string in it calls a resolver outside the
    project's pure ones: one line naming ``path``, the key and what is allowed."""
    for key, value in walk(node, where, with_keys=True):
        name = refused_resolver(value) if isinstance(value, str) else None
        if name is not None:
            raise UserError(
                f"{path}: {key or 'a value'} calls the resolver '{name}', which {reader} does not "
                f"evaluate in a run's config; allowed: {', '.join(allowed_resolvers())}"
            )


def project_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """The project's config groups a received run may choose from (``conf/<group>/``, not Hydra's own)
    and their options (the files directly in it)."""
    return {group: options for group, options in config_groups(conf_dir).items() if group != "hydra"}


def _is_hydra_key(key: str) -> bool:
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def _code_key_in(value) -> str | None:
    """A code key among the keys of a parsed override value (a node given whole), else None."""
    if isinstance(value, dict):
        return next((k for k in value if k in CODE_KEYS), None) or next(
            (found for found in map(_code_key_in, value.values()) if found), None
        )
    if isinstance(value, list):
        return next((found for found in map(_code_key_in, value) if found), None)
    return None


def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, _PLAIN) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN)


def check_received_overrides(
    overrides, path, reader: str = "src.select", conf_dir: Path = CONF_DIR
) -> list[str]:
    """``overrides`` (a run's recorded command-line overrides, read from ``path``) checked as a received
    run's may be (see the module doc); returns those that choose config group options, in order: the
    project's own config for the same choices is what ``check_code_keys`` compares with."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise UserError(f"{path}: expected a list of override strings")
    groups, parser, choices = project_groups(conf_dir), OverridesParser.create(), []
    refused = f"{reader} refuses it in a received run (only options of conf/ groups and plain values)"
    for line in overrides:
        try:
            override = parser.parse_override(line)
        except HydraException as err:
            raise UserError(
                f"{path}: {line!r} is not a valid override ({str(err).strip().splitlines()[0]})"
            ) from None
        key = override.key_or_group
        if _is_hydra_key(key):
            raise UserError(f"{path}: override {line!r} changes Hydra's own settings ({key}); {refused}")
        if override.package is not None:
            raise UserError(f"{path}: override {line!r} places a config under another package (@); {refused}")
        if override.is_sweep_override():
            raise UserError(f"{path}: override {line!r} is a sweep; a run records one value per key")
        value = override.value()
        if "/" in key or key in groups:
            options = groups.get(key)
            if options is None:
                raise UserError(
                    f"{path}: override {line!r}: {key} is not one of the project's config groups "
                    f"({', '.join(groups)}); {refused}"
                )
            if value is not None and (not isinstance(value, str) or value not in options):
                raise UserError(
                    f"{path}: override {line!r}: {value!r} is not an option of the {key!r} config "
                    f"group (a file conf/{key}/<option>.yaml); allowed: {', '.join(options)}"
                )
            choices.append(line)
            continue
        code = next((part for part in key.split(".") if part in CODE_KEYS), None) or _code_key_in(value)
        if code is not None:
            raise UserError(f"{path}: override {line!r} names code to instantiate ({code}); {refused}")
        if not _plain(value):
            raise UserError(f"{path}: override {line!r} is not a plain value; {refused}")
        check_resolvers(value, path, reader, where=key)
    return choices


def code_key_entries(node, where: str = "") -> set[tuple[str, str]]:
    """(dotted key, value) of every code key under ``node`` (a plain container), nested ones included."""
    entries = set()
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{where}.{k}" if where else str(k)
            if k in CODE_KEYS:
                entries.add((key, repr(v)))
            entries |= code_key_entries(v, key)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            entries |= code_key_entries(v, f"{where}[{i}]")
    return entries


def check_code_keys(received, own, path, reader: str = "src.select", where: str = "") -> None:
    """Refuse ``received`` (a composed config, or its node at ``where``, as a plain container) when it
    holds a code key, or a code key's value, that ``own`` (the project's conf for the same group choices)
    does not."""
    extra = sorted(code_key_entries(received, where) - code_key_entries(own, where))
    if extra:
        key, value = extra[0]
        raise UserError(
            f"{path}: the run's config composes to {key}={value}, which the project's conf files do "
            f"not put there; {reader} instantiates only what conf/ names"
        )
