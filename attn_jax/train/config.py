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

import dataclasses
import math
import typing
from collections.abc import Callable, Iterable, Mapping
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
        raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(keys(cfg)))}")
    current = getattr(cfg, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"config key {head!r} has no sub-keys (asked for {key!r})")
        return dataclasses.replace(cfg, **{head: override(current, rest, value, f"{_prefix}{head}.")})
    if dataclasses.is_dataclass(current):
        raise ValueError(f"config key {key!r} is a group; set one of: "
                         f"{', '.join(sorted(f'{key}.{k}' for k in keys(current)))}")
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


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
