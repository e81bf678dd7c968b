"""Plain-Python configs: frozen dataclasses, named presets, ``--set a.b=value`` overrides.

An experiment defines a frozen dataclass (nested dataclasses allowed) and a dict
of presets, name -> function returning a config. :func:`build` picks a preset
and applies overrides; an unknown preset or key is an error that lists the valid
ones, and values are parsed to the field's type (int, float, bool, str, tuples).

:func:`build` then validates the whole config (:func:`validate`) before anything
is created or written: every float is finite (no NaN or infinite rate, weight,
probability), every integer is >= 0, and a size (a field named ``size``,
``batch``, ``*_size``, ``*_sizes`` or ``*_batch``) is >= 1. A dataclass may add
its own rules in ``__post_init__`` (``TrainConfig`` does: steps >= 1,
``log_every`` >= 1, ...); a value it rejects is reported with its ``--set`` key.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import io
import json
import math
import runpy
import textwrap
import tokenize
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _parse(value: str, typ: Any, key: str):
    origin = typing.get_origin(typ)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value.lower() in ("none", "null"):
            return None
        return _parse(value, args[0], key)
    if typ is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {key}={value}: expected a boolean (true/false)")
    if typ in (int, float, str):
        try:
            return typ(value)
        except ValueError:
            raise ValueError(f"--set {key}={value}: expected {typ.__name__}") from None
    if origin is tuple:
        (inner, *_) = typing.get_args(typ) or (str,)
        return tuple(_parse(v.strip(), inner, key) for v in value.split(",") if v.strip())
    raise ValueError(f"--set {key}: fields of type {typ} cannot be set from the command line")


def override(cfg, key: str, value: str, _prefix: str = ""):
    """Return ``cfg`` with dotted ``key`` set to ``value`` (a string parsed to the field's type)."""
    head, _, rest = key.partition(".")
    types = _field_types(type(cfg))
    if head not in types:
        valid = [_prefix + k for k in keys(cfg)]
        close = difflib.get_close_matches(_prefix + key, valid, n=1)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise ValueError(f"unknown config key {_prefix + key!r}; {hint}valid keys: {', '.join(sorted(valid))}")
    current = getattr(cfg, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"config key {_prefix + head!r} has no sub-keys (asked for {_prefix + key!r})")
        return dataclasses.replace(cfg, **{head: override(current, rest, value, f"{_prefix}{head}.")})
    if dataclasses.is_dataclass(current):
        raise ValueError(f"config key {_prefix + key!r} is a group; set one of: "
                         f"{', '.join(sorted(f'{_prefix}{key}.{k}' for k in keys(current)))}")
    parsed = _parse(value, types[head], _prefix + key)
    try:  # the dataclass's own rules (__post_init__)
        return dataclasses.replace(cfg, **{head: parsed})
    except ValueError as err:
        raise ValueError(f"--set {_prefix}{key}={value}: {err}") from None


def _is_size(name: str) -> bool:
    return name in ("size", "batch") or name.endswith(("_size", "_sizes", "_batch"))


def validate(cfg, prefix: str = "") -> None:
    """Raise ``ValueError`` naming the key of the first nonsense number in ``cfg`` (see the module docstring)."""
    for f in dataclasses.fields(cfg):
        v, key = getattr(cfg, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v):
            validate(v, f"{key}.")
            continue
        for x in v if isinstance(v, tuple) else (v,):
            if isinstance(x, bool):
                continue
            if isinstance(x, float) and not math.isfinite(x):
                raise ValueError(f"config key {key} = {v!r}: must be a finite number")
            if isinstance(x, int) and x < (1 if _is_size(f.name) else 0):
                what = "a size" if _is_size(f.name) else "a count"
                raise ValueError(f"config key {key} = {v!r}: {what} must be >= {1 if _is_size(f.name) else 0}")


def keys(cfg, prefix: str = "") -> list[str]:
    """Every settable dotted key of a config."""
    out = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out += keys(v, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def parse_sets(items: Iterable[str]) -> list[tuple[str, str]]:
    """``["a.b=1", ...]`` -> ``[("a.b", "1"), ...]``."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return pairs


def build(presets: Mapping[str, Callable[[], Any]], preset: str, sets: Iterable[str] = ()):
    """The preset's config with every ``--set`` applied, in order, then :func:`validate`-d."""
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(presets)}")
    cfg = presets[preset]()
    for key, value in parse_sets(sets):
        cfg = override(cfg, key, value)
    validate(cfg)
    return cfg


def type_name(typ: Any) -> str:
    """A field type as ``--help`` shows it: ``int``, ``tuple[str, ...]``, ``float | None``."""
    if isinstance(typ, type) and not typing.get_args(typ):
        return typ.__name__
    return str(typ).replace("typing.", "").replace("NoneType", "None")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """One line of documentation per field of a config dataclass, read from its source: the comment at the end of
    the field's line(s), else the comment lines directly above it; inherited fields from the base classes. Empty
    where a field has no comment or the source cannot be read (an interactive session)."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            lines, _ = inspect.getsourcelines(klass)
        except (OSError, TypeError):
            continue
        source = textwrap.dedent("".join(lines))
        comments: dict[int, str] = {}  # line (1-based) -> comment text
        code_lines: set[int] = set()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
            elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                                  tokenize.ENDMARKER):
                code_lines.add(tok.start[0])
        (node,) = ast.parse(source).body
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            trailing = [comments[n] for n in range(stmt.lineno, stmt.end_lineno + 1) if n in comments]
            above, n = [], stmt.lineno - 1
            while n in comments and n not in code_lines:
                above.insert(0, comments[n])
                n -= 1
            text = " ".join(trailing or above)
            if text:
                docs[stmt.target.id] = text
    return docs


def describe(cfg, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """``(key, type, value, doc)`` for every settable key of ``cfg`` (:func:`keys`' order): what ``--help`` and
    ``--list`` print."""
    out = []
    types, docs = _field_types(type(cfg)), field_docs(type(cfg))
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out += describe(v, f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", type_name(types[f.name]), v, docs.get(f.name, "")))
    return out


def _as_set_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(_as_set_value(v) for v in value)
    return str(value)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    items = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append(f"{prefix}{key}={_as_set_value(value)}")
    return items


def load_overrides(path: Path | str) -> list[str]:
    """A config file's overrides as ``--set`` items (``key=value``), in the file's order.

    ``.json``: an object of keys (dotted, ``{"train.steps": 200}``, or nested, ``{"train": {"steps": 200}}``) to
    values (numbers, strings, booleans, null, lists for tuple fields). ``.py``: a Python file that defines a
    dict ``overrides`` of the same shape (it is run: load only files you trust)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file")
    if path.suffix == ".json":
        try:
            tree = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"--config {path}: not JSON ({err})") from None
    elif path.suffix == ".py":
        tree = runpy.run_path(str(path)).get("overrides")
        if tree is None:
            raise ValueError(f"--config {path}: the file defines no 'overrides' dict")
    else:
        raise ValueError(f"--config {path}: expected a .json or .py file")
    if not isinstance(tree, Mapping):
        raise ValueError(f"--config {path}: expected an object of config keys, got {type(tree).__name__}")
    return _flatten(tree)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
