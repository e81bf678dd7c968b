"""SAGAN on handwritten digits: no attention vs self-attention at two feature resolutions (Zhang et al. 2018,
Table 1 at our scale).

    python -m experiments.sagan --preset smoke --out /tmp/sagan           # main variant: attention at 16 x 16
    python -m experiments.sagan --set models=none,8,16                     # the attention-placement comparison
    python -m experiments.sagan --list

Data: scikit-learn's bundled digits (1797 images of 8 x 8), upscaled to 16 x 16 and scaled to [-1, 1].
The GAN is class-conditional (projection discriminator), spectrally normalised in G and D, trained with the
hinge loss and the two time-scale update rule (Adam beta1 0, beta2 0.9; lr_D 4e-4, lr_G 1e-4). G and D are
updated simultaneously from the same point each step (the paper alternates them 1:1).

FID needs an Inception network we cannot download. The evaluation trains a digits classifier here (on the
training images; its held-out accuracy is reported) and measures the **classifier FD**: the Fréchet
distance between Gaussians fitted to its penultimate features of held-out real digits and of generated
ones, plus its **accuracy on class-conditional samples** (does G draw the class it was asked for). Not
FID: the numbers are not comparable with the paper's. Each run writes ``samples.png`` (one row per
class) and, with attention, ``attention.png`` (the generator's attention maps for chosen query locations:
Figs. 1 and 5 analogue). ``model`` names the variant: "none", or the feature-map side of the attention
block (8 or 16).
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attn_jax.nn.sagan import Discriminator, Generator, hinge_losses
from attn_jax.train import TrainConfig, cli, train
from attn_jax.train.config import to_dict
from attn_jax.train.report import parameter_count, pyplot
from experiments.data import digit_canvas
from experiments.readme import repo_relative, row_run, stage_comparison, update_readme_block

MODELS = ("none", "8", "16")
CLASSES = 10
# Table 1 of the paper (FID on ImageNet 128 x 128; lower is better) for the docs, by attention placement
PAPER_FID = {"none": 22.96, "feat8": 22.98, "feat16": 22.14, "feat32": 18.28, "feat64": 18.65}


@dataclasses.dataclass(frozen=True)
class Config:
    model: str = "16"  # none | 8 | 16: no attention, or the feature-map side of the attention block
    models: tuple[str, ...] = ()  # comparison mode
    size: int = 16  # image side (8 x 8 digits upscaled)
    z_features: int = 64  # size of the generator's Gaussian noise z
    channels: int = 64  # feature channels of every G and D block (a multiple of 8 with attention)
    batch_size: int = 64  # real images (and as many generated) per step
    lr_g: float = 1e-4  # generator Adam learning rate (beta1 0, beta2 0.9)
    lr_d: float = 4e-4  # discriminator Adam learning rate (beta1 0, beta2 0.9)
    eval_samples: int = 1000  # generated images per evaluation (classifier FD, sample accuracy)
    classifier_steps: int = 400  # training steps (batches of 64) of the evaluation classifier
    test_fraction: float = 0.2  # fraction of the digit images held out (classifier test, real FD features)
    train: TrainConfig = TrainConfig(steps=3000, log_every=100, checkpoint_every=1000)


def smoke() -> Config:
    return Config(z_features=8, channels=16, batch_size=16, eval_samples=64, classifier_steps=20,
                  train=TrainConfig(steps=20, log_every=5, checkpoint_every=10))


def quick() -> Config:
    """Under ~10 CPU minutes for the three models: 32 channels, batches of 32, 3000 steps."""
    return Config(channels=32, batch_size=32)


def paper() -> Config:
    return Config(size=32, channels=128, batch_size=128, eval_samples=5000, classifier_steps=2000,
                  train=TrainConfig(steps=50_000, log_every=500, checkpoint_every=5000))


PRESETS = {"smoke": smoke, "quick": quick, "paper": paper}
VARIANTS = f"variants: model={'|'.join(MODELS)} (or attention=...: the feature-map side; main: 16)"


def images_at(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The digits ``[N, size, size, 1]`` in [-1, 1] (nearest upscaling of 8 x 8) and labels."""
    images, labels = digit_canvas.digits()
    k = size // 8
    up = np.kron(images, np.ones((1, k, k), np.float32))
    return (2.0 * up - 1.0)[..., None], labels


# --- the evaluation classifier --------------------------------------------------------------------------------------
class DigitClassifier(nnx.Module):
    """Two conv blocks and a 64-feature penultimate layer: ``images [B, S, S, 1]`` -> (features, logits)."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.c1 = nnx.Conv(1, 32, (3, 3), rngs=rngs)
        self.c2 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
        self.fc = nnx.Linear(64, 64, rngs=rngs)
        self.out = nnx.Linear(64, CLASSES, rngs=rngs)

    def __call__(self, x):
        x = nnx.max_pool(jax.nn.relu(self.c1(x)), (2, 2), strides=(2, 2))
        x = nnx.max_pool(jax.nn.relu(self.c2(x)), (2, 2), strides=(2, 2))
        f = jax.nn.relu(self.fc(x.mean(axis=(1, 2))))
        return f, self.out(f)


@functools.lru_cache(maxsize=4)
def classifier(size: int, steps: int, test_fraction: float, seed: int = 0):
    """Train the evaluation classifier on the training digits; returns (graphdef, params, held-out accuracy)."""
    images, labels = images_at(size)
    train_idx, test_idx = digit_canvas.source_split(test_fraction, seed)
    model = DigitClassifier(rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)
    opt = optax.adam(1e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state, x, y):
        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, p)(x)[1], y).mean()

        g = jax.grad(loss)(params)
        u, state = opt.update(g, state, params)
        return optax.apply_updates(params, u), state

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        b = rng.choice(train_idx, 64)
        params, state = step(params, state, jnp.asarray(images[b]), jnp.asarray(labels[b]))
    logits = nnx.merge(graphdef, params)(jnp.asarray(images[test_idx]))[1]
    accuracy = float(np.mean(np.asarray(jnp.argmax(logits, -1)) == labels[test_idx]))
    return graphdef, params, accuracy


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a [N, F]`` and ``b [M, F]``."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    ridge = 1e-6 * np.eye(a.shape[1])  # dead (constant) features make the covariances singular
    cov_a, cov_b = np.cov(a, rowvar=False) + ridge, np.cov(b, rowvar=False) + ridge
    root = linalg.sqrtm(cov_a @ cov_b)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * np.real(root)))


# --- the task -------------------------------------------------------------------------------------------------------
class GANTask:
    def __init__(self, cfg: Config):
        if cfg.model not in MODELS:
            raise ValueError(f"unknown model {cfg.model!r}; valid: {', '.join(MODELS)}")
        if cfg.size not in (16, 32):
            raise ValueError(f"size must be 16 or 32 (8 x 8 digits upscaled), got {cfg.size}")
        self.cfg = cfg
        self.images, self.labels = images_at(cfg.size)
        self.train_idx, self.test_idx = digit_canvas.source_split(cfg.test_fraction)
        g, d = self._models(jax.random.key(0))
        self.g_def, self.d_def = nnx.graphdef(g), nnx.graphdef(d)

    def _models(self, rng) -> tuple[Generator, Discriminator]:
        c = self.cfg
        at = 0 if c.model == "none" else int(c.model)
        blocks = {16: 2, 32: 3}[c.size]
        kg, kd = jax.random.split(rng)
        g = Generator(CLASSES, rngs=nnx.Rngs(params=kg), z_features=c.z_features, channels=c.channels,
                      blocks=blocks, attention_at=at)
        d = Discriminator(CLASSES, rngs=nnx.Rngs(params=kd), channels=c.channels, blocks=blocks, size=c.size,
                          attention_at=at)
        return g, d

    def generator(self, params) -> Generator:
        return nnx.merge(self.g_def, params["g"])

    def init(self, rng):
        g, d = self._models(rng)
        return {"g": nnx.state(g, nnx.Param), "d": nnx.state(d, nnx.Param)}

    def optimizer(self, cfg: TrainConfig) -> optax.GradientTransformation:
        """Two time-scale Adam (beta1 0, beta2 0.9): lr_G for the generator, lr_D for the discriminator."""
        return optax.multi_transform({"g": optax.adam(self.cfg.lr_g, b1=0.0, b2=0.9),
                                      "d": optax.adam(self.cfg.lr_d, b1=0.0, b2=0.9)}, {"g": "g", "d": "d"})

    def batch(self, step: int):
        rng = np.random.default_rng((self.cfg.train.seed, 31, step))
        idx = rng.choice(self.train_idx, self.cfg.batch_size)
        return {"images": self.images[idx], "labels": self.labels[idx],
                "z": rng.standard_normal((self.cfg.batch_size, self.cfg.z_features)).astype(np.float32),
                "fake_labels": rng.integers(0, CLASSES, self.cfg.batch_size).astype(np.int32)}

    def loss(self, params, batch, rng):
        del rng
        g = self.generator(params)
        fake = g(batch["z"], batch["fake_labels"])
        d = nnx.merge(self.d_def, params["d"])
        d_frozen = nnx.merge(self.d_def, jax.lax.stop_gradient(params["d"]))
        d_loss, _ = hinge_losses(d(batch["images"], batch["labels"]),
                                 d(jax.lax.stop_gradient(fake), batch["fake_labels"]))
        _, g_loss = hinge_losses(jnp.zeros(()), d_frozen(fake, batch["fake_labels"]))
        # the reported loss is the generator's; the gradient is both players' (each only through its own loss)
        return g_loss + d_loss - jax.lax.stop_gradient(d_loss), {"d_loss": d_loss, "g_loss": g_loss}

    def samples(self, params, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.cfg.train.seed, seed))
        labels = np.arange(n) % CLASSES
        z = rng.standard_normal((n, self.cfg.z_features)).astype(np.float32)
        draw = jax.jit(lambda p, z, y: self.generator(p)(z, y))
        out = np.concatenate([np.asarray(draw(params, jnp.asarray(z[s:s + 250]), jnp.asarray(labels[s:s + 250])))
                              for s in range(0, n, 250)])
        return out, labels

    def parameter_count(self, params) -> dict[str, int]:
        """The generator's and the discriminator's sizes apart (the summary's ``parameters``)."""
        return {k: parameter_count(v) for k, v in params.items()}

    def evaluate(self, params) -> dict[str, float]:
        c = self.cfg
        graphdef, cparams, accuracy = classifier(c.size, c.classifier_steps, c.test_fraction)
        feats = jax.jit(lambda x: nnx.merge(graphdef, cparams)(x))
        fake, labels = self.samples(params, c.eval_samples, 41)
        f_fake, logits = (np.asarray(a) for a in feats(jnp.asarray(fake)))
        f_real = np.asarray(feats(jnp.asarray(self.images[self.test_idx]))[0])
        return {"classifier_fd": frechet_distance(f_real, f_fake),
                "sample_accuracy": float(np.mean(np.argmax(logits, -1) == labels)),
                "classifier_test_accuracy": accuracy}


# --- plots ----------------------------------------------------------------------------------------------------------
def plot_samples(task: GANTask, params, path: Path, per_class: int = 8) -> None:
    images, _ = task.samples(params, CLASSES * per_class, 51)
    grid = images[:, :, :, 0].reshape(per_class, CLASSES, task.cfg.size, task.cfg.size).transpose(1, 2, 0, 3)
    grid = grid.reshape(CLASSES * task.cfg.size, per_class * task.cfg.size)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(per_class * 0.6, CLASSES * 0.6))
    ax.imshow(grid, cmap="gray", vmin=-1, vmax=1)
    ax.set_yticks([task.cfg.size * (i + 0.5) for i in range(CLASSES)], [str(i) for i in range(CLASSES)])
    ax.set_xticks([])
    ax.set_title(f"SAGAN ({task.cfg.model}): one row per class", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_attention(task: GANTask, params, path: Path) -> None:
    """Figs. 1/5 analogue: generated digits with the generator's attention map for three query locations."""
    g = task.generator(params)
    z = jnp.asarray(np.random.default_rng(61).standard_normal((4, task.cfg.z_features)).astype(np.float32))
    labels = jnp.array([0, 3, 5, 8])
    images = np.asarray(g(z, labels))[..., 0]
    x = g.project(z).reshape(4, 4, 4, g.channels)
    for block in g.blocks:
        x = block(x, labels)
        if x.shape[1] == g.attention_at:
            break
    side = g.attention_at
    beta = np.asarray(g.attention.attention(x))  # [4, N, N]
    queries = [(side // 4, side // 4), (side // 2, side // 2), (3 * side // 4, side // 3)]
    plt = pyplot()
    fig, axes = plt.subplots(4, 1 + len(queries), figsize=(2 * (1 + len(queries)), 8))
    scale = task.cfg.size / side
    for r in range(4):
        axes[r, 0].imshow(images[r], cmap="gray", vmin=-1, vmax=1)
        for k, (qy, qx) in enumerate(queries):
            axes[r, 0].plot(qx * scale + scale / 2 - 0.5, qy * scale + scale / 2 - 0.5, "o", ms=5,
                            color=f"C{k + 1}")
            ax = axes[r, k + 1]
            ax.imshow(beta[r, qy * side + qx].reshape(side, side), cmap="magma")
            ax.plot(qx, qy, "o", ms=5, color=f"C{k + 1}")
            ax.set_title(f"query ({qy}, {qx})", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"generator self-attention at {side} x {side} (gamma = {float(g.attention.gamma[...]):.3f})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- runs -----------------------------------------------------------------------------------------------------------
def run_one(cfg: Config, out: Path, preset: str, mesh=None) -> dict:
    task = GANTask(cfg)
    config = {"experiment": "sagan", "preset": preset, **to_dict(dataclasses.replace(cfg, models=()))}
    summary, params = train(task, cfg.train, out, config=config, mesh=mesh)
    if jax.process_index() == 0:
        plot_samples(task, params, out / "samples.png")
        if cfg.model != "none":
            plot_attention(task, params, out / "attention.png")
    return summary


def main(argv=None) -> dict | None:
    parsed = cli.parse("sagan", PRESETS, argv, default_preset="quick", variants=VARIANTS,
                         aliases={"attention": "model"}, choices={"model": MODELS, "models": MODELS})
    if parsed is None:
        return None
    cfg, out, preset, mesh = parsed
    with cli.run_dir(parsed):
        summaries, _ = cli.run_models(parsed, run_one, MODELS)
        out = Path(out)
        if cli.is_comparison(cfg) and jax.process_index() == 0:
            cli.save_comparison(out, "sagan", argv, summaries, preset=preset, size=cfg.size,
                                batch_size=cfg.batch_size, eval_samples=cfg.eval_samples)
    print(f"\nsagan, preset {preset}:")
    for m, s in summaries.items():
        print(f"  attention {m}: " + ", ".join(f"{k} {v:.4g}" for k, v in s["eval"].items()))
    return summaries


def publish(run_dir: Path, results: Path, block: str, readme: Path | None = None) -> str:
    run_dir, results = Path(run_dir), Path(results)
    comparison = stage_comparison(run_dir, results)
    images = []
    for model in comparison["summaries"]:
        for name in ("samples.png", "attention.png"):
            if (row_run(run_dir, model) / name).exists():
                shutil.copy(row_run(run_dir, model) / name, results / f"{name[:-4]}_{model}.png")
                images.append(f"{name[:-4]}_{model}.png")
    summaries = comparison["summaries"]
    first = next(iter(summaries.values()))
    rows = ["| attention | classifier FD (lower is better) | classifier accuracy on samples | "
            "the paper's FID (ImageNet) | wall time |", "|---|---|---|---|---|"]
    for model, s in summaries.items():
        e = s["eval"]
        paper = PAPER_FID["none" if model == "none" else f"feat{model}"]
        rows.append(f"| {'none' if model == 'none' else f'{model} x {model}'} | {e['classifier_fd']:.2f} | "
                    f"{100 * e['sample_accuracy']:.1f}% | {paper} | {s['wall_s']:.0f} s |")
    text = "\n".join([
        f"Device: {first['device']}; {comparison['size']} x {comparison['size']} digits, preset "
        f"`{comparison['preset']}`, {first['steps']} steps of {comparison['batch_size']}; "
        f"{comparison['eval_samples']} samples scored by a digits classifier trained here (held-out accuracy "
        f"{100 * first['eval']['classifier_test_accuracy']:.1f}%); written by `python -m experiments.publish "
        f"sagan {run_dir} --block {block}` from `{comparison['command']}`. The paper's column is FID on ImageNet "
        "at other feature sizes (8 to 64): a direction to compare, not a number.", "", *rows, "",
        *[f"![{name[:-4]}]({repo_relative(results / name)})" for name in images]])
    update_readme_block(block, text, readme)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
