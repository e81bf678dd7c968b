"""The shared training loop: optax, a jitted step, orbax checkpoints, resumable and deterministic.

An experiment hands :func:`train` a :class:`Task` (how to initialise, what the
loss is, which batch belongs to a step, how to evaluate) and a
:class:`TrainConfig`. The loop owns everything else:

* optimizer (adam / adamw / rmsprop / sgd) with warmup + cosine schedule and
  global-norm gradient clipping; one ``jax.jit``-compiled step;
* ``metrics.jsonl`` (one JSON line per logged step and per evaluation), a tqdm
  bar with loss and steps/s, ``summary.json`` at the end (docs/design.md, "Runs and results") with what the
  loop alone records: ``wall_s`` (seconds of :func:`train` up to the final checkpoint, summed over sittings:
  set-up, steps and periodic evaluations, not the final evaluation; an interrupted sitting counts up to its last
  checkpoint; a finished run's results recomputed from that checkpoint keep it), ``parameters`` and ``commit``
  (:mod:`attn_jax.train.provenance`); experiments add their own fields with :func:`add_to_summary`, which
  refuses those keys; TensorBoard event files in ``tensorboard/`` too with ``tensorboard=True`` (the optional
  ``tensorboardX`` package: one warning when it is missing);
* orbax checkpoints of parameters, optimizer state and step, every
  ``checkpoint_every`` steps and at the end, keeping the last ``keep_checkpoints``.

Determinism and resumption: the batch of step ``s`` is ``task.batch(s)`` and its
random key is ``fold_in(key(seed), s)``, pure functions of the step, so the data
iterator's state *is* the step. Rerunning with the same ``out`` restores the
latest complete checkpoint and replays from there: a run killed at any moment
(SIGKILL included) ends with bitwise the same parameters on CPU as one that was
never interrupted. A finished run is not retrained. A checkpoint or config that
does not match is a clear error, and nothing in ``out`` is overwritten.

The run folder (see :func:`train` and :mod:`attn_jax.train.rundir`): locked for
the run; config.json and summary.json written atomically; a torn last line of
metrics.jsonl dropped; an unreadable newest checkpoint set aside and the newest
readable one resumed (none readable: a clear error, nothing deleted); deleted
results of a finished run recomputed from its final checkpoint, which records
its step's training loss; a non-finite training loss stops the run with an error
before that state is checkpointed. ``TrainConfig`` refuses nonsense numbers when
it is made, before any folder exists.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
import warnings
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
from attn_jax.train import provenance, rundir
from attn_jax.train.report import parameter_count
from attn_jax.train.rundir import RunDirError


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping settings shared by every experiment."""

    steps: int = 100  # optimiser steps in all (a resumed run continues to this)
    learning_rate: float = 1e-3  # peak learning rate (after warmup)
    warmup_steps: int = 0  # steps of linear warmup from 0 to learning_rate
    schedule: str = "constant"  # constant | cosine | rsqrt (the Transformer's warmup, peak learning_rate)
    optimizer: str = "adam"  # adam | adamw | rmsprop | sgd
    weight_decay: float = 0.0  # decoupled weight decay (adamw; ignored by the other optimisers)
    clip_norm: float | None = 1.0  # clip the gradients' global norm to this; none or 0: no clipping
    seed: int = 0  # the run's seed: parameter initialisation and the per-step random keys (dropout, sampling)
    # several seeds (``--set seeds=0,1,2``): each row runs once per seed into ``<out>/<row>/seed<k>/`` with
    # ``seed`` set to k (attn_jax.train.cli); () = the one run of ``seed``
    seeds: tuple[int, ...] = ()
    log_every: int = 10  # steps between training-metric lines in metrics.jsonl
    eval_every: int = 0  # 0: only at the end; in between, the task's ``curve_metrics`` (else ``evaluate``)
    checkpoint_every: int = 50  # steps between checkpoints (0: only at the end); a rerun resumes from the last
    keep_checkpoints: int = 2  # checkpoints kept on disk (the newest)
    progress: bool = True  # a tqdm progress bar on stderr
    tensorboard: bool = False  # also write TensorBoard event files (needs tensorboardX: warns once without it)
    # overrides of attn_jax.sharding's rules table under a mesh, e.g. "heads=none,mlp=model,batch=data+fsdp"
    sharding_rules: str = ""

    def __post_init__(self):
        """Nonsense is refused when the config is made, before any run folder exists: ``steps``, ``log_every`` and
        ``keep_checkpoints`` >= 1; ``eval_every`` and ``checkpoint_every`` >= 0 (0: only at the end);
        ``warmup_steps`` and ``seed`` >= 0; ``learning_rate`` and ``weight_decay`` finite and >= 0; ``clip_norm``
        finite and >= 0 or None (None or 0: no clipping); a known ``schedule`` and ``optimizer``."""
        at_least = {"steps": 1, "log_every": 1, "keep_checkpoints": 1, "eval_every": 0, "checkpoint_every": 0,
                    "warmup_steps": 0, "seed": 0}
        for name, low in at_least.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} = {v!r}: must be an integer >= {low}"
                                 + (" (0: only at the end)" if low == 0 and name.endswith("_every") else ""))
        for name in ("learning_rate", "weight_decay", "clip_norm"):
            v = getattr(self, name)
            if v is None and name == "clip_norm":
                continue
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} = {v!r}: must be a finite number >= 0")
        if len(set(self.seeds)) != len(self.seeds) or any(isinstance(k, bool) or not isinstance(k, int) or k < 0
                                                           for k in self.seeds):
            raise ValueError(f"seeds = {self.seeds!r}: must be distinct integers >= 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule = {self.schedule!r}: unknown; valid: {', '.join(SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer = {self.optimizer!r}: unknown; valid: {', '.join(OPTIMIZERS)}")


SCHEDULES = ("constant", "cosine", "rsqrt")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")


class Task(Protocol):
    def init(self, rng: jax.Array) -> Any: ...

    def loss(self, params: Any, batch: Any, rng: jax.Array) -> tuple[jax.Array, Mapping[str, jax.Array]]: ...

    def batch(self, step: int) -> Any: ...

    def evaluate(self, params: Any) -> Mapping[str, float]: ...

    # optional: ``optimizer(cfg) -> optax.GradientTransformation`` replaces :func:`make_optimizer`;
    # ``parameter_count(params) -> int | dict[str, int]`` replaces counting every array of the state
    # (e.g. a GAN's generator and discriminator apart, or the model without a baseline's state);
    # ``curve_metrics(params) -> Mapping[str, float]``: a cheaper held-out measure for the ``eval_every`` points of
    # a learning curve (e.g. teacher-forced perplexity where ``evaluate`` beam-decodes the test set)


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


_TENSORBOARD_WARNED: list[bool] = []


def tensorboard_writer(out: Path):
    """A ``tensorboardX.SummaryWriter`` on ``out/tensorboard``; None, with one warning per process, when
    tensorboardX is not installed (the ``tensorboard`` extra)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        if not _TENSORBOARD_WARNED:
            _TENSORBOARD_WARNED.append(True)
            warnings.warn("train.tensorboard=true but tensorboardX is not installed, so no TensorBoard files are "
                          "written (metrics.jsonl is); install it with pip install 'attn-jax[tensorboard]'",
                          stacklevel=2)
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _config_json(config: Mapping) -> dict:
    return json.loads(json.dumps(config, default=str))


def _check_config(out: Path, config: dict) -> None:
    path = out / "config.json"
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise RunDirError(f"{path} is not JSON ({err}); restore it, or use another --out") from None
        if saved != config:
            raise RunDirError(f"{out} holds a run with a different config ({path}); "
                              "use another --out, or delete that folder to start over")


def _trim_metrics(path: Path, records: list[dict], last_step: int, finished: bool) -> None:
    """Keep the records up to the checkpoint we resume from (later ones are logged again). At a finished run's
    last step its final evaluation goes too: it is logged after the last checkpoint, so it is logged again."""
    if not path.exists():
        return
    keep = [r for r in records if r["step"] < last_step or (r["step"] == last_step and not (
        finished and "loss" not in r and any(k.startswith("eval/") for k in r)))]
    rundir.atomic_write_text(path, "".join(json.dumps(r, default=float) + "\n" for r in keep))


def _manager(ckdir: Path, keep: int) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        ckdir, item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False))


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _leaf_shapes(tree) -> dict[tuple[str, ...], tuple[int, ...]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {tuple(_key_name(k) for k in path): tuple(getattr(x, "shape", np.shape(x))) for path, x in flat}


def _difference(manager: ocp.CheckpointManager, step: int, template) -> str | None:
    """How checkpoint ``step``'s recorded arrays differ from ``template`` ("" when they match), or None when its
    metadata cannot be read (then the checkpoint is damaged, not a different model)."""
    try:
        meta = manager.item_metadata(step)["state"]
        tree = getattr(meta, "tree", meta)
    except Exception:  # noqa: BLE001 (any failure to read it means: unreadable)
        return None
    if tree is None:
        return None
    saved, wanted = _leaf_shapes(tree), _leaf_shapes(template)
    name = "/".join
    parts = []
    if missing := [name(k) for k in wanted if k not in saved]:
        parts.append(f"the model has arrays the checkpoint lacks ({', '.join(missing[:3])})")
    if extra := [name(k) for k in saved if k not in wanted]:
        parts.append(f"the checkpoint has arrays the model lacks ({', '.join(extra[:3])})")
    if shapes := [f"{name(k)} {saved[k]} vs {wanted[k]}" for k in wanted if k in saved and saved[k] != wanted[k]]:
        parts.append(f"shapes differ (checkpoint vs model: {', '.join(shapes[:3])})")
    return "; ".join(parts)


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"


def _restore(manager: ocp.CheckpointManager, template, ckdir: Path):
    """``(restored, unreadable steps)`` from the newest checkpoint that restores; ``(None, [])`` without any.

    A checkpoint that fails to restore while its metadata records the model's arrays, or whose metadata cannot be
    read, is damaged (a truncated file, a missing metadata file): warn and try the previous one. One whose metadata
    records other arrays is a different model: a clear error, no fallback. None readable: a clear error naming the
    folder; nothing is deleted."""
    unreadable = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template),
                                                                      meta=ocp.args.JsonRestore()))
            int(restored["meta"]["step"])
        except Exception as err:  # noqa: BLE001 (classified below)
            diff = _difference(manager, step, template)
            if diff:
                raise RunDirError(f"the checkpoint in {ckdir} (step {step}) does not match this model: {diff}. "
                                  "Use another --out; nothing was overwritten.") from err
            warnings.warn(f"checkpoint step {step} in {ckdir} is unreadable ({_one_line(err)}); trying the one "
                          "before it", stacklevel=3)
            unreadable.append((step, err))
            continue
        return restored, [s for s, _ in unreadable]
    if unreadable:
        raise RunDirError(f"no readable checkpoint in {ckdir} ("
                          + "; ".join(f"step {s}: {_one_line(e)}" for s, e in unreadable)
                          + "); nothing was deleted. Move that folder away (or restore it from a backup) to start "
                          "over.")
    return None, []


def _set_aside(out: Path, ckdir: Path, steps: list[int]) -> None:
    """Move unreadable checkpoints out of orbax's folder into ``out/damaged_checkpoints/`` (kept, not deleted):
    the run replays those steps and saves them again."""
    aside = out / "damaged_checkpoints"
    for step in steps:
        src = ckdir / str(step)
        if not src.exists():
            continue
        aside.mkdir(exist_ok=True)
        dest, n = aside / str(step), 1
        while dest.exists():
            dest, n = aside / f"{step}.{n}", n + 1
        shutil.move(str(src), str(dest))
        warnings.warn(f"moved the unreadable checkpoint step {step} to {dest}", stacklevel=3)


def _check_finite(loss: float, step: int, manager: ocp.CheckpointManager) -> None:
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"the training loss is non-finite ({loss}) at step {step}: the run diverged and stops here (the "
            f"checkpoints hold finite states only; latest: {manager.latest_step()}). Lower train.learning_rate, "
            "clip gradients (train.clip_norm) or check the data, in another --out.")


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

    The run folder (:mod:`attn_jax.train.rundir`): a folder of runs (a comparison) is refused; the folder is locked
    for the call (a second run on it fails at once); a torn last line of metrics.jsonl is dropped; an unreadable
    newest checkpoint is set aside (``out/damaged_checkpoints/``) and the newest readable one resumed; a finished
    run whose summary.json (or metrics.jsonl too) was deleted gets its summary back from the final checkpoint (its
    parameters and its recorded loss), with a warning when the training curve is gone; a non-finite training loss
    (at a logged step or a checkpoint) stops the run with ``FloatingPointError`` before that state is saved.
    """
    out = Path(out)
    rundir.check_kind(out, comparison=False)
    config_json = _config_json(config if config is not None else dataclasses.asdict(cfg))
    with rundir.hold(out):
        return _train(task, cfg, out, config_json, mesh)


# summary.json keys the loop owns: an experiment adds its own fields with add_to_summary, never these
HARNESS_KEYS = ("final_train_loss", "steps", "eval", "device", "wall_s", "parameters", "commit", "dirty_files")


def add_to_summary(out: Path | str, summary: Mapping[str, Any], fields: Mapping[str, Any]) -> dict:
    """``summary`` (what :func:`train` returned for ``out``) with an experiment's own ``fields`` (e.g. bucket
    sizes) merged in, written to ``out/summary.json``.

    The harness's keys (:data:`HARNESS_KEYS`: ``wall_s``, ``parameters``, ``commit``, ``eval``, ...) are refused,
    so a rerun cannot replace what the loop recorded; equal content is not rewritten (a finished run's rerun
    touches nothing). Only process 0 writes."""
    if owned := sorted(set(fields) & set(HARNESS_KEYS)):
        raise ValueError(f"summary.json keys {owned} are recorded by the training loop; an experiment cannot set them")
    summary = {**summary, **json.loads(json.dumps(dict(fields), default=float))}
    if jax.process_index() == 0:
        rundir.write_json(Path(out) / "summary.json", summary)
    return summary


def _count(task: Task, params) -> int | dict[str, int]:
    return task.parameter_count(params) if hasattr(task, "parameter_count") else parameter_count(params)


def _train(task: Task, cfg: TrainConfig, out: Path, config_json: dict, mesh: Mesh | None) -> tuple[dict, Any]:
    began = time.perf_counter()
    main_process = jax.process_index() == 0
    _check_config(out, config_json)
    # a task may bring its own optimizer (e.g. a non-gradient update for part of its state); else the config's
    optimizer = task.optimizer(cfg) if hasattr(task, "optimizer") else make_optimizer(cfg)
    param_rules, activation_rules = parse_rules(cfg.sharding_rules)
    params, opt_state, param_sh, opt_sh = _place(task.init(jax.random.key(cfg.seed)), optimizer, mesh, param_rules)
    ckdir = (out / "checkpoints").absolute()
    manager = _manager(ckdir, cfg.keep_checkpoints)
    writer = None
    try:
        restored, unreadable = _restore(manager, {"params": params, "opt_state": opt_state}, ckdir)
        start, restored_loss, earlier_s = 0, None, 0.0
        if restored is not None:
            params, opt_state = restored["state"]["params"], restored["state"]["opt_state"]
            start, restored_loss = int(restored["meta"]["step"]), restored["meta"].get("loss")
            earlier_s = float(restored["meta"].get("wall_s", 0.0))  # earlier sittings, up to that checkpoint
        if unreadable:  # resume from an older one: the newer ones are replayed and saved again
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices("attn_jax.train: checkpoint chosen")
            if main_process:
                _set_aside(out, ckdir, unreadable)
            manager.close()
            manager = _manager(ckdir, cfg.keep_checkpoints)
        summary_path = out / "summary.json"
        finished = start >= cfg.steps
        if finished and summary_path.exists():
            try:
                return json.loads(summary_path.read_text()), params
            except json.JSONDecodeError:
                warnings.warn(f"{summary_path} is not JSON; recomputing it from the final checkpoint", stacklevel=3)
        metrics_path = out / "metrics.jsonl"
        records = rundir.read_metrics(metrics_path)
        if finished:  # the results of a finished run are gone: recompute them from its final checkpoint
            logged = [r["loss"] for r in records if r["step"] == start and "loss" in r]
            final_loss = restored_loss if restored_loss is not None else (logged[-1] if logged else None)
            if final_loss is None:
                raise RunDirError(
                    f"the results of the finished run in {out} are gone (summary.json, and metrics.jsonl holds no "
                    f"loss of step {start}) and its final checkpoint predates recording the loss; nothing was "
                    "changed. Delete that folder to retrain it.")
            if not metrics_path.exists():
                warnings.warn(f"{metrics_path} of the finished run is gone: summary.json is recomputed from the "
                              "final checkpoint, but the training curve cannot be recovered without retraining "
                              f"(delete {out} and rerun for that)", stacklevel=3)
        if main_process:
            _trim_metrics(metrics_path, records, start, finished)
            if not (out / "config.json").exists():
                rundir.write_json(out / "config.json", config_json)

        base_key = jax.random.key(cfg.seed + 1)

        def step(params, opt_state, batch, step):
            with use_mesh(mesh, activation_rules):
                rng = jax.random.fold_in(base_key, step)
                (loss, aux), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, rng)
                updates, opt_state = optimizer.update(grads, opt_state, params)
                return optax.apply_updates(params, updates), opt_state, loss, aux

        step_fn = jax.jit(step) if mesh is None else jax.jit(step, out_shardings=(param_sh, opt_sh, None, None))

        wall = {"s": earlier_s}  # seconds up to the latest checkpoint, over sittings: the summary's wall_s

        def save(step, loss):
            _check_finite(loss, step, manager)
            wall["s"] = earlier_s + time.perf_counter() - began
            manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave({"params": params, "opt_state": opt_state}),
                meta=ocp.args.JsonSave({"step": step, "loss": loss, "wall_s": wall["s"]})), force=True)

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
                _check_finite(record["loss"], step + 1, manager)
                bar.set_postfix(loss=f"{float(loss):.4f}", steps_s=f"{rate:.1f}")
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 != cfg.steps:
                curve = getattr(task, "curve_metrics", task.evaluate)
                log({"step": step + 1, **{f"eval/{k}": float(v) for k, v in curve(params).items()}})
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
                save(step + 1, float(loss))
        bar.close()
        if done:
            final_loss = float(loss)
            if manager.latest_step() != cfg.steps:
                save(cfg.steps, final_loss)
        manager.wait_until_finished()
        metrics = {k: float(v) for k, v in task.evaluate(params).items()}
        log({"step": cfg.steps, **{f"eval/{k}": v for k, v in metrics.items()}})
        summary = dict(final_train_loss=final_loss, steps=cfg.steps, eval=metrics, device=device_string(),
                       wall_s=wall["s"], parameters=_count(task, params),
                       commit=provenance.code_commit())
        if provenance.dirty_files():  # what "+dirty" was: the tracked files that differed as the run started
            summary["dirty_files"] = provenance.dirty_files()
        if main_process:
            rundir.write_json(summary_path, summary)
        return summary, params
    finally:
        manager.close()
        if writer is not None:
            writer.close()
