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
from attn_jax.train import TrainConfig, add_to_summary, cli, rundir, train
from attn_jax.train.config import to_dict
from attn_jax.train.loop import make_optimizer
from attn_jax.train.report import plot_metric_curves, pyplot
from experiments.data import glyphs
from experiments.readme import repo_relative, row_run, stage_comparison, update_readme_block

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
    # 1200 steps: the model sits at chance for its first ~300 steps, then learns
    train: TrainConfig = TrainConfig(steps=1200, optimizer="adam", learning_rate=1e-3, schedule="cosine",
                                     warmup_steps=50, clip_norm=1.0, log_every=50, checkpoint_every=300)


def smoke() -> Config:
    return Config(drawings=4, batch_size=4, eval_episodes=32, filters=8, tc_filters=8, key_sizes=(8, 8, 8),
                  value_sizes=(4, 4, 4), train=TrainConfig(steps=20, learning_rate=1e-3, log_every=5,
                                                           checkpoint_every=10))


def quick() -> Config:
    return Config()


def paper() -> Config:
    """The paper's batch and longer training (it trains on Omniglot for far longer, with rotations as classes)."""
    return Config(eval_episodes=5000, train=TrainConfig(steps=40_000, learning_rate=1e-3, schedule="cosine",
                                                        warmup_steps=500, clip_norm=1.0, log_every=200,
                                                        checkpoint_every=2000))


PRESETS = {"smoke": smoke, "quick": quick, "paper": paper}
MOVING = ("norm_mean", "norm_var")  # the parameters a moving average sets (FewShotTask.optimizer)
VARIANTS = (f"variants: model={'|'.join(MODELS)}  ways=5|20  shots=1|5  split=character|script  "
            "(main: snail, 5-way 1-shot, character split)")


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


def _ablation(run_dir: Path, results: Path, block: str) -> list[str]:
    comparison = stage_comparison(run_dir, results)
    images = []
    for model in comparison["summaries"]:
        if (row_run(run_dir, model) / "episode.png").exists():
            shutil.copy(row_run(run_dir, model) / "episode.png", results / f"episode_{model}.png")
            images.append(f"episode_{model}.png")
    if (run_dir / "learning_curve.png").exists():
        shutil.copy(run_dir / "learning_curve.png", results / "learning_curve.png")
        images.insert(0, "learning_curve.png")
    summaries = comparison["summaries"]
    first = next(iter(summaries.values()))
    setting = (comparison["ways"], comparison["shots"])
    rows = [f"| model | test accuracy ({comparison['eval_episodes']} episodes) | training-class accuracy | "
            "parameters | wall time |", "|---|---|---|---|---|"]
    for model, s in summaries.items():
        e = s["eval"]
        rows.append(f"| {model} | {100 * e['accuracy']:.1f}% | {100 * e['train_accuracy']:.1f}% | "
                    f"{s['parameters']:,} | {s['wall_s']:.0f} s |")
    if setting in PAPER:
        rows.append(f"| SNAIL, the paper (Omniglot) | {PAPER[setting]}% | | | |")
    classes = first["classes"]
    return [f"Ablation ({first['device']}): {setting[0]}-way {setting[1]}-shot, {comparison['split']} split "
            f"({classes['train']} training / {classes['test']} test characters), preset `{comparison['preset']}`, "
            f"{first['steps']} steps of {comparison['batch_size']} episodes, from `{comparison['command']}`.",
            "", *rows, "", *[f"![{name[:-4]}]({repo_relative(results / name)})" for name in images]]


def _settings(run_dirs: list[Path], results: Path) -> list[str]:
    rows = ["| setting | split | steps x episodes | test accuracy | training-class accuracy | the paper (Omniglot) | "
            "wall time |", "|---|---|---|---|---|---|---|"]
    device = ""
    for run in run_dirs:
        config, summary = (json.loads((run / f).read_text()) for f in ("config.json", "summary.json"))
        for f in ("config.json", "summary.json"):
            rundir.copy_json(run / f, results / f"{run.name}.{f}")
        setting, e, device = (config["ways"], config["shots"]), summary["eval"], summary["device"]
        paper = f"{PAPER[setting]}%" if setting in PAPER else "–"
        rows.append(f"| {config['model']}, {setting[0]}-way {setting[1]}-shot | {config['split']} | "
                    f"{summary['steps']} x {config['batch_size']} | {100 * e['accuracy']:.1f}% | "
                    f"{100 * e['train_accuracy']:.1f}% | {paper} | {summary['wall_s']:.0f} s |")
    return [f"N-way K-shot settings ({device}; each trained separately, the episode batch shrunk as episodes "
            "grow so that every run sees about the same number of images):", "", *rows]


def publish(run_dirs, results: Path, block: str, readme: Path | None = None) -> str:
    """The docs block from an ablation run (holds comparison.json) and/or single-setting runs."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    run_dirs = [Path(r) for r in ([run_dirs] if isinstance(run_dirs, (str, Path)) else run_dirs)]
    parts = [f"Written by `python -m experiments.publish snail {' '.join(map(str, run_dirs))} --block {block}` "
             "from the runs' JSON."]
    for run in [r for r in run_dirs if (r / "comparison.json").exists()]:
        parts += ["", *_ablation(run, results, block)]
    singles = [r for r in run_dirs if not (r / "comparison.json").exists()]
    if singles:
        parts += ["", *_settings(singles, results)]
    text = "\n".join(parts)
    update_readme_block(block, text, readme)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
