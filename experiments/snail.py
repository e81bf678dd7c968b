"""SNAIL few-shot classification on rendered glyphs (Mishra et al. 2018, §5.1 at our scale).

    python -m experiments.snail --preset smoke --out /tmp/snail         # main variant: snail, 5-way 1-shot
    python -m experiments.snail --set models=snail,tc-only,attn-only     # the paper's ablation
    python -m experiments.snail --set ways=20 --set shots=5 --set split=script
    python -m experiments.snail --list

Data: :mod:`experiments.data.glyphs` (characters of 13 scripts rendered from matplotlib's DejaVu
fonts with random distortions, an Omniglot stand-in); classes split by character (default) or by
script. An episode is N·K labelled images in random order and one query; the model reads the
sequence of ``[embedding; one-hot label]`` and is trained with cross-entropy on the query.
Each run writes, beside config.json, metrics.jsonl, checkpoints and summary.json, ``episode.png``
(a test episode: the support set, the query, the prediction and the last attention block's weights
from the query to each support image). Eval metrics: ``accuracy`` (test classes, ``eval_episodes``
episodes) and ``train_accuracy`` (training classes, new drawings and episodes).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attn_jax.nn.snail import MODELS, NORMS, AttentionBlock, SNAILClassifier
from attn_jax.train import TrainConfig, add_to_summary, cli, train
from attn_jax.train.config import to_dict
from attn_jax.train.loop import make_optimizer
from attn_jax.train.report import plot_metric_curves, pyplot
from experiments import tables
from experiments.data import glyphs
from experiments.readme import repo_relative, row_config, row_run, update_readme_block

# Table 1 of the paper (Omniglot), for the docs next to ours: (ways, shots) -> accuracy %
PAPER = {(5, 1): 99.07, (5, 5): 99.78, (20, 1): 97.64, (20, 5): 99.36}


@dataclasses.dataclass(frozen=True)
class Config:
    model: str = "snail"  # snail | tc-only (no attention blocks) | attn-only (no TC blocks)
    models: tuple[str, ...] = ()  # comparison mode
    ways: int = 5  # N: classes per episode
    shots: int = 1  # K: labelled images per class in an episode
    split: str = "character"  # character | script
    drawings: int = 20  # renderings per character (Omniglot: 20 drawers)
    batch_size: int = 32  # episodes per step
    eval_episodes: int = 1000  # test-class episodes per evaluation (a quarter as many for train_accuracy)
    filters: int = 64  # embedding network
    tc_filters: int = 128  # filters of each dense block in the TC blocks
    key_sizes: tuple[int, ...] = (64, 256, 512)  # the three attention blocks
    value_sizes: tuple[int, ...] = (32, 128, 256)  # value size of each attention block, paired with key_sizes
    norm: str = "moving"  # embedding standardisation: moving (statistics tracked in training, the same at test) | none
    norm_decay: float = 0.9  # the moving statistics: s <- decay s + (1 - decay) (this batch's)
    match_parameters: bool = True  # tc-only / attn-only widened to the snail's parameter count (matched_config)
    curve_episodes: int = 256  # test-class episodes at each eval_every point (the held-out learning curve)
    # 1200 steps: the model sits at chance for its first ~300 steps, then learns
    train: TrainConfig = TrainConfig(steps=1200, optimizer="adam", learning_rate=1e-3, schedule="cosine",
                                     warmup_steps=50, clip_norm=1.0, log_every=50, checkpoint_every=300,
                                     eval_every=100)


def smoke() -> Config:
    return Config(drawings=4, batch_size=4, eval_episodes=32, curve_episodes=8, filters=8, tc_filters=8,
                  key_sizes=(8, 8, 8), value_sizes=(4, 4, 4),
                  train=TrainConfig(steps=20, learning_rate=1e-3, log_every=5, checkpoint_every=10, eval_every=10))


def quick() -> Config:
    return Config()


def paper() -> Config:
    """The paper's batch and longer training (it trains on Omniglot for far longer, with rotations as classes)."""
    return Config(eval_episodes=5000, train=TrainConfig(steps=40_000, learning_rate=1e-3, schedule="cosine",
                                                        warmup_steps=500, clip_norm=1.0, log_every=200,
                                                        checkpoint_every=2000))


def small() -> Config:
    """The published tables' model (0.26M parameters at 5-way 1-shot): half the embedding's filters, a quarter of
    the TC filters and of the attention sizes, so that four settings x three seeds fit the CPU budget; 20-way
    5-shot episodes are 101 images, 17 times a 5-way 1-shot one. Steps and batch are set per setting."""
    return Config(filters=32, tc_filters=32, key_sizes=(16, 64, 128), value_sizes=(8, 32, 64))


PRESETS = {"smoke": smoke, "quick": quick, "small": small, "paper": paper}
MOVING = ("norm_mean", "norm_var")  # the parameters a moving average sets (FewShotTask.optimizer)
VARIANTS = (f"variants: model={'|'.join(MODELS)}  ways=5|20  shots=1|5  split=character|script  "
            "(main: snail, 5-way 1-shot, character split)")


# --- models at matched parameter counts ---------------------------------------------------------------------------
def parameter_count(cfg: Config) -> int:
    """Parameters of ``cfg``'s model (built abstractly: nothing is initialised)."""
    model = nnx.eval_shape(lambda: SNAILClassifier(
        cfg.ways, cfg.shots, model=cfg.model, filters=cfg.filters, tc_filters=cfg.tc_filters,
        attention=tuple(zip(cfg.key_sizes, cfg.value_sizes, strict=True)), norm=cfg.norm, rngs=nnx.Rngs(0)))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _widen(cfg: Config, width: float) -> Config:
    """The ablation model at ``width``: tc-only's TC filters, or attn-only's key and value sizes scaled."""
    if cfg.model == "tc-only":
        return dataclasses.replace(cfg, tc_filters=max(1, round(width)))
    return dataclasses.replace(cfg, key_sizes=tuple(max(1, round(k * width)) for k in cfg.key_sizes),
                               value_sizes=tuple(max(1, round(v * width)) for v in cfg.value_sizes))


def matched_config(cfg: Config) -> Config:
    """``cfg`` with the ablation model widened to the snail's parameter count (same embedding): tc-only (no
    attention blocks) gets more TC filters, attn-only (no TC blocks) larger keys and values, each scaled by the
    width whose count is closest (bisection: the count grows with the width). The snail, and any model when
    ``match_parameters`` is off, is returned as it is."""
    if cfg.model == "snail" or not cfg.match_parameters:
        return cfg
    target = parameter_count(dataclasses.replace(cfg, model="snail"))
    low, high = (1.0, 64.0 * cfg.tc_filters) if cfg.model == "tc-only" else (1.0 / min(cfg.value_sizes), 64.0)
    for _ in range(40):
        mid = (low + high) / 2 if cfg.model == "attn-only" else float((int(low) + int(high)) // 2)
        if parameter_count(_widen(cfg, mid)) < target:
            low = mid
        else:
            high = mid
        if cfg.model == "tc-only" and int(high) - int(low) <= 1:
            break
    return min((_widen(cfg, w) for w in (low, high)), key=lambda c: abs(parameter_count(c) - target))


class FewShotTask:
    def __init__(self, cfg: Config):
        if cfg.model not in MODELS:
            raise ValueError(f"unknown model {cfg.model!r}; valid: {', '.join(MODELS)}")
        if len(cfg.key_sizes) != len(cfg.value_sizes):
            raise ValueError(f"key_sizes {cfg.key_sizes} and value_sizes {cfg.value_sizes} must pair up")
        self.cfg = cfg
        self.glyphs = glyphs.load(cfg.drawings)
        self.train_classes, self.test_classes = self.glyphs.split(cfg.split)
        for name, classes in (("train", self.train_classes), ("test", self.test_classes)):
            if len(classes) < cfg.ways:
                raise ValueError(f"{cfg.ways}-way episodes need {cfg.ways} {name} classes, the split has "
                                 f"{len(classes)}")
        if cfg.shots + 1 > cfg.drawings:
            raise ValueError(f"shots {cfg.shots} + a query need {cfg.shots + 1} drawings, have {cfg.drawings}")
        self.graphdef = nnx.graphdef(self._model(jax.random.key(0)))

    def _model(self, rng) -> SNAILClassifier:
        c = self.cfg
        return SNAILClassifier(c.ways, c.shots, model=c.model, filters=c.filters, tc_filters=c.tc_filters,
                               attention=tuple(zip(c.key_sizes, c.value_sizes, strict=True)), norm=c.norm,
                               rngs=nnx.Rngs(params=rng))

    def model(self, params) -> SNAILClassifier:
        return nnx.merge(self.graphdef, params)

    def init(self, rng):
        """Parameters; the moving statistics start at the moments of the run's first training batch."""
        model = self._model(rng)
        if self.cfg.norm == "moving":
            b = self.batch(0)
            mean, var = model.embedding_moments(model.embedding(jnp.asarray(b["images"])))
            model.norm_mean[...], model.norm_var[...] = mean, var
        return nnx.state(model, nnx.Param)

    def optimizer(self, cfg: TrainConfig) -> optax.GradientTransformation:
        """The network by the config's optimizer; ``norm_mean`` / ``norm_var`` by SGD with rate 1 - norm_decay on
        the gradient ``s - (this batch's s)`` that :meth:`loss` gives them: exactly a moving average."""
        moving = optax.sgd(1.0 - self.cfg.norm_decay)

        def labels(params):
            return jax.tree_util.tree_map_with_path(
                lambda path, _: "moving" if any(getattr(k, "key", None) in MOVING for k in path) else "model", params)

        return optax.multi_transform({"model": make_optimizer(cfg), "moving": moving}, labels)

    def episodes(self, rng: np.random.Generator, classes: np.ndarray, batch: int) -> dict[str, np.ndarray]:
        return glyphs.episode(rng, self.glyphs, classes, self.cfg.ways, self.cfg.shots, batch)

    def batch(self, step: int):
        rng = np.random.default_rng((self.cfg.train.seed, 11, step))
        return self.episodes(rng, self.train_classes, self.cfg.batch_size)

    def loss(self, params, batch, rng):
        del rng
        model = self.model(params)
        logits, e = model(batch["images"], batch["labels"], return_embedding=True)
        logits, target = logits[:, -1], batch["labels"][:, -1]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()
        aux = {"accuracy": jnp.mean(jnp.argmax(logits, -1) == target)}
        if self.cfg.norm == "moving":  # zero-valued: gives the statistics the gradient of their moving average
            mean, var = (jax.lax.stop_gradient(m) for m in model.embedding_moments(e))
            fit = 0.5 * (jnp.sum((params["norm_mean"][...] - mean) ** 2)
                         + jnp.sum((params["norm_var"][...] - var) ** 2))
            loss = loss + fit - jax.lax.stop_gradient(fit)
        return loss, aux

    @functools.cached_property
    def _predict(self):
        return jax.jit(lambda p, im, lab: jnp.argmax(self.model(p)(im, lab)[:, -1], -1))

    def accuracy(self, params, classes: np.ndarray, episodes: int, seed: int) -> float:
        rng, correct, done = np.random.default_rng((self.cfg.train.seed, seed)), 0, 0
        while done < episodes:
            n = min(64, episodes - done)
            b = self.episodes(rng, classes, n)
            hit = np.asarray(self._predict(params, b["images"], b["labels"])) == b["labels"][:, -1]
            correct += int(np.sum(hit))
            done += n
        return correct / episodes

    def curve_metrics(self, params) -> dict[str, float]:
        """The held-out learning curve's point: test-class accuracy on ``curve_episodes`` episodes."""
        return {"accuracy": self.accuracy(params, self.test_classes, self.cfg.curve_episodes, 14)}

    def evaluate(self, params) -> dict[str, float]:
        n = self.cfg.eval_episodes
        return {"accuracy": self.accuracy(params, self.test_classes, n, 12),
                "train_accuracy": self.accuracy(params, self.train_classes, max(n // 4, 1), 13)}


# --- plots ----------------------------------------------------------------------------------------------------------
def plot_episode(task: FewShotTask, params, path: Path) -> None:
    """A test episode: support images with labels, the query with its prediction, and the query's weights in
    the last attention block (over the support images and itself)."""
    b = task.episodes(np.random.default_rng(5), task.test_classes, 1)  # one episode: nothing depends on the batch
    model = task.model(params)
    logits = model(b["images"], b["labels"])[0, -1]
    attention = [layer for layer in model.layers if isinstance(layer, AttentionBlock)]
    weights = None
    if attention:
        x = model.features(jnp.asarray(b["images"]), jnp.asarray(b["labels"]))
        for layer in model.layers:
            if layer is attention[-1]:
                weights = np.asarray(layer.weights(x))[0, -1]
                break
            x = layer(x)
    t = b["images"].shape[1]
    plt = pyplot()
    fig, axes = plt.subplots(1, t, figsize=(1.3 * t, 1.9))
    for i, ax in enumerate(np.atleast_1d(axes)):
        ax.imshow(b["images"][0, i], cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        label = b["labels"][0, i]
        title = f"label {label}" if i < t - 1 else f"query: {int(jnp.argmax(logits))}\n(true {label})"
        if weights is not None:
            title += f"\nattn {weights[i]:.2f}"
        ax.set_title(title, fontsize=7)
    fig.suptitle(f"{task.cfg.model}, {task.cfg.ways}-way {task.cfg.shots}-shot, a test episode", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- runs -----------------------------------------------------------------------------------------------------------
def run_one(cfg: Config, out: Path, preset: str, mesh=None) -> dict:
    cfg = matched_config(cfg)
    task = FewShotTask(cfg)
    config = {"experiment": "snail", "preset": preset, **to_dict(dataclasses.replace(cfg, models=()))}
    summary, params = train(task, cfg.train, out, config=config, mesh=mesh)
    if jax.process_index() == 0:
        plot_episode(task, params, out / "episode.png")
    return add_to_summary(out, summary, {"classes": {"train": len(task.train_classes),
                                                     "test": len(task.test_classes)}})


def main(argv=None) -> dict | None:
    parsed = cli.parse("snail", PRESETS, argv, default_preset="quick", variants=VARIANTS,
                       choices={"model": MODELS, "models": MODELS, "norm": NORMS})
    if parsed is None:
        return None
    cfg, out, preset, mesh = parsed
    with cli.run_dir(parsed):
        summaries, dirs = cli.run_models(parsed, run_one, MODELS)
        out = Path(out)
        if cli.is_comparison(cfg) and jax.process_index() == 0:
            plot_metric_curves(dirs, "accuracy", out / "learning_curve.png",
                               f"{cfg.ways}-way {cfg.shots}-shot, {cfg.split} split ({preset})",
                               "query accuracy (training episodes)")
            cli.save_comparison(out, "snail", argv, summaries, preset=preset, ways=cfg.ways, shots=cfg.shots,
                                split=cfg.split, batch_size=cfg.batch_size, eval_episodes=cfg.eval_episodes)
    print(f"\nsnail, {cfg.ways}-way {cfg.shots}-shot, {cfg.split} split, preset {preset}: query accuracy")
    for m, s in summaries.items():
        print(f"  {m}: test {s['eval']['accuracy']:.4f}, train classes {s['eval']['train_accuracy']:.4f}")
    return summaries


def setting_name(ways: int, shots: int) -> str:
    """A settings-table row: ``5-way 1-shot``."""
    return f"{ways}-way {shots}-shot"


def _load(run_dirs: list[Path]) -> dict[Path, dict]:
    found = {}
    for d in run_dirs:
        if not (d / "comparison.json").is_file():
            raise SystemExit(f"{d} holds no comparison.json: publish runs made with --set seeds=... (>= 1 seed), "
                             "or a published settings table")
        found[d] = json.loads((d / "comparison.json").read_text())
    return found


def setting_slug(row: str) -> str:
    """A settings row as a file-name part: ``20-way 5-shot`` -> ``20w5s``."""
    ways, shots = (int(part.split("-")[0]) for part in row.split())
    return f"{ways}w{shots}s"


def _keep(kept: dict[Path, dict], table: dict, configs: dict[str, dict]) -> tuple[dict, list[tuple[Path, str]]]:
    """``table`` with the rows of the published settings tables ``kept`` (their run folders gone: a later sitting
    adds settings). A kept row must be of the same split and, at its own ways and shots, have the parameter count
    of the folders' model widths (so it is the same model). Returns the joined table and the kept tables' curve
    figures to copy: (source file, name in the new folder)."""
    c = next(iter(configs.values()))
    figures = []
    for source, published in kept.items():
        if published.get("task", {}).get("split") != c["split"]:
            raise SystemExit(f"{source}: split {published.get('task', {}).get('split')}, the runs {c['split']}")
        for name, row in published["rows"].items():
            base = Config(**{k: c[k] for k in ("filters", "tc_filters", "split", "norm")}, ways=row["ways"],
                          shots=row["shots"], key_sizes=tuple(c["key_sizes"]), value_sizes=tuple(c["value_sizes"]))
            if parameter_count(base) != row["parameters"]:
                raise SystemExit(f"{source}: row {name} has {row['parameters']:,} parameters; the runs' widths give "
                                 f"{parameter_count(base):,} at its setting: not the same model")
        try:
            table = tables.keep_rows(published, table)
        except ValueError as err:
            raise SystemExit(f"{source}: {err}") from None
        if (source / "learning_curve.png").is_file():  # drawn when every row of that table had its folder
            slugs = "_".join(setting_slug(r) for r in published["rows"])
            figures.append((source / "learning_curve.png", f"learning_curve_{slugs}.png"))
        figures += [(f, f.name) for f in sorted(source.glob("learning_curve_*.png"))]
    return table, figures


def _curves(seed_dirs: dict[str, list[Path]], path: Path, title: str) -> None:
    plot_metric_curves(seed_dirs, "eval/accuracy", path, title, "query accuracy, test classes (held-out)")


def _ablation_table(run_dir: Path, comparison: dict, results: Path, block: str) -> str:
    """Rows by model (snail, tc-only, attn-only) of one setting, each at its matched widths."""
    summaries = comparison["summaries"]
    table = tables.from_summaries(summaries, comparison["command"], metrics=["accuracy", "train_accuracy"])
    setting = (comparison["ways"], comparison["shots"])
    table["task"] = {"setting": setting_name(*setting), "split": comparison["split"],
                     "batch_size": comparison["batch_size"], "eval_episodes": comparison["eval_episodes"]}
    for model, row in table["rows"].items():
        c = row_config(run_dir, model)
        row.update(tc_filters=c["tc_filters"], key_sizes=c["key_sizes"], value_sizes=c["value_sizes"],
                   matched=c.get("match_parameters", False))
    tables.write(results, table)
    seed_dirs = {m: [cli.seed_dir(run_dir, m, k) for k in table["seeds"]] for m in summaries}
    _curves(seed_dirs, results / "learning_curve.png", f"{setting_name(*setting)}: the ablation")
    images = ["learning_curve.png"]
    for model in summaries:
        if (row_run(run_dir, model) / "episode.png").exists():
            shutil.copy(row_run(run_dir, model) / "episode.png", results / f"episode_{model}.png")
            images.append(f"episode_{model}.png")
    rows = table["rows"]
    extra = {"parameters": {r: f"{v['parameters']:,}" for r, v in rows.items()},
             "widths (TC filters; keys / values)": {
                 r: (f"{v['tc_filters']}; " if r != "attn-only" else "–; ")
                 + ("–" if r == "tc-only" else f"{'/'.join(map(str, v['key_sizes']))} / "
                    f"{'/'.join(map(str, v['value_sizes']))}") for r, v in rows.items()},
             "wall time / run": {r: f"{v['wall_s'] / 60:.1f} min" for r, v in rows.items()}}
    first = next(iter(summaries.values()))
    classes = first["classes"]
    return "\n".join([
        f"Ablation. Device: {table['provenance']['device']}; commit "
        f"{tables.short_commit(table['provenance']['commit'])}; {setting_name(*setting)}, {comparison['split']} "
        f"split ({classes['train']} training / {classes['test']} test characters); {first['steps']} steps of "
        f"{comparison['batch_size']} episodes per run; seeds {', '.join(map(str, table['seeds']))}; accuracy of "
        f"the query on {comparison['eval_episodes']} test-class episodes (training classes: a quarter as many "
        f"new episodes); tc-only and attn-only widened to the snail's parameter count. Written by `python -m "
        f"experiments.publish snail {run_dir} --block {block}"
        + (f" --table {results.name}" if results.name != block else "") + f"` from `{comparison['command']}`.",
        "", tables.markdown(table, [("accuracy", "test accuracy", ".3f"),
                                    ("train_accuracy", "training-class accuracy", ".3f")], extra=extra),
        "", *[f"![{name[:-4]}]({repo_relative(results / name)})" for name in images]])


def _settings_table(found: dict[Path, dict], results: Path, block: str, kept: dict[Path, dict]) -> str:
    """A row per N-way K-shot setting (one folder each; its snail over seeds, any other model of the folder left
    to its ablation table), with the paper's number. ``kept``: published settings tables whose rows join
    verbatim (:func:`_keep`); the learning curves then come in one figure per source, named by its rows."""
    if not found:
        raise SystemExit("give at least one run folder: a published table alone has nothing new to add")
    rows, runs, configs = {}, {}, {}
    for d, comparison in sorted(found.items(), key=lambda kv: (kv[1]["ways"], kv[1]["shots"])):
        if "snail" not in comparison["summaries"]:
            raise SystemExit(f"{d} has no snail row for the settings table")
        name = setting_name(comparison["ways"], comparison["shots"])
        if name in rows:
            raise SystemExit(f"two folders hold the setting {name}")
        rows[name], runs[name], configs[name] = comparison["summaries"]["snail"], d, row_config(d, "snail")
    if len({(c["split"], c["filters"], c["tc_filters"], tuple(c["key_sizes"]), tuple(c["value_sizes"]))
            for c in configs.values()}) != 1:
        raise SystemExit("the settings' folders differ in split or model widths: one table compares settings only")
    table = tables.from_summaries(rows, [found[runs[r]]["command"] for r in rows],
                                  metrics=["accuracy", "train_accuracy"])
    table["task"] = {"split": next(iter(configs.values()))["split"]}
    for name, row in table["rows"].items():
        c, setting = configs[name], (configs[name]["ways"], configs[name]["shots"])
        row.update(ways=c["ways"], shots=c["shots"], batch_size=c["batch_size"], steps=rows[name]["steps"],
                   eval_episodes=c["eval_episodes"], paper_accuracy=PAPER.get(setting))
    table, figures = _keep(kept, table, configs)
    order = sorted(table["rows"], key=lambda r: (table["rows"][r]["ways"], table["rows"][r]["shots"]))
    table["rows"] = {r: table["rows"][r] for r in order}
    copies = [(src.read_bytes(), name) for src, name in figures]  # read before a kept table's folder is rewritten
    tables.write(results, table)
    seed_dirs = {r: [cli.seed_dir(runs[r], "snail", k) for k in table["seeds"]] for r in rows}
    curve = "learning_curve.png" if not kept else f"learning_curve_{'_'.join(map(setting_slug, rows))}.png"
    _curves(seed_dirs, results / curve, "the snail in each setting")
    for data, name in copies:
        (results / name).write_bytes(data)
    images = [name for _, name in copies] + [curve]
    for stale in results.glob("learning_curve*.png"):
        if stale.name not in images:
            stale.unlink()
    t = table["rows"]
    extra = {"chance": {r: f"{1 / v['ways']:.3f}" for r, v in t.items()},
             "steps x episodes": {r: f"{v['steps']} x {v['batch_size']}" for r, v in t.items()},
             "the paper (Omniglot)": {r: f"{v['paper_accuracy']}%" if v["paper_accuracy"] else "–"
                                      for r, v in t.items()},
             "wall time / run": {r: f"{v['wall_s'] / 60:.1f} min" for r, v in t.items()}}
    c = next(iter(configs.values()))
    first = next(iter(rows.values()))
    commands = table["provenance"]["command"]
    return "\n".join([
        f"Settings. Device: {table['provenance']['device']}; commit "
        f"{tables.short_commit(table['provenance']['commit'])}; the snail (filters {c['filters']}, TC filters "
        f"{c['tc_filters']}, keys {'/'.join(map(str, c['key_sizes']))}, values "
        f"{'/'.join(map(str, c['value_sizes']))}), {c['split']} split ({first['classes']['train']} training / "
        f"{first['classes']['test']} test characters), each setting trained separately; seeds "
        f"{', '.join(map(str, table['seeds']))}; accuracy of the query on test-class episodes. Written by `python -m "
        f"experiments.publish snail {' '.join(map(str, [*kept, *found]))} --block {block}"
        + (f" --table {results.name}" if results.name != block else "") + "` from "
        + ", ".join(f"`{command}`" for command in ([commands] if isinstance(commands, str) else commands)) + ".",
        "", tables.markdown(table, [("accuracy", "test accuracy", ".3f"),
                                    ("train_accuracy", "training-class accuracy", ".3f")], extra=extra),
        "", *[f"![{name[:-4]}]({repo_relative(results / name)})" for name in images]])


def publish(run_dirs, results: Path, block: str, readme: Path | None = None) -> str:
    """The published table ``results/comparison.json`` (experiments.tables' schema) and the docs block ``block``:
    from one comparison folder of several models, the ablation (rows by model); from several folders, one per
    N-way K-shot setting (or one folder of the snail alone), the settings table of their snail rows (rows
    ``5-way 1-shot`` ...; an ablation folder can give its setting's row). Both with the held-out learning
    curves over seeds."""
    results = Path(results)
    run_dirs = [Path(r) for r in ([run_dirs] if isinstance(run_dirs, (str, Path)) else run_dirs)]
    loaded = _load(run_dirs)
    kept = {d: c for d, c in loaded.items() if tables.is_published(c)}
    found = {d: c for d, c in loaded.items() if d not in kept}
    if not kept and len(run_dirs) == 1 and list(found[run_dirs[0]]["summaries"]) != ["snail"]:
        text = _ablation_table(run_dirs[0], found[run_dirs[0]], results, block)
    else:
        text = _settings_table(found, results, block, kept)
    update_readme_block(block, text, readme)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
