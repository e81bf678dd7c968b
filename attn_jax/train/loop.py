"""The shared training loop: optax, a jitted step, orbax checkpoints, resumable and deterministic.

An experiment hands :func:`train` a :class:`Task` (how to initialise, what the
loss is, which batch belongs to a step, how to evaluate) and a
:class:`TrainConfig`. The loop owns everything else:

* optimizer (adam / adamw / rmsprop / sgd) with warmup + cosine schedule and
  global-norm gradient clipping; one ``jax.jit``-compiled step;
* ``metrics.jsonl`` (one JSON line per logged step and per evaluation), a tqdm
  bar with loss and steps/s, ``summary.json`` at the end (DESIGN.md's fields);
  TensorBoard event files in ``tensorboard/`` too when the optional
  ``tensorboardX`` package is installed (nothing else needs it);
* orbax checkpoints of parameters, optimizer state and step, every
  ``checkpoint_every`` steps and at the end, keeping the last ``keep_checkpoints``.

Determinism and resumption: the batch of step ``s`` is ``task.batch(s)`` and its
random key is ``fold_in(key(seed), s)``, pure functions of the step, so the data
iterator's state *is* the step. Rerunning with the same ``out`` restores the
latest complete checkpoint and replays from there: a run killed at any moment
(SIGKILL included) ends with bitwise the same parameters on CPU as one that was
never interrupted. A finished run is not retrained. A checkpoint or config that
does not match is a clear error, and nothing in ``out`` is overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from attn_jax.sharding import ACTIVATION_RULES, batch_sharding, parse_rules, state_shardings, use_mesh


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping settings shared by every experiment."""

    steps: int = 100
    learning_rate: float = 1e-3
    warmup_steps: int = 0
    schedule: str = "constant"  # constant | cosine | rsqrt (the Transformer's warmup, peak learning_rate)
    optimizer: str = "adam"  # adam | adamw | rmsprop | sgd
    weight_decay: float = 0.0
    clip_norm: float | None = 1.0
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    progress: bool = True
    tensorboard: bool = True  # also write TensorBoard event files when tensorboardX is installed
    # overrides of attn_jax.sharding's rules table under a mesh, e.g. "heads=none,mlp=model,batch=data+fsdp"
    sharding_rules: str = ""


class Task(Protocol):
    def init(self, rng: jax.Array) -> Any: ...

    def loss(self, params: Any, batch: Any, rng: jax.Array) -> tuple[jax.Array, Mapping[str, jax.Array]]: ...

    def batch(self, step: int) -> Any: ...

    def evaluate(self, params: Any) -> Mapping[str, float]: ...

    # optional: ``optimizer(cfg) -> optax.GradientTransformation`` replaces :func:`make_optimizer`


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    if cfg.schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 0),
                                                max(cfg.steps, cfg.warmup_steps + 1))
    elif cfg.schedule == "rsqrt":  # Vaswani et al. eq. (3): linear warmup, then decay with 1/sqrt(step)
        warm = max(cfg.warmup_steps, 1)
        lr = lambda step: cfg.learning_rate * jnp.minimum((step + 1) / warm, jnp.sqrt(warm / (step + 1)))  # noqa: E731
    elif cfg.schedule == "constant":
        lr = (optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps) if cfg.warmup_steps
              else cfg.learning_rate)
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: constant, cosine, rsqrt")
    makers: dict[str, Callable[[], optax.GradientTransformation]] = {
        "adam": lambda: optax.adam(lr),
        "adamw": lambda: optax.adamw(lr, weight_decay=cfg.weight_decay),
        "rmsprop": lambda: optax.rmsprop(lr, momentum=0.9),
        "sgd": lambda: optax.sgd(lr),
    }
    if cfg.optimizer not in makers:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: {', '.join(makers)}")
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
    return optax.chain(*parts, makers[cfg.optimizer]())


def device_string() -> str:
    d = jax.devices()[0]
    return f"{d.device_kind if d.platform != 'cpu' else 'cpu'}, jax {jax.__version__}"


def tensorboard_writer(out: Path):
    """A ``tensorboardX.SummaryWriter`` on ``out/tensorboard``, or None when tensorboardX is not installed."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    tmp.replace(path)


def _check_config(out: Path, config: Mapping) -> None:
    path = out / "config.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != json.loads(json.dumps(config, default=str)):
            raise ValueError(f"{out} holds a run with a different config ({path}); "
                             "use another --out, or delete that folder to start over")
    else:
        _write_json(path, json.loads(json.dumps(config, default=str)))


def _trim_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in keep))


def _place(params, optimizer, mesh, rules):
    """Parameters on ``mesh`` by their logical names, and an optimizer state sharded like them."""
    if mesh is None:
        return params, optimizer.init(params), None, None
    param_sh = state_shardings(params, mesh, rules)
    params = jax.device_put(params, param_sh)
    opt_state = jax.jit(optimizer.init)(params)  # moments inherit their parameter's sharding
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_sh = jax.tree.map(lambda x: x.sharding if isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh
                          else replicated, opt_state)  # step counts and other scalars: replicated
    return params, jax.device_put(opt_state, opt_sh), param_sh, opt_sh


def _global_batch(batch, mesh, rules=ACTIVATION_RULES):
    """The step's (global, identical on every process) host batch as arrays sharded over the batch axes."""
    if mesh is None:
        return batch

    def put(x):
        x = np.asarray(x)
        sharding = batch_sharding(mesh, x.ndim, rules)
        first = sharding.spec[0]
        axes = first if isinstance(first, tuple) else (first,) if first else ()
        ways = int(np.prod([mesh.shape[a] for a in axes]))
        if x.ndim == 0 or x.shape[0] % ways:
            raise ValueError(f"a batch leaf of shape {x.shape} cannot be split {ways} ways over the mesh's batch "
                             f"axes {sharding.spec[0]}; make the batch size a multiple of {ways}")
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, batch)


def train(task: Task, cfg: TrainConfig, out: Path | str, config: Mapping | None = None,
          mesh: Mesh | None = None) -> tuple[dict, Any]:
    """Train (or resume, or return a finished run). Returns ``(summary, params)``.

    With a ``mesh`` (:func:`attn_jax.sharding.make_mesh`), parameters are sharded by their logical axis names,
    the optimizer state like its parameters, each batch over the batch axes, and the step is traced under
    :func:`attn_jax.sharding.use_mesh` so the modules' activation constraints apply. The mesh is not part of
    the run's config: a checkpoint restores onto any mesh shape. Files are written by process 0 only.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    main_process = jax.process_index() == 0
    if main_process:
        _check_config(out, config if config is not None else dataclasses.asdict(cfg))
    # a task may bring its own optimizer (e.g. a non-gradient update for part of its state); else the config's
    optimizer = task.optimizer(cfg) if hasattr(task, "optimizer") else make_optimizer(cfg)
    param_rules, activation_rules = parse_rules(cfg.sharding_rules)
    params, opt_state, param_sh, opt_sh = _place(task.init(jax.random.key(cfg.seed)), optimizer, mesh, param_rules)
    manager = ocp.CheckpointManager(
        (out / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=cfg.keep_checkpoints, create=True,
                                             enable_async_checkpointing=False),
    )
    start = 0
    latest = manager.latest_step()
    if latest is not None:
        template = {"params": params, "opt_state": opt_state}
        try:
            restored = manager.restore(latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(template),
                                                                        meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as err:
            manager.close()
            raise ValueError(f"the checkpoint in {out / 'checkpoints'} (step {latest}) does not match this model: "
                             f"{str(err)[:300]}. Use another --out; nothing was overwritten.") from err
        params, opt_state = restored["state"]["params"], restored["state"]["opt_state"]
        start = int(restored["meta"]["step"])
    summary_path = out / "summary.json"
    if start >= cfg.steps and summary_path.exists():
        manager.close()
        return json.loads(summary_path.read_text()), params
    metrics_path = out / "metrics.jsonl"
    if main_process:
        _trim_metrics(metrics_path, start)

    base_key = jax.random.key(cfg.seed + 1)

    def step(params, opt_state, batch, step):
        with use_mesh(mesh, activation_rules):
            rng = jax.random.fold_in(base_key, step)
            (loss, aux), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, rng)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss, aux

    step_fn = jax.jit(step) if mesh is None else jax.jit(step, out_shardings=(param_sh, opt_sh, None, None))

    def save(step):
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave({"params": params, "opt_state": opt_state}),
            meta=ocp.args.JsonSave({"step": step})), force=True)

    writer = tensorboard_writer(out) if cfg.tensorboard and main_process else None

    def log(record):
        if not main_process:
            return
        with metrics_path.open("a") as f:
            f.write(json.dumps(record, default=float) + "\n")
        if writer is not None:
            for k, v in record.items():
                if k != "step":
                    writer.add_scalar(k, float(v), record["step"])

    loss = jnp.nan
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=out.name,
               disable=not cfg.progress or not main_process,
               dynamic_ncols=True)
    t0, done = time.perf_counter(), 0
    for step in bar:
        params, opt_state, loss, aux = step_fn(params, opt_state, _global_batch(task.batch(step), mesh,
                                                                                activation_rules),
                                               jnp.asarray(step, jnp.int32))
        done += 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            record = {"step": step + 1, "loss": float(loss), **{k: float(v) for k, v in aux.items()}}
            rate = done / (time.perf_counter() - t0)
            record["steps_per_s"] = rate
            log(record)
            bar.set_postfix(loss=f"{float(loss):.4f}", steps_s=f"{rate:.1f}")
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 != cfg.steps:
            log({"step": step + 1, **{f"eval/{k}": float(v) for k, v in task.evaluate(params).items()}})
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            save(step + 1)
    bar.close()
    if manager.latest_step() != cfg.steps:
        save(cfg.steps)
    manager.wait_until_finished()
    manager.close()
    metrics = {k: float(v) for k, v in task.evaluate(params).items()}
    log({"step": cfg.steps, **{f"eval/{k}": v for k, v in metrics.items()}})
    if writer is not None:
        writer.close()
    final_loss = float(loss) if done else _last_loss(metrics_path)
    summary = dict(final_train_loss=final_loss, steps=cfg.steps, eval=metrics, device=device_string())
    if main_process:
        _write_json(summary_path, summary)
    return summary, params


def _last_loss(path: Path) -> float:
    losses = [json.loads(line)["loss"] for line in path.read_text().splitlines() if '"loss"' in line]
    return losses[-1] if losses else float("nan")
