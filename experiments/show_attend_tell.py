"""Soft vs hard visual attention vs none, captioning canvases of handwritten digits (Xu et al. 2015 at our scale).

    python -m experiments.show_attend_tell --preset smoke --out /tmp/sat        # main variant: soft attention
    python -m experiments.show_attend_tell --set models=soft,hard,none           # Table 1 analogue
    python -m experiments.show_attend_tell --list

Data: :mod:`experiments.data.digit_canvas` (scikit-learn's digits on 32 x 64 canvases, captions with sizes,
left-to-right order and above/below; test canvases use held-out digit images). Training: teacher forcing with
cross-entropy; soft adds the doubly stochastic penalty ``penalty · Σ_i (1 - Σ_t α_ti)²``; hard optimises the
variational bound by REINFORCE: reward ``log p(y | s)``, a moving-average baseline (decay 0.9), an entropy
bonus, and the expected context on half of the steps. Decoding is greedy (hard: the expected context).
The encoder is three VGG-style blocks (two 3x3 convs each) over the canvas plus two coordinate channels, giving
a 4 x 8 grid of 8 px cells that each see 36 px: a cell must see a whole digit (16 or 24 px) for hard attention
to name it from one cell, and the annotations must say where they are for a left-to-right caption. (A first
encoder, one conv per block, 8 x 16 cells seeing 10 px and no coordinates, left soft and hard attention near
uniform and below the no-attention baseline.)
Each run writes ``attention.png`` (a test canvas with the attention map of every generated word: Figs. 2-3
analogue) and ``samples.txt``. Eval metrics: ``bleu_1`` .. ``bleu_4`` and ``exact_match`` on
``eval_size`` test canvases.
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

from attn_jax.nn.show_attend_tell import ATTENTIONS, ShowAttendTell, doubly_stochastic_penalty
from attn_jax.reinforce import leave_one_out, reward_to_go, score_function_surrogate
from attn_jax.train import TrainConfig, cli, train
from attn_jax.train.config import to_dict
from attn_jax.train.loop import make_optimizer
from attn_jax.train.report import parameter_count, plot_metric_curves, pyplot
from attn_jax.train.text_metrics import bleu, exact_match
from experiments import tables
from experiments.data import digit_canvas as dc
from experiments.readme import repo_relative, row_run, update_readme_block

# Table 1 of the paper, for the docs: BLEU-1..4 on Flickr8k / COCO (soft, hard)
PAPER = {"soft": {"Flickr8k": (67, 44.8, 29.9, 19.5), "COCO": (70.7, 49.2, 34.4, 24.3)},
         "hard": {"Flickr8k": (67, 45.7, 31.4, 21.3), "COCO": (71.8, 50.4, 35.7, 25.0)}}


@dataclasses.dataclass(frozen=True)
class NetConfig:
    features: int = 64  # D: channels of each annotation vector (the last encoder block's)
    hidden: int = 128  # LSTM hidden units
    embed: int = 32  # word embedding size
    attention: int = 64  # hidden size of the additive attention scorer (W_a, W_h)
    encoder_blocks: int = 3  # 32 x 64 canvas -> 4 x 8 = 32 annotation vectors of 8 x 8 px cells


@dataclasses.dataclass(frozen=True)
class Config:
    model: str = "soft"  # soft | hard | none | hard_expected (hard trained on the expected context only)
    models: tuple[str, ...] = ()  # comparison mode
    canvas: dc.CanvasConfig = dc.CanvasConfig()
    batch_size: int = 32  # training canvases per step
    eval_size: int = 500  # canvases captioned per evaluation
    eval_split: str = "test"  # test (held-out digit images) | val (new canvases of training digits: for tuning)
    penalty: float = 1.0  # soft: lambda of the doubly stochastic penalty
    reinforce: float = 1.0  # hard: lambda_r
    entropy: float = 0.01  # hard: lambda_e
    credit: str = "to_go"  # hard: to_go (step t's location earns the log-likelihood of words t..) | caption
    samples: int = 4  # hard: location sequences sampled per canvas (one encoding; the loss averages them)
    baseline: str = "critic"  # hard: ema (moving average) | critic (ema + a learned critic on h_{t-1}) | loo
    #   (the mean reward-to-go of the canvas's other samples: needs samples >= 2)
    baseline_decay: float = 0.9  # hard: decay of the moving-average baseline (one per caption position)
    expected_prob: float = 0.5  # hard, training: chance a step uses the expected context, not a sampled cell
    net: NetConfig = NetConfig()
    train: TrainConfig = TrainConfig(steps=3000, optimizer="adam", learning_rate=2e-3, schedule="cosine",
                                     warmup_steps=50, clip_norm=1.0, log_every=50, checkpoint_every=500)


def smoke() -> Config:
    return Config(batch_size=8, eval_size=16, net=NetConfig(features=8, hidden=16, embed=8, attention=8),
                  train=TrainConfig(steps=20, learning_rate=2e-3, log_every=5, checkpoint_every=10))


def quick() -> Config:
    return Config()


def paper() -> Config:
    return Config(batch_size=64, eval_size=2000, net=NetConfig(features=128, hidden=512, embed=128, attention=256),
                  train=TrainConfig(steps=30_000, learning_rate=1e-3, schedule="cosine", warmup_steps=500,
                                    clip_norm=1.0, log_every=200, checkpoint_every=2000))


PRESETS = {"smoke": smoke, "quick": quick, "paper": paper}
#: The rows: the model's three attentions, and the control ``hard_expected``: the hard model trained with the
#: expected context at every step (``expected_prob`` 1, no sampling), so the network without REINFORCE.
MODELS = (*ATTENTIONS, "hard_expected")
ROW_NAMES = {"hard_expected": "hard, expected context"}
CREDITS = ("to_go", "caption")
BASELINES = ("ema", "critic", "loo")
VARIANTS = (f"variants: model={'|'.join(MODELS)} (or attention=...; main: soft; models=soft,hard,none,hard_expected "
            "compares them)")


def critic_init(rng, hidden: int, width: int = 64) -> dict[str, jax.Array]:
    """The learned baseline's parameters: a one-hidden-layer MLP on the decoder state, output 0 at first."""
    return {"w1": jax.random.normal(rng, (hidden, width)) / np.sqrt(hidden), "b1": jnp.zeros((width,)),
            "w2": jnp.zeros((width,)), "b2": jnp.zeros(())}


def critic_apply(p: dict[str, jax.Array], h: jax.Array) -> jax.Array:
    """``h [..., hidden] -> [...]``: the critic's estimate (of the reward-to-go left after the moving average)."""
    return jnp.tanh(h @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def hard_attention_terms(cfg: Config, nll: jax.Array, mask: jax.Array, trace, baseline: jax.Array,
                         critic: dict | None, samples: int = 1) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The REINFORCE part of the hard model's loss, to add to the mean NLL: ``nll, mask [B·K, T]`` (per word),
    ``baseline [T]`` (the moving average of the reward-to-go at each caption position), ``critic`` the learned
    baseline's parameters (or None), ``samples`` K location sequences per canvas (rows grouped by canvas).

    Reward of word t: ``log p(y_t | s_<=t)``; credit of the location drawn at step t: the reward-to-go
    ``G_t`` (``credit="to_go"``) or the whole caption's ``log p(y | s)`` (``"caption"``, the paper's
    estimator). Advantage ``G_t - b_t - critic(h_{t-1})`` (the critic sees only what came before the draw, so
    the estimate stays unbiased). Returns the zero-valued term to add (its gradient: REINFORCE, minus the
    entropy bonus, plus the moving average's and critic's fitting gradients) and what to log."""
    tokens = jnp.maximum(jnp.sum(mask), 1.0)
    rewards = -nll * mask
    if cfg.credit == "to_go":
        returns = reward_to_go(rewards, mask)
    else:
        returns = jnp.broadcast_to(jnp.sum(rewards, axis=1, keepdims=True), rewards.shape)
    returns = jax.lax.stop_gradient(returns)
    expected = jnp.broadcast_to(baseline[None, :], returns.shape)
    residual = critic_apply(critic, jax.lax.stop_gradient(trace.hidden)) if critic is not None else 0.0
    sampled = (trace.locations >= 0).astype(jnp.float32) * mask
    subtract = leave_one_out(returns, samples) if cfg.baseline == "loo" else expected + residual
    surrogate = score_function_surrogate(trace.log_p_locations, returns, subtract) * sampled
    entropy = jnp.sum(trace.entropy * mask) / tokens
    term = -(cfg.reinforce * jnp.sum(surrogate) / tokens + cfg.entropy * entropy)
    # the moving average's "gradient" b_t - mean_b G_t at each position some caption reaches: its SGD step (see
    # CaptionTask.optimizer) is exactly b_t <- decay b_t + (1 - decay) mean G_t
    count = jnp.sum(mask, axis=0)
    mean_return = jnp.sum(returns * mask, axis=0) / jnp.maximum(count, 1.0)
    fit = 0.5 * jnp.sum((count > 0) * (baseline - mean_return) ** 2)
    aux = {"entropy": entropy, "reward": jnp.sum(rewards) / jnp.maximum(rewards.shape[0], 1)}
    if critic is not None:
        err = (residual - (returns - jax.lax.stop_gradient(expected))) * mask
        critic_fit = 0.5 * jnp.sum(err ** 2) / tokens
        fit = fit + critic_fit
        aux["critic_mse"] = 2 * critic_fit
    advantage = (returns - subtract) * sampled
    aux["advantage_rms"] = jnp.sqrt(jnp.sum(advantage ** 2) / jnp.maximum(jnp.sum(sampled), 1.0))
    return term + fit - jax.lax.stop_gradient(fit), aux  # zero-valued: the reported loss stays the captioner's


class CaptionTask:
    def __init__(self, cfg: Config):
        if cfg.model not in MODELS:
            raise ValueError(f"unknown model {cfg.model!r}; valid: {', '.join(MODELS)}")
        if cfg.credit not in CREDITS:
            raise ValueError(f"unknown credit {cfg.credit!r}; valid: {', '.join(CREDITS)}")
        if cfg.eval_split not in ("test", "val"):
            raise ValueError(f"unknown eval_split {cfg.eval_split!r}; valid: test, val")
        if cfg.samples < 1:
            raise ValueError(f"samples must be >= 1, got {cfg.samples}")
        if cfg.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {cfg.baseline!r}; valid: {', '.join(BASELINES)}")
        if cfg.baseline == "loo" and cfg.samples < 2 and cfg.model == "hard":
            raise ValueError("baseline=loo needs samples >= 2 (the other samples of a canvas are its baseline)")
        self.cfg = cfg
        self.attention = "hard" if cfg.model == "hard_expected" else cfg.model
        self.expected_prob = 1.0 if cfg.model == "hard_expected" else cfg.expected_prob
        self.train_sources, self.test_sources = dc.source_split(cfg.canvas.test_fraction)
        self.graphdef = nnx.graphdef(self._model(jax.random.key(0)))

    @property
    def samples(self) -> int:
        """Location sequences per canvas in training: ``cfg.samples`` for the hard model that samples, else 1."""
        return self.cfg.samples if self.attention == "hard" and self.expected_prob < 1.0 else 1

    def _model(self, rng) -> ShowAttendTell:
        n = self.cfg.net
        return ShowAttendTell(len(dc.VOCAB), attention=self.attention, features=n.features, hidden=n.hidden,
                              embed=n.embed, attention_features=n.attention, encoder_blocks=n.encoder_blocks,
                              expected_prob=self.expected_prob, rngs=nnx.Rngs(params=rng))

    def model(self, params) -> ShowAttendTell:
        return nnx.merge(self.graphdef, params["model"])

    def init(self, rng):
        k_model, k_critic = jax.random.split(rng)
        params = {"model": nnx.state(self._model(k_model), nnx.Param),
                  "baseline": jnp.zeros((dc.max_words(self.cfg.canvas) + 1,), jnp.float32)}
        if self.attention == "hard" and self.cfg.baseline == "critic":
            params["critic"] = critic_init(k_critic, self.cfg.net.hidden)
        return params

    def optimizer(self, cfg: TrainConfig) -> optax.GradientTransformation:
        """The model (and the critic) by the config's optimizer; the moving-average baseline by SGD with rate
        1 - decay on the gradient ``b - mean G``: exactly ``b <- decay·b + (1 - decay)·mean G``."""
        ema = optax.sgd(1.0 - self.cfg.baseline_decay)
        return optax.multi_transform({"model": make_optimizer(cfg), "baseline": ema},
                                     lambda params: {k: "baseline" if k == "baseline" else "model" for k in params})

    def batch(self, step: int):
        rng = np.random.default_rng((self.cfg.train.seed, 21, step))
        return dc.batch(rng, self.cfg.canvas, self.train_sources, self.cfg.batch_size)

    def loss(self, params, batch, rng):
        cfg, k = self.cfg, self.samples
        caps = batch["captions"]
        logits, trace = self.model(params)(batch["images"], caps[:, :-1], rng=rng, samples=k)
        targets = jnp.repeat(caps[:, 1:], k, axis=0)
        mask = (targets != dc.PAD).astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets) * mask
        tokens = jnp.maximum(jnp.sum(mask), 1.0)
        loss = jnp.sum(nll) / tokens
        aux = {"nll": loss}
        if self.attention == "soft":
            penalty = jnp.mean(doubly_stochastic_penalty(trace.alphas, mask))
            loss = loss + cfg.penalty * penalty / caps.shape[1]
            aux["penalty"] = penalty
        if self.attention == "hard":
            term, more = hard_attention_terms(cfg, nll, mask, trace, params["baseline"], params.get("critic"), k)
            loss = loss + term
            aux.update(more)
        return loss, aux

    @functools.cached_property
    def _decode(self):
        length = dc.max_words(self.cfg.canvas) + 1

        def run(params, images):
            model = self.model(params)
            a = model.encoder(images)
            keys = model.w_a(a)

            def body(state, _):
                carry, token = state
                carry, logits, (alpha, *_rest) = model.step(carry, token, a, keys, expected=True)
                token = jnp.argmax(logits, -1).astype(jnp.int32)
                return (carry, token), (token, alpha)

            start = jnp.full((images.shape[0],), dc.BOS, jnp.int32)
            _, (tokens, alphas) = jax.lax.scan(body, (model.initial_state(a), start), None, length=length)
            return tokens.T, jnp.swapaxes(alphas, 0, 1)

        return jax.jit(run)

    def test_set(self) -> dict[str, np.ndarray]:
        """The ``eval_size`` canvases evaluations caption: of held-out digit images (``eval_split="test"``), or
        (``"val"``, for choosing hyper-parameters without the test set) new canvases of training digit images."""
        if self.cfg.eval_split == "val":
            return dc.batch(np.random.default_rng((self.cfg.train.seed, 23)), self.cfg.canvas, self.train_sources,
                            self.cfg.eval_size)
        return dc.batch(np.random.default_rng((self.cfg.train.seed, 22)), self.cfg.canvas, self.test_sources,
                        self.cfg.eval_size)

    def captions(self, params, images) -> tuple[list[list[str]], np.ndarray]:
        out, alphas = [], []
        for s in range(0, len(images), 100):
            tokens, a = self._decode(params, jnp.asarray(images[s:s + 100]))
            out += [dc.decode(t) for t in np.asarray(tokens)]
            alphas.append(np.asarray(a))
        return out, np.concatenate(alphas)

    def parameter_count(self, params) -> int:
        """The captioner's size, without the REINFORCE baseline's state (the summary's ``parameters``)."""
        return parameter_count(params["model"])

    def evaluate(self, params) -> dict[str, float]:
        test = self.test_set()
        hyps, _ = self.captions(params, test["images"])
        refs = [dc.decode(c) for c in test["captions"]]
        metrics = {f"bleu_{n}": bleu(hyps, refs, n) for n in (1, 2, 3, 4)}
        metrics["exact_match"] = exact_match(hyps, refs)
        return metrics


# --- plots ----------------------------------------------------------------------------------------------------------
def plot_attention(task: CaptionTask, params, path: Path, example: int = 0, columns: int = 4) -> None:
    """Figs. 2-3 analogue for one test canvas: a panel per generated word (up to <eos>), the word as its title and
    its attention map over the canvas (one shared colour scale, with a colorbar), the reference and the model's
    caption above. Panels are laid out ``columns`` to a row, each the canvas's shape, so every word is readable."""
    test = task.test_set()
    image = test["images"][example:example + 1]
    hyps, alphas = task.captions(params, image)
    h, w = task.model(params).encoder.grid(*image.shape[1:])
    words = (hyps[0] + ["<eos>"])[:alphas.shape[1]]
    maps = [np.kron(alphas[0, k].reshape(h, w), np.ones((image.shape[1] // h, image.shape[2] // w)))
            for k in range(len(words))]
    vmax = max(float(m.max()) for m in maps)
    rows = -(-len(words) // columns)
    plt = pyplot()
    aspect = image.shape[1] / image.shape[2]
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns + 0.8, 3.0 * aspect * rows + 1.2),
                             squeeze=False)
    mappable = None
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= len(words):
            continue
        ax.imshow(image[0], cmap="gray_r")
        mappable = ax.imshow(maps[k], cmap="magma", alpha=0.6, vmin=0.0, vmax=vmax,
                             extent=(-0.5, image.shape[2] - 0.5, image.shape[1] - 0.5, -0.5))
        ax.set_title(f"{k + 1}. {words[k]}", fontsize=11)
    reference = " ".join(dc.decode(test["captions"][example]))
    fig.suptitle(f"{ROW_NAMES.get(task.cfg.model, task.cfg.model)} attention, one test canvas: the map of each "
                 f"generated word\nreference: {reference}\nmodel:     {' '.join(hyps[0])}", fontsize=10,
                 family="monospace")
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    cax = fig.add_axes((0.93, 0.15, 0.015, 0.6))
    fig.colorbar(mappable, cax=cax, label="attention weight α")
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- runs -----------------------------------------------------------------------------------------------------------
def run_one(cfg: Config, out: Path, preset: str, mesh=None) -> dict:
    task = CaptionTask(cfg)
    config = {"experiment": "show_attend_tell", "preset": preset, **to_dict(dataclasses.replace(cfg, models=()))}
    summary, params = train(task, cfg.train, out, config=config, mesh=mesh)
    if jax.process_index() == 0:
        test = task.test_set()
        hyps, _ = task.captions(params, test["images"][:20])
        (out / "samples.txt").write_text("".join(
            f"reference: {' '.join(dc.decode(c))}\nmodel:     {' '.join(h)}\n\n"
            for c, h in zip(test["captions"][:20], hyps, strict=True)))
        if cfg.model != "none":
            plot_attention(task, params, out / "attention.png")
    return summary


def main(argv=None) -> dict | None:
    parsed = cli.parse("show_attend_tell", PRESETS, argv, default_preset="quick", variants=VARIANTS,
                         aliases={"attention": "model"},
                       choices={"model": MODELS, "models": MODELS, "credit": CREDITS, "baseline": BASELINES})
    if parsed is None:
        return None
    cfg, out, preset, mesh = parsed
    with cli.run_dir(parsed):
        summaries, _ = cli.run_models(parsed, run_one, MODELS)
        out = Path(out)
        if cli.is_comparison(cfg) and jax.process_index() == 0:
            cli.save_comparison(out, "show_attend_tell", argv, summaries, preset=preset, batch_size=cfg.batch_size,
                                eval_size=cfg.eval_size)
    print(f"\nshow_attend_tell, preset {preset}: test captions")
    for m, s in summaries.items():
        print(f"  {m}: " + ", ".join(f"{k} {v:.3g}" for k, v in s["eval"].items()))
    return summaries


def _read_samples(path: Path) -> list[tuple[str, str]]:
    """(reference, model caption) pairs from a run's ``samples.txt``."""
    lines = [ln.split(":", 1)[1].strip() for ln in path.read_text().splitlines() if ln.strip()]
    return list(zip(lines[::2], lines[1::2], strict=True))


#: Settings only the hard model reads: rows from separate comparison folders may differ in these alone.
HARD_ONLY = ("reinforce", "entropy", "credit", "samples", "baseline", "baseline_decay", "expected_prob")


def _merge_comparisons(run_dirs: list[Path]) -> tuple[dict, dict[str, Path], list[str]]:
    """The rows of several comparison folders as one comparison: ``(summaries by model, each model's folder,
    the commands)``. Their runs must share every setting but the model and :data:`HARD_ONLY` (e.g. soft, none
    and the control run in one folder, hard with its tuned recipe in another); a model in two folders, or any
    other difference, is refused."""
    summaries, folders, commands, base = {}, {}, [], None
    for run_dir in run_dirs:
        comparison = json.loads((run_dir / "comparison.json").read_text())
        for model, summary in comparison["summaries"].items():
            if model in summaries:
                raise SystemExit(f"row {model!r} is in both {folders[model]} and {run_dir}")
            config = json.loads((row_run(run_dir, model) / "config.json").read_text())
            shared = {k: v for k, v in config.items() if k not in (*HARD_ONLY, "model")}
            shared["train"] = {k: v for k, v in shared["train"].items() if k != "seed"}
            if base is None:
                base = (shared, run_dir)
            elif shared != base[0]:
                keys = sorted(k for k in set(shared) | set(base[0]) if shared.get(k) != base[0].get(k))
                raise SystemExit(f"{run_dir} ({model}) differs from {base[1]} in more than the hard model's "
                                 f"settings: {', '.join(keys)}")
            summaries[model], folders[model] = summary, run_dir
        commands.append(comparison["command"])
    order = sorted(summaries, key=lambda m: MODELS.index(m))
    return {m: summaries[m] for m in order}, folders, commands


def publish(run_dir: Path | list[Path], results: Path, block: str, readme: Path | None = None) -> str:
    """The published table of one or more comparison runs (``results/comparison.json`` in experiments.tables'
    schema: rows ``soft``, ``hard``, ``none``, ``hard, expected context``; BLEU-1..4 and exact match over seeds),
    the learning curves over seeds, each row's attention figure (first seed) and the docs block ``block``.
    Several folders: their rows together (see :func:`_merge_comparisons`)."""
    run_dirs = [Path(r) for r in (run_dir if isinstance(run_dir, (list, tuple)) else [run_dir])]
    results = Path(results)
    by_model, folders, commands = _merge_comparisons(run_dirs)
    comparison = json.loads((run_dirs[0] / "comparison.json").read_text())
    summaries = {ROW_NAMES.get(m, m): s for m, s in by_model.items()}
    table = tables.from_summaries(summaries, commands[0] if len(commands) == 1 else commands,
                                  metrics=["bleu_1", "bleu_2", "bleu_3", "bleu_4", "exact_match"])
    table["task"] = {"batch_size": comparison["batch_size"], "eval_size": comparison["eval_size"],
                     "preset": comparison["preset"]}
    tables.write(results, table)
    models = list(by_model)
    seed_dirs = {ROW_NAMES.get(m, m): [d for k in table["seeds"] if (d := cli.seed_dir(folders[m], m, k)).is_dir()]
                 for m in models}
    images = []
    if all(seed_dirs.values()):
        plot_metric_curves(seed_dirs, "nll", results / "learning_curve.png", "training cross-entropy per word",
                           "cross-entropy (nats per word)", log_y=True)
        images.append("learning_curve.png")
    for model in models:
        if (row_run(folders[model], model) / "attention.png").exists():
            shutil.copy(row_run(folders[model], model) / "attention.png", results / f"attention_{model}.png")
            images.append(f"attention_{model}.png")
    columns = [(f"bleu_{n}", f"BLEU-{n}", ".1f") for n in (1, 2, 3, 4)] + [("exact_match", "exact match", ".3f")]
    paper = {f"the paper ({name}, BLEU-1/2/3/4)": {} for name in ("Flickr8k", "COCO")}
    for model, sets in PAPER.items():
        for name, scores in sets.items():
            paper[f"the paper ({name}, BLEU-1/2/3/4)"][model] = " / ".join(map(str, scores))
    rows = table["rows"]
    extra = {"parameters": {r: f"{v['parameters']:,}" for r, v in rows.items()},
             "wall time / run": {r: f"{v['wall_s'] / 60:.1f} min" for r, v in rows.items()}, **paper}
    config = json.loads((row_run(folders[models[0]], models[0]) / "config.json").read_text())
    hard = json.loads((row_run(folders["hard"], "hard") / "config.json").read_text()) if "hard" in folders else None
    first = next(iter(summaries.values()))
    prov = table["provenance"]
    examples = ["```text"]
    captions = {ROW_NAMES.get(m, m): _read_samples(row_run(folders[m], m) / "samples.txt") for m in models}
    for k, (ref, _) in enumerate(next(iter(captions.values()))[:4]):
        examples += [f"{'reference:':24} {ref}"] + [f"{m + ':':24} {c[k][1]}" for m, c in captions.items()] + [""]
    examples[-1] = "```"
    t = config["train"]
    recipe = (f"hard: REINFORCE with credit `{hard['credit']}`, {hard['samples']} location samples per canvas, "
              + {"ema": f"moving-average baseline (decay {hard['baseline_decay']:g})",
                 "critic": f"moving-average baseline (decay {hard['baseline_decay']:g}) plus a learned critic on "
                           "h_(t-1)",
                 "loo": "leave-one-out baseline (the other samples' mean reward-to-go)"}[hard["baseline"]]
              + f", REINFORCE weight {hard['reinforce']:g}, entropy weight {hard['entropy']:g}, expected context "
              f"on {hard['expected_prob']:.0%} of the steps; " if hard else "")
    text = "\n".join([
        f"Device: {prov['device']}; commit {tables.short_commit(prov['commit'])}; {first['steps']} steps of "
        f"{comparison['batch_size']} canvases per run, {t['optimizer']} lr {t['learning_rate']:g} ({t['schedule']}), "
        f"{recipe}seeds {', '.join(map(str, table['seeds']))}; {comparison['eval_size']} test canvases of held-out "
        f"digit images per seed, greedy decoding (hard: the expected context). Written by "
        f"`python -m experiments.publish show_attend_tell {' '.join(map(str, run_dirs))} --block {block}"
        + (f" --table {results.name}" if results.name != block else "") + "` from "
        + " and ".join(f"`{c}`" for c in commands) + ". "
        "The paper's columns are Flickr8k / COCO photographs, not comparable numbers: only the direction (hard vs "
        "soft) is.",
        "",
        tables.markdown(table, columns, extra=extra),
        "",
        "The first test canvases (greedy decoding, first seed):",
        "",
        *examples,
        "",
        *[f"![{name[:-4]}]({repo_relative(results / name)})" for name in images]])
    update_readme_block(block, text, readme)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
