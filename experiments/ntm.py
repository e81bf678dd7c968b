"""Neural Turing Machine vs LSTM on the paper's tasks (Graves et al. 2014, §4).

    python -m experiments.ntm --preset smoke --out /tmp/ntm                  # main variant: ntm on copy
    python -m experiments.ntm --set models=ntm,lstm                          # comparison: one plot each
    python -m experiments.ntm --set task=associative_recall --set model=lstm
    python -m experiments.ntm --list

Variants: ``model`` in {ntm, lstm}; ``task`` in {copy, repeat_copy,
associative_recall}. Each run writes (beside config.json, metrics.jsonl,
checkpoints, summary.json): ``learning_curve.png`` (cost in bits per sequence vs
sequences seen: Figs. 3, 7, 10 analogue), for copy ``generalisation.png`` (cost
vs sequence length, trained on shorter ones: Figs. 4-5) and for the NTM
``weightings.png`` (inputs, outputs, write and read weightings over time: Fig. 6).
Eval metrics: ``bits_per_sequence`` (the training distribution) and, for copy,
``bits_len_<n>`` / ``bit_errors_len_<n>`` (cost and wrong bits per sequence at
length n); for repeat copy ``bits_len_<n>_rep_<r>`` / ``bit_errors_len_<n>_rep_<r>``
at the longest training length and count, twice the length, and twice the
count (Fig. 8).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attn_jax.nn.ntm import NTM, LSTMBaseline
from attn_jax.train import TrainConfig, cli, rundir, train
from attn_jax.train.config import to_dict
from attn_jax.train.report import plot_metric_curves, pyplot, save_line_plot
from experiments.data import ntm_tasks
from experiments.readme import repo_relative, row_run, stage_comparison, update_readme_block

MODELS = ("ntm", "lstm")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    width: int = 8  # bits per input vector (associative recall items: width - 2)
    min_length: int = 1  # copy / repeat copy: shortest training sequence
    max_length: int = 10  # copy / repeat copy training lengths (the paper: copy 1-20, repeat copy 1-10)
    max_repeats: int = 10  # repeat copy: training repeat counts 1..max_repeats (the count input is divided by it)
    max_items: int = 6  # associative recall: items per sequence 2..max_items
    eval_lengths: tuple[int, ...] = (10, 20, 30, 50)  # copy: generalisation lengths
    eval_batch: int = 64  # sequences per evaluation set (training distribution and each generalisation test)


@dataclasses.dataclass(frozen=True)
class NetConfig:
    controller: str = "lstm"  # ntm controller: lstm | feedforward
    controller_features: int = 100  # ntm: controller size (LSTM hidden units or feed-forward outputs)
    memory_slots: int = 128  # ntm: memory locations N (copy test lengths above it are skipped)
    memory_width: int = 20  # ntm: size M of each memory location
    read_heads: int = 1  # ntm: read heads (there is one write head)
    lstm_hidden: int = 256  # the LSTM baseline
    lstm_layers: int = 3  # the LSTM baseline: stacked LSTM layers


@dataclasses.dataclass(frozen=True)
class Config:
    task: str = "copy"  # copy | repeat_copy | associative_recall
    model: str = "ntm"  # ntm | lstm (the LSTM baseline)
    models: tuple[str, ...] = ()  # comparison mode
    batch_size: int = 16  # training sequences per step
    data: TaskConfig = TaskConfig()
    net: NetConfig = NetConfig()
    # Adam 2e-3 with a cosine decay and global-norm clipping at 1: at a constant 3e-3 the NTM learned copy within
    # ~600 steps and then blew up; with the decay it stays converged (see the closing note of issue 8).
    train: TrainConfig = TrainConfig(steps=2500, optimizer="adam", learning_rate=2e-3, schedule="cosine",
                                     clip_norm=1.0, log_every=50, checkpoint_every=500)


def smoke() -> Config:
    return Config(batch_size=4, data=TaskConfig(max_length=4, eval_lengths=(4, 8), eval_batch=8),
                  net=NetConfig(controller_features=16, memory_slots=16, memory_width=8, lstm_hidden=16,
                                lstm_layers=1),
                  train=TrainConfig(steps=20, learning_rate=1e-3, clip_norm=10.0, log_every=5, checkpoint_every=10))


def quick() -> Config:
    return Config()


def paper() -> Config:
    return Config(batch_size=1, data=TaskConfig(max_length=20, eval_lengths=(10, 20, 30, 50, 120)),
                  train=TrainConfig(steps=200_000, optimizer="rmsprop", learning_rate=1e-4, clip_norm=10.0,
                                    log_every=500, checkpoint_every=10_000))


PRESETS = {"smoke": smoke, "quick": quick, "paper": paper}
VARIANTS = f"variants: model={'|'.join(MODELS)}  task={'|'.join(ntm_tasks.TASKS)}  (main: ntm on copy)"


def _generate(cfg: Config, rng: np.random.Generator, batch: int, length: int | None = None,
              repeats: int | None = None) -> ntm_tasks.Batch:
    d = cfg.data
    if cfg.task == "copy":
        max_length = d.max_length if length is None else length
        return ntm_tasks.copy(rng, batch, width=d.width, min_length=d.min_length, max_length=max_length,
                              lengths=None if length is None else np.full(batch, length))
    if cfg.task == "repeat_copy":
        return ntm_tasks.repeat_copy(rng, batch, width=d.width, min_length=d.min_length, max_length=d.max_length,
                                     max_repeats=d.max_repeats, length=length, repeats=repeats,
                                     repeat_scale=d.max_repeats)
    return ntm_tasks.associative_recall(rng, batch, width=max(d.width - 2, 1), max_items=d.max_items)


def _bits(logits, targets, mask):
    """Cost per sequence in bits: Σ over the output bits of the cross-entropy / ln 2, ``[B]``."""
    bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets)
    return jnp.sum(bce * mask[..., None], axis=(1, 2)) / math.log(2.0)


class NTMTask:
    """The harness's Task: batches generated from the step number, BCE loss, bits-per-sequence evaluation."""

    def __init__(self, cfg: Config):
        if cfg.model not in MODELS:
            raise ValueError(f"unknown model {cfg.model!r}; valid: {', '.join(MODELS)}")
        if cfg.task not in ntm_tasks.TASKS:
            raise ValueError(f"unknown task {cfg.task!r}; valid: {', '.join(ntm_tasks.TASKS)}")
        self.cfg = cfg
        sample = _generate(cfg, np.random.default_rng(0), 1)
        self.features = sample.inputs.shape[-1], sample.targets.shape[-1]
        self.graphdef = nnx.graphdef(self._model(jax.random.key(0)))

    def _model(self, rng):
        n, (i, o) = self.cfg.net, self.features
        rngs = nnx.Rngs(params=rng)
        if self.cfg.model == "ntm":
            return NTM(i, o, rngs=rngs, controller=n.controller, controller_features=n.controller_features,
                       memory_slots=n.memory_slots, memory_width=n.memory_width, read_heads=n.read_heads)
        return LSTMBaseline(i, o, rngs=rngs, hidden_features=n.lstm_hidden, layers=n.lstm_layers)

    def model(self, params):
        return nnx.merge(self.graphdef, params)

    def init(self, rng):
        return nnx.state(self._model(rng), nnx.Param)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.cfg.train.seed, 1, step))
        return _generate(self.cfg, rng, self.cfg.batch_size).as_dict()

    def loss(self, params, batch, rng):
        del rng
        logits, _ = self.model(params)(batch["inputs"])
        bits = _bits(logits, batch["targets"], batch["mask"])
        n_bits = jnp.maximum(jnp.sum(batch["mask"]) * batch["targets"].shape[-1], 1.0)
        return jnp.sum(bits) * math.log(2.0) / n_bits, {"bits": jnp.mean(bits)}  # mean BCE per bit; bits/seq

    def _eval_batch(self, params, batch: ntm_tasks.Batch) -> tuple[float, float]:
        logits, _ = self._forward(params, jnp.asarray(batch.inputs))
        bits = _bits(logits, jnp.asarray(batch.targets), jnp.asarray(batch.mask))
        wrong = np.sum((np.asarray(logits) > 0) != (batch.targets > 0.5), axis=-1) * batch.mask
        return float(jnp.mean(bits)), float(np.mean(np.sum(wrong, axis=1)))

    @property
    def _forward(self):
        if not hasattr(self, "_forward_fn"):
            self._forward_fn = jax.jit(lambda params, x: self.model(params)(x))
        return self._forward_fn

    def evaluate(self, params) -> dict[str, float]:
        d = self.cfg.data
        rng = np.random.default_rng((self.cfg.train.seed, 2))
        bits, errors = self._eval_batch(params, _generate(self.cfg, rng, d.eval_batch))
        metrics = {"bits_per_sequence": bits, "bit_errors": errors}
        if self.cfg.task == "copy":
            for n in d.eval_lengths:
                if n > self.cfg.net.memory_slots and self.cfg.model == "ntm":
                    continue  # a sequence longer than the memory cannot be stored
                b = _generate(self.cfg, np.random.default_rng((self.cfg.train.seed, 3, n)), d.eval_batch, n)
                metrics[f"bits_len_{n}"], metrics[f"bit_errors_len_{n}"] = self._eval_batch(params, b)
        if self.cfg.task == "repeat_copy":  # Fig. 8: twice the longest training length, or twice the repeats
            for n, r in repeat_generalisation(d):
                b = _generate(self.cfg, np.random.default_rng((self.cfg.train.seed, 4, n, r)), d.eval_batch, n, r)
                metrics[f"bits_len_{n}_rep_{r}"], metrics[f"bit_errors_len_{n}_rep_{r}"] = self._eval_batch(params, b)
        return metrics


def repeat_generalisation(d: TaskConfig) -> list[tuple[int, int]]:
    """(length, repeats) of the repeat-copy generalisation tests: the longest training case, then twice its length,
    then twice its repeats."""
    return [(d.max_length, d.max_repeats), (2 * d.max_length, d.max_repeats), (d.max_length, 2 * d.max_repeats)]


# --- plots --------------------------------------------------------------------------------------------------------
def plot_learning_curves(runs: dict[str, Path | list[Path]], batch_size: int, path: Path, title: str) -> None:
    plot_metric_curves(runs, "bits", path, title, "cost per sequence (bits)", x_per_step=batch_size,
                       xlabel="sequences seen", log_y=True)


def plot_generalisation(summaries: dict[str, dict], lengths, train_max: int, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for model, s in summaries.items():
        xs = [n for n in lengths if f"bits_len_{n}" in s["eval"]]
        ax.plot(xs, [max(s["eval"][f"bits_len_{n}"], 1e-4) for n in xs], marker="o", label=model)
    ax.axvline(train_max, color="gray", ls="--", lw=1, label=f"longest training length ({train_max})")
    ax.set_xlabel("copy length")
    ax.set_ylabel("cost per sequence (bits)")
    ax.set_yscale("log")
    save_line_plot(fig, ax, path, "copy: generalisation to longer sequences")


def plot_weightings(task: NTMTask, params, path: Path) -> None:
    """Fig. 6 analogue on one copy sequence of twice the longest training length (if it fits the memory)."""
    cfg = task.cfg
    n = min(2 * cfg.data.max_length, cfg.net.memory_slots)
    b = _generate(cfg, np.random.default_rng(7), 1, n) if cfg.task == "copy" else _generate(
        cfg, np.random.default_rng(7), 1)
    logits, trace = jax.jit(lambda p, x: task.model(p)(x))(params, jnp.asarray(b.inputs))
    steps = int(np.max(np.nonzero(b.mask[0] + np.abs(b.inputs[0]).sum(-1))[0])) + 1
    used = np.nonzero(np.asarray(trace["write_weights"][0, :steps]).max(0) + np.asarray(
        trace["read_weights"][0, :steps, 0]).max(0) > 0.05)[0]
    lo, hi = (int(used.min()), int(used.max()) + 1) if used.size else (0, cfg.net.memory_slots)
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    panels = [(b.inputs[0, :steps].T, "inputs"), (np.asarray(jax.nn.sigmoid(logits[0, :steps])).T, "outputs"),
              (np.asarray(trace["write_weights"][0, :steps, lo:hi]).T, "write weightings"),
              (np.asarray(trace["read_weights"][0, :steps, 0, lo:hi]).T, "read weightings")]
    for ax, (img, name) in zip(axes.ravel(), panels, strict=True):
        ax.imshow(img, aspect="auto", cmap="gray_r", interpolation="nearest")
        ax.set_title(name, fontsize=9)
    for ax in axes[1]:
        ax.set_xlabel("time")
        ax.set_ylabel(f"memory slot ({lo}..{hi - 1})")
    fig.suptitle(f"NTM on {cfg.task}" + (f", length {n}" if cfg.task == "copy" else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_one(cfg: Config, out: Path, preset: str, mesh=None) -> dict:
    task = NTMTask(cfg)
    config = {"experiment": "ntm", "preset": preset, **to_dict(dataclasses.replace(cfg, models=()))}
    summary, params = train(task, cfg.train, out, config=config, mesh=mesh)
    plot_learning_curves({cfg.model: out}, cfg.batch_size, out / "learning_curve.png", f"{cfg.task}")
    if cfg.model == "ntm":
        plot_weightings(task, params, out / "weightings.png")
    if cfg.task == "copy":
        plot_generalisation({cfg.model: summary}, cfg.data.eval_lengths, cfg.data.max_length,
                            out / "generalisation.png")
    return summary


def main(argv=None) -> dict | None:
    parsed = cli.parse("ntm", PRESETS, argv, default_preset="quick", variants=VARIANTS,
                       choices={"task": ntm_tasks.TASKS, "model": MODELS, "models": MODELS})
    if parsed is None:
        return None
    cfg, out, preset, mesh = parsed
    with cli.run_dir(parsed):
        summaries, dirs = cli.run_models(parsed, run_one, MODELS)
        out = Path(out)
        if cli.is_comparison(cfg) and jax.process_index() == 0:
            plot_learning_curves(dirs, cfg.batch_size, out / "learning_curve.png", f"{cfg.task} ({preset})")
            if cfg.task == "copy":
                plot_generalisation(summaries, cfg.data.eval_lengths, cfg.data.max_length,
                                    out / "generalisation.png")
            rundir.write_json(out / "comparison.json", {
                "task": cfg.task, "preset": preset, "batch_size": cfg.batch_size,
                "train_max_length": cfg.data.max_length, "eval_lengths": cfg.data.eval_lengths,
                "command": cli.command_line("ntm", argv), "summaries": summaries})
    print(f"\nntm, {cfg.task}, preset {preset}: cost in bits per sequence")
    for m, s in summaries.items():
        print(f"  {m}: " + ", ".join(f"{k} {v:.3g}" for k, v in s["eval"].items() if k.startswith("bits")))
    print(f"plots in {out}")
    return summaries


def publish(run_dir: Path, results: Path, block: str, readme: Path | None = None) -> str:
    """Copy a comparison run's JSON and plots to ``results`` and write the README block ``block`` from them."""
    run_dir, results = Path(run_dir), Path(results)
    comparison = stage_comparison(run_dir, results)
    images = []
    for name in ("learning_curve.png", "generalisation.png"):
        if (run_dir / name).exists():
            shutil.copy(run_dir / name, results / name)
            images.append(name)
    for model in comparison["summaries"]:
        if (row_run(run_dir, model) / "weightings.png").exists():
            shutil.copy(row_run(run_dir, model) / "weightings.png", results / f"weightings_{model}.png")
            images.append(f"weightings_{model}.png")
    summaries = comparison["summaries"]
    first = next(iter(summaries.values()))
    # generalisation columns, in the order evaluated: copy len_<n>, repeat copy len_<n>_rep_<r>
    tests = list(dict.fromkeys(k[len("bits_"):] for s in summaries.values() for k in s["eval"]
                               if k.startswith("bits_len_")))

    def title(test: str) -> str:
        parts = test.split("_")  # len, n[, rep, r]
        return f"length {parts[1]}" + (f" x {parts[3]} copies" if len(parts) == 4 else "") + ": bits (wrong bits)"

    head = ["model", "bits/seq (training distribution)", "wrong bits/seq"] + [title(t) for t in tests] + ["wall time"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, s in summaries.items():
        e = s["eval"]
        cells = [f"{e['bits_per_sequence']:.3g}", f"{e['bit_errors']:.2f}"] + [
            f"{e[f'bits_{t}']:.3g} ({e[f'bit_errors_{t}']:.2f})" if f"bits_{t}" in e else "–" for t in tests]
        rows.append(f"| {model} | " + " | ".join(cells) + f" | {s['wall_s']:.0f} s |")
    lengths_note = f" (training lengths up to {comparison['train_max_length']})" if comparison["task"] != \
        "associative_recall" else ""
    text = "\n".join([
        f"Device: {first['device']}; task `{comparison['task']}`, preset `{comparison['preset']}`, "
        f"{first['steps']} steps of {comparison['batch_size']} sequences per model{lengths_note}; written by "
        f"`python -m experiments.publish ntm {run_dir} --block {block}` "
        f"from `{comparison['command']}`. Cost per sequence in bits (cross-entropy summed over the output bits); "
        "in brackets the mean number of wrong output bits per sequence.",
        "",
        *rows,
        "",
        *[f"![{name[:-4]}]({repo_relative(results / name)})" for name in images],
    ])
    update_readme_block(block, text, readme)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
