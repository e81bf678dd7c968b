"""Logical axis names -> mesh axes: the rules table, parameter shardings and activation constraints.

Modules name the axes of their parameters and activations logically ("batch",
"seq", "embed", "heads", "kv_heads", "head_dim", "mlp", "vocab", "positions");
a rules table maps each logical name to mesh axes ("data", "fsdp", "model",
"seq"). The default table:

=========== ======================
logical     mesh
=========== ======================
batch       ("data", "fsdp")
seq         "seq"
embed       "fsdp"  (parameters: ZeRO-3 style; activations keep embed whole)
heads       "model"
kv_heads    "model"
mlp         "model"
vocab       "model"
=========== ======================

:func:`parse_rules` reads overrides such as ``"heads=none,batch=data+fsdp"`` (an
experiment's ``train.sharding_rules``). A mesh axis is used at most once per array, and a dimension is only split over
the mesh axes whose product divides it (otherwise that dimension stays
replicated), so every config runs on every mesh shape: 2 KV heads on
``model=4`` are replicated, not an error.

Activations: :func:`constrain` applies ``with_sharding_constraint`` when a mesh
is active (:func:`use_mesh`), and is the identity otherwise, so the same module
code runs on one device and on a mesh.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Mapping[str, str | tuple[str, ...] | None]
MESH_AXES = ("data", "fsdp", "model", "seq")

DEFAULT_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"), "seq": "seq", "embed": "fsdp", "heads": "model", "kv_heads": "model",
    "mlp": "model", "vocab": "model", "head_dim": None, "positions": None,
}
# activations: the embedding dimension stays whole (fsdp shards parameters, not activations)
ACTIVATION_RULES: dict[str, str | tuple[str, ...] | None] = {**DEFAULT_RULES, "embed": None}

_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar("attn_jax_mesh", default=None)


def parse_mesh(text: str) -> dict[str, int]:
    """``"data=2,model=4"`` -> ``{"data": 2, "model": 4}`` (axes from :data:`MESH_AXES`)."""
    shape: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, size = part.partition("=")
        if name not in MESH_AXES or not size.isdigit() or int(size) < 1:
            raise ValueError(f"bad mesh axis {part!r} in {text!r}: want NAME=SIZE with NAME in {MESH_AXES}")
        if name in shape:
            raise ValueError(f"mesh axis {name!r} given twice in {text!r}")
        shape[name] = int(size)
    return shape


def parse_rules(text: str) -> tuple[dict, dict]:
    """Overrides of the rules table, ``"heads=none,mlp=model,batch=data+fsdp"`` (``+`` joins mesh axes, ``none``
    replicates): returns (parameter rules, activation rules), each the default table with the overrides."""
    over: dict[str, str | tuple[str, ...] | None] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        axes = tuple(a for a in value.split("+") if a and a != "none")
        if not name or not value or any(a not in MESH_AXES for a in axes):
            raise ValueError(f"bad sharding rule {part!r} in {text!r}: want LOGICAL=AXIS[+AXIS] or LOGICAL=none, "
                             f"mesh axes {MESH_AXES}")
        over[name] = None if not axes else axes[0] if len(axes) == 1 else axes
    return {**DEFAULT_RULES, **over}, {**ACTIVATION_RULES, **over}


def make_mesh(shape: Mapping[str, int] | str, devices: Sequence | None = None) -> Mesh:
    """A mesh with all four axes (missing ones have size 1) over ``devices`` (default: all of them)."""
    if isinstance(shape, str):
        shape = parse_mesh(shape)
    devices = list(jax.devices() if devices is None else devices)
    sizes = [shape.get(a, 1) for a in MESH_AXES]
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"mesh {dict(shape)} needs {int(np.prod(sizes))} devices, there are {len(devices)}")
    return Mesh(np.asarray(devices, dtype=object).reshape(sizes), MESH_AXES)


def logical_spec(names: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh,
                 rules: Rules = DEFAULT_RULES) -> PartitionSpec:
    """The mesh PartitionSpec of an array of ``shape`` whose axes have logical ``names``."""
    if names is None:
        return PartitionSpec()
    if len(names) != len(shape):
        raise ValueError(f"logical names {tuple(names)} do not match an array of shape {tuple(shape)}")
    used: set[str] = set()
    spec = []
    for name, size in zip(names, shape, strict=True):
        axes = rules.get(name) if name is not None else None
        axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
        keep = []
        for a in axes:
            n = mesh.shape.get(a, 1)
            if a in used or n == 1 or size % (int(np.prod([mesh.shape[k] for k in keep])) * n):
                continue
            keep.append(a)
        used.update(keep)
        spec.append(None if not keep else keep[0] if len(keep) == 1 else tuple(keep))
    return PartitionSpec(*spec)


def _names(variable) -> tuple | None:
    meta = variable.get_metadata()
    for key in ("out_sharding", "sharding_names", "sharding"):  # the key moved between flax versions
        if meta.get(key) is not None:
            return tuple(meta[key])
    return None


def state_shardings(state, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """NamedShardings for an ``nnx.State`` (or any tree of ``nnx.Variable``) from its logical names."""
    from flax import nnx

    def one(v):
        if isinstance(v, nnx.Variable):
            return v.replace(NamedSharding(mesh, logical_spec(_names(v), np.shape(v.get_value()), mesh, rules)))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, ndim: int, rules: Rules = ACTIVATION_RULES) -> NamedSharding:
    """Inputs ``[B, ...]``: the batch over the data-parallel axes, the rest replicated (no shape check)."""
    axes = rules["batch"]
    axes = tuple(a for a in ((axes,) if isinstance(axes, str) else axes) if mesh.shape.get(a, 1) > 1)
    first = None if not axes else axes[0] if len(axes) == 1 else axes
    return NamedSharding(mesh, PartitionSpec(first, *([None] * (ndim - 1))))


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None, rules: Rules = ACTIVATION_RULES):
    """Within the block (at trace time), :func:`constrain` shards activations over ``mesh``."""
    token = _ACTIVE.set(None if mesh is None else (mesh, rules))
    try:
        yield mesh
    finally:
        _ACTIVE.reset(token)


def active_mesh() -> tuple[Mesh, Rules] | None:
    """The mesh and activation rules of the enclosing :func:`use_mesh` block, or None outside one."""
    return _ACTIVE.get()


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names under :func:`use_mesh`; the identity without a mesh."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_spec(names, x.shape, mesh, rules)))
