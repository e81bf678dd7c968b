"""SAGAN on handwritten digits: no attention vs self-attention at two feature resolutions (Zhang et al. 2018,
Table 1 at our scale).

    python -m experiments.sagan --preset smoke --out /tmp/sagan           # main variant: attention at 16 x 16
    python -m experiments.sagan --set models=none,8,16                     # the attention-placement comparison
    python -m experiments.sagan --list

Data (``task``): ``digits``, scikit-learn's bundled digits (1797 images of 8 x 8) upscaled to 16 x 16 and scaled
to [-1, 1], class-conditional; or ``pairs``, canvases of two different drawings of one digit side by side
(16 x 32), unconditional: nothing but the picture says which digit, so the two halves agree only if the
generator makes them, and a discriminator must compare the halves to ask for it. Its convolutions see about
10 px and it sums its features over the positions, so without attention it judges a bag of local features
(each half looks like a digit) and cannot see whether they agree: the long-range structure attention is for.
The GAN is class-conditional (projection discriminator), spectrally normalised in G and D, trained with the
hinge loss and the two time-scale update rule (Adam beta1 0, beta2 0.9; lr_D 4e-4, lr_G 1e-4). G and D are
updated simultaneously from the same point each step (the paper alternates them 1:1).

FID needs an Inception network we cannot download. The evaluation trains a digits classifier here (on the
training images; its held-out accuracy is reported) and measures the **classifier FD**: the Fréchet
distance between Gaussians fitted to its penultimate features of held-out real digits and of generated
ones, plus its **accuracy on class-conditional samples** (does G draw the class it was asked for). For pairs
the classifier is trained on real pair canvases (the FD's features), and the **agreement** is the share of
samples whose two halves the single-digit classifier names alike (``real_agreement``: the same on held-out
real pairs, the ceiling the classifier's errors leave). Not FID: the numbers are not comparable with the
paper's. The attention blocks' ``gamma_g`` / ``gamma_d`` are logged during training. Each run writes
``samples.png`` (generated beside real, one row per class for digits) and, with attention,
``attention.png`` (the generator's attention maps for chosen query locations: Figs. 1 and 5 analogue).
``model`` names the variant: "none", or the feature-map height of the attention block (8 or 16).
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

from attn_jax.nn.sagan import Discriminator, Generator, hinge_losses
from attn_jax.train import TrainConfig, cli, train
from attn_jax.train.config import to_dict
from attn_jax.train.report import parameter_count, plot_metric_curves, pyplot
from experiments import tables
from experiments.data import digit_canvas
from experiments.readme import repo_relative, row_run, update_readme_block

MODELS = ("none", "8", "16")
CLASSES = 10
TASKS = ("digits", "pairs")
# Table 1 of the paper (FID on ImageNet 128 x 128; lower is better) for the docs, by attention placement
PAPER_FID = {"none": 22.96, "feat8": 22.98, "feat16": 22.14, "feat32": 18.28, "feat64": 18.65}


@dataclasses.dataclass(frozen=True)
class Config:
    model: str = "16"  # none | 8 | 16: no attention, or the feature-map height of the attention block
    models: tuple[str, ...] = ()  # comparison mode
    task: str = "digits"  # digits (class-conditional) | pairs (two drawings of one digit, unconditional)
    size: int = 16  # image side (8 x 8 digits upscaled); pairs: the canvas is size x 2·size
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


def pairs(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, idx: np.ndarray,
          n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pair canvases ``[n, S, 2S, 1]``: a digit class uniformly, then two different drawings of it from the
    images ``idx`` (left and right); and their classes ``[n]``."""
    by_class = [idx[labels[idx] == c] for c in range(CLASSES)]
    classes = rng.integers(0, CLASSES, n)
    out = np.empty((n, images.shape[1], 2 * images.shape[2], 1), np.float32)
    for k, c in enumerate(classes):
        a, b = rng.choice(by_class[c], 2, replace=False)
        out[k] = np.concatenate([images[a], images[b]], axis=1)
    return out, classes.astype(np.int32)


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
def classifier(size: int, steps: int, test_fraction: float, seed: int = 0, task: str = "digits"):
    """Train the evaluation classifier on the training digits (``task="pairs"``: on pair canvases of them, named
    by their digit); returns (graphdef, params, held-out accuracy)."""
    images, labels = images_at(size)
    train_idx, test_idx = digit_canvas.source_split(test_fraction, seed)
    if task == "pairs":
        rng = np.random.default_rng((seed, 71))
        (tr_x, tr_y), (te_x, te_y) = pairs(rng, images, labels, train_idx, 64 * 50), pairs(
            rng, images, labels, test_idx, 1000)
        images, labels = np.concatenate([tr_x, te_x]), np.concatenate([tr_y, te_y])
        train_idx, test_idx = np.arange(len(tr_x)), len(tr_x) + np.arange(len(te_x))
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
        if cfg.task not in TASKS:
            raise ValueError(f"unknown task {cfg.task!r}; valid: {', '.join(TASKS)}")
        self.cfg = cfg
        self.classes = CLASSES if cfg.task == "digits" else 1  # pairs: unconditional
        self.images, self.labels = images_at(cfg.size)
        self.train_idx, self.test_idx = digit_canvas.source_split(cfg.test_fraction)
        g, d = self._models(jax.random.key(0))
        self.g_def, self.d_def = nnx.graphdef(g), nnx.graphdef(d)

    def _models(self, rng) -> tuple[Generator, Discriminator]:
        c = self.cfg
        at = 0 if c.model == "none" else int(c.model)
        blocks = {16: 2, 32: 3}[c.size]
        kg, kd = jax.random.split(rng)
        g = Generator(self.classes, rngs=nnx.Rngs(params=kg), z_features=c.z_features, channels=c.channels,
                      blocks=blocks, attention_at=at, aspect=2 if c.task == "pairs" else 1)
        d = Discriminator(self.classes, rngs=nnx.Rngs(params=kd), channels=c.channels, blocks=blocks, size=c.size,
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

    def real(self, rng: np.random.Generator, n: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """``n`` real images of the task (digits or pair canvases) from a split's digit images, and the labels the
        models are conditioned on (pairs: all 0, one class)."""
        idx = self.train_idx if split == "train" else self.test_idx
        if self.cfg.task == "pairs":
            images, _ = pairs(rng, self.images, self.labels, idx, n)
            return images, np.zeros(n, np.int32)
        pick = rng.choice(idx, n)
        return self.images[pick], self.labels[pick]

    def batch(self, step: int):
        rng = np.random.default_rng((self.cfg.train.seed, 31, step))
        images, labels = self.real(rng, self.cfg.batch_size)
        return {"images": images, "labels": labels,
                "z": rng.standard_normal((self.cfg.batch_size, self.cfg.z_features)).astype(np.float32),
                "fake_labels": rng.integers(0, self.classes, self.cfg.batch_size).astype(np.int32)}

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
        aux = {"d_loss": d_loss, "g_loss": g_loss}
        if g.attention is not None:  # how far each attention block has left the identity (gamma starts at 0)
            aux.update(gamma_g=g.attention.gamma[...], gamma_d=d.attention.gamma[...])
        return g_loss + d_loss - jax.lax.stop_gradient(d_loss), aux

    def samples(self, params, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.cfg.train.seed, seed))
        labels = np.arange(n) % self.classes
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
        graphdef, cparams, accuracy = classifier(c.size, c.classifier_steps, c.test_fraction, task=c.task)
        feats = jax.jit(lambda x: nnx.merge(graphdef, cparams)(x))
        fake, labels = self.samples(params, c.eval_samples, 41)
        f_fake, logits = (np.asarray(a) for a in feats(jnp.asarray(fake)))
        if c.task == "digits":
            f_real = np.asarray(feats(jnp.asarray(self.images[self.test_idx]))[0])
            return {"classifier_fd": frechet_distance(f_real, f_fake),
                    "sample_accuracy": float(np.mean(np.argmax(logits, -1) == labels)),
                    "classifier_test_accuracy": accuracy}
        real, _ = self.real(np.random.default_rng((c.train.seed, 42)), c.eval_samples, "test")
        f_real = np.asarray(feats(jnp.asarray(real))[0])
        return {"classifier_fd": frechet_distance(f_real, f_fake), "agreement": self.agreement(fake),
                "real_agreement": self.agreement(real), "classifier_test_accuracy": accuracy}

    def agreement(self, canvases: np.ndarray) -> float:
        """Pairs: the share of canvases ``[N, S, 2S, 1]`` whose left and right halves the single-digit classifier
        (trained on the training digits) names alike."""
        c = self.cfg
        graphdef, cparams, _ = classifier(c.size, c.classifier_steps, c.test_fraction)
        name = jax.jit(lambda x: jnp.argmax(nnx.merge(graphdef, cparams)(x)[1], -1))
        left, right = canvases[:, :, :c.size], canvases[:, :, c.size:]
        return float(np.mean(np.asarray(name(jnp.asarray(left))) == np.asarray(name(jnp.asarray(right)))))


# --- plots ----------------------------------------------------------------------------------------------------------
def tile(images: np.ndarray, rows: int, cols: int, pad: int = 2) -> np.ndarray:
    """``images [rows·cols, H, W]`` (row-major) as one picture with ``pad`` pixels of NaN (drawn as a gap) between
    and around them: ``[rows·(H + pad) + pad, cols·(W + pad) + pad]``."""
    n, h, w = images.shape
    if n != rows * cols:
        raise ValueError(f"{n} images do not fill {rows} x {cols}")
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), np.nan, np.float32)
    for k in range(n):
        r, c = divmod(k, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = images[k]
    return out


def plot_samples(task: GANTask, params, path: Path, per_class: int = 8) -> None:
    """Generated images beside real ones of the same layout (held-out digit images): for digits one row per
    class, ``per_class`` columns; for pairs a 10 x 4 grid of canvases. Gaps between the images."""
    c = task.cfg
    if c.task == "digits":
        fake, _ = task.samples(params, CLASSES * per_class, 51)  # labels k % 10: column-major by class
        order = np.arange(CLASSES * per_class).reshape(per_class, CLASSES).T.ravel()  # row r = class r
        fake = fake[order]
        rng = np.random.default_rng(52)
        real = np.concatenate([task.images[rng.choice(task.test_idx[task.labels[task.test_idx] == k], per_class)]
                               for k in range(CLASSES)])
        rows, cols = CLASSES, per_class
    else:
        rows, cols = 10, 4
        fake, _ = task.samples(params, rows * cols, 51)
        real, _ = task.real(np.random.default_rng(52), rows * cols, "test")
    plt = pyplot()
    grids = [tile(fake[..., 0], rows, cols), tile(real[..., 0], rows, cols)]
    height, width = grids[0].shape
    fig, axes = plt.subplots(1, 2, figsize=(0.1 * width + 1, 0.05 * height + 0.8))
    cmap = plt.get_cmap("gray").with_extremes(bad="#c8d4e3")
    for ax, grid, name in zip(axes, grids, ("generated", "real (held-out digit images)"), strict=True):
        ax.imshow(grid, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name, fontsize=9)
    if c.task == "digits":
        step = c.size + 2
        axes[0].set_yticks([2 + step * (k + 0.5) - 1 for k in range(CLASSES)], [str(k) for k in range(CLASSES)])
    fig.suptitle(f"SAGAN ({c.task}, attention {'none' if c.model == 'none' else c.model}): samples", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_attention(task: GANTask, params, path: Path) -> None:
    """Figs. 1/5 analogue: generated digits with the generator's attention map for three query locations."""
    g = task.generator(params)
    z = jnp.asarray(np.random.default_rng(61).standard_normal((4, task.cfg.z_features)).astype(np.float32))
    labels = jnp.array([0, 3, 5, 8]) % task.classes
    images = np.asarray(g(z, labels))[..., 0]
    x = g.features(z)
    for block in g.blocks:
        x = block(x, labels)
        if x.shape[1] == g.attention_at:
            break
    side, width = g.attention_at, g.attention_at * g.aspect
    beta = np.asarray(g.attention.attention(x))  # [4, N, N]
    queries = ([(side // 4, side // 4), (side // 2, side // 2), (3 * side // 4, side // 3)] if g.aspect == 1 else
               [(side // 2, side // 4), (side // 2, width - side // 2), (side // 4, width - side // 4)])
    plt = pyplot()
    fig, axes = plt.subplots(4, 1 + len(queries), figsize=(2 * g.aspect * (1 + len(queries)), 8))
    scale = task.cfg.size / side
    for r in range(4):
        axes[r, 0].imshow(images[r], cmap="gray", vmin=-1, vmax=1)
        for k, (qy, qx) in enumerate(queries):
            axes[r, 0].plot(qx * scale + scale / 2 - 0.5, qy * scale + scale / 2 - 0.5, "o", ms=5,
                            color=f"C{k + 1}")
            ax = axes[r, k + 1]
            ax.imshow(beta[r, qy * width + qx].reshape(side, width), cmap="magma")
            ax.plot(qx, qy, "o", ms=5, color=f"C{k + 1}")
            ax.set_title(f"query ({qy}, {qx})", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"generator self-attention at {side} x {width} (gamma = {float(g.attention.gamma[...]):.3f})",
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
                         aliases={"attention": "model"},
                         choices={"model": MODELS, "models": MODELS, "task": TASKS})
    if parsed is None:
        return None
    cfg, out, preset, mesh = parsed
    with cli.run_dir(parsed):
        summaries, _ = cli.run_models(parsed, run_one, MODELS)
        out = Path(out)
        if cli.is_comparison(cfg) and jax.process_index() == 0:
            cli.save_comparison(out, "sagan", argv, summaries, preset=preset, size=cfg.size, task=cfg.task,
                                batch_size=cfg.batch_size, eval_samples=cfg.eval_samples)
    print(f"\nsagan, preset {preset}:")
    for m, s in summaries.items():
        print(f"  attention {m}: " + ", ".join(f"{k} {v:.4g}" for k, v in s["eval"].items()))
    return summaries


def row_name(model: str, task: str) -> str:
    """A table row: ``none``, or where the attention block sits as the feature map's ``height x width``."""
    return "none" if model == "none" else f"{model} x {int(model) * (2 if task == 'pairs' else 1)}"


def publish(run_dir: Path, results: Path, block: str, readme: Path | None = None) -> str:
    """The published table ``results/comparison.json`` (experiments.tables' schema: a row per attention placement,
    the classifier FD and, for pairs, the agreement over seeds), the gamma curves over seeds, the first seed's
    samples (beside real ones) and attention maps, and the docs block ``block``."""
    run_dir, results = Path(run_dir), Path(results)
    comparison = json.loads((run_dir / "comparison.json").read_text())
    task = comparison.get("task", "digits")
    models = list(comparison["summaries"])
    summaries = {row_name(m, task): s for m, s in comparison["summaries"].items()}
    metrics = ["classifier_fd"] + (["agreement", "real_agreement"] if task == "pairs" else ["sample_accuracy"])
    table = tables.from_summaries(summaries, comparison["command"], metrics=[*metrics, "classifier_test_accuracy"])
    table["task"] = {"name": task, "size": comparison["size"], "batch_size": comparison["batch_size"],
                     "eval_samples": comparison["eval_samples"]}
    tables.write(results, table)
    images = []
    attended = [m for m in models if m != "none"]
    seed_dirs = {row_name(m, task): [cli.seed_dir(run_dir, m, k) for k in table["seeds"]] for m in attended}
    if attended:
        for who, name in (("g", "generator"), ("d", "discriminator")):
            plot_metric_curves(seed_dirs, f"gamma_{who}", results / f"gamma_{who}.png",
                               f"{name}'s attention: |gamma| during training",
                               "|gamma| (0: the block is the identity)", label="attention at {name}",
                               transform=np.abs)  # its sign differs between seeds: the mean of gamma hides its size
            images.append(f"gamma_{who}.png")
    for model in models:
        for name in ("samples.png", "attention.png"):
            if (row_run(run_dir, model) / name).exists():
                shutil.copy(row_run(run_dir, model) / name, results / f"{name[:-4]}_{model}.png")
                images.append(f"{name[:-4]}_{model}.png")
    columns = [("classifier_fd", "classifier FD", ".2f")]
    columns += ([("agreement", "halves agree", ".3f"), ("real_agreement", "real pairs agree", ".3f")]
                if task == "pairs" else [("sample_accuracy", "accuracy on samples", ".3f")])
    higher = {"classifier_fd": False}
    rows = table["rows"]
    extra = {"parameters (G / D)": {r: f"{v['parameters']['g']:,} / {v['parameters']['d']:,}"
                                    for r, v in rows.items()},
             "wall time / run": {r: f"{v['wall_s'] / 60:.1f} min" for r, v in rows.items()}}
    if task == "digits":
        extra["the paper's FID (ImageNet)"] = {row_name(m, task): str(PAPER_FID["none" if m == "none" else
                                                                              f"feat{m}"]) for m in models}
    first = next(iter(summaries.values()))
    prov = table["provenance"]
    canvas = f"{comparison['size']} x {2 * comparison['size']} pair canvases (unconditional)" if task == "pairs" \
        else f"{comparison['size']} x {comparison['size']} digits (class-conditional)"
    accuracy = rows[next(iter(rows))]["metrics"]["classifier_test_accuracy"]["mean"]
    text = "\n".join([
        f"Device: {prov['device']}; commit {tables.short_commit(prov['commit'])}; {canvas}; {first['steps']} steps "
        f"of {comparison['batch_size']} per run; seeds {', '.join(map(str, table['seeds']))}; "
        f"{comparison['eval_samples']} samples per seed scored by a classifier trained here on the task's real "
        f"images (held-out accuracy {100 * accuracy:.1f}%). Written by `python -m experiments.publish sagan "
        f"{run_dir} --block {block}" + (f" --table {results.name}" if results.name != block else "")
        + f"` from `{comparison['command']}`. Rows: where the attention block sits in G and D (the feature map's "
        "height x width).", "",
        tables.markdown(table, columns, higher, extra=extra), "",
        *[f"![{name[:-4]}]({repo_relative(results / name)})" for name in images]])
    update_readme_block(block, text, readme)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
