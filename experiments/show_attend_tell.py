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
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attn_jax.nn.show_attend_tell import ATTENTIONS, ShowAttendTell, doubly_stochastic_penalty
from attn_jax.reinforce import score_function_surrogate
from attn_jax.train import TrainConfig, cli, train
from attn_jax.train.config import to_dict
from attn_jax.train.loop import make_optimizer
from attn_jax.train.report import parameter_count, pyplot
from attn_jax.train.text_metrics import bleu, exact_match
from experiments.data import digit_canvas as dc
from experiments.readme import repo_relative, row_run, stage_comparison, update_readme_block

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
    model: str = "soft"  # soft | hard | none
    models: tuple[str, ...] = ()  # comparison mode
    canvas: dc.CanvasConfig = dc.CanvasConfig()
    batch_size: int = 32  # training canvases per step
    eval_size: int = 500  # test canvases captioned per evaluation
    penalty: float = 1.0  # soft: lambda of the doubly stochastic penalty
    reinforce: float = 1.0  # hard: lambda_r
    entropy: float = 0.01  # hard: lambda_e
    baseline_decay: float = 0.9  # hard: decay of the moving-average REINFORCE baseline of log p(y | s)
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
VARIANTS = (f"variants: model={'|'.join(ATTENTIONS)} (or attention=...; main: soft; models=soft,hard,none "
            "compares them)")


class CaptionTask:
    def __init__(self, cfg: Config):
        if cfg.model not in ATTENTIONS:
            raise ValueError(f"unknown model {cfg.model!r}; valid: {', '.join(ATTENTIONS)}")
        self.cfg = cfg
        self.train_sources, self.test_sources = dc.source_split(cfg.canvas.test_fraction)
        self.graphdef = nnx.graphdef(self._model(jax.random.key(0)))

    def _model(self, rng) -> ShowAttendTell:
        n = self.cfg.net
        return ShowAttendTell(len(dc.VOCAB), attention=self.cfg.model, features=n.features, hidden=n.hidden,
                              embed=n.embed, attention_features=n.attention, encoder_blocks=n.encoder_blocks,
                              expected_prob=self.cfg.expected_prob, rngs=nnx.Rngs(params=rng))

    def model(self, params) -> ShowAttendTell:
        return nnx.merge(self.graphdef, params["model"])

    def init(self, rng):
        return {"model": nnx.state(self._model(rng), nnx.Param), "baseline": jnp.zeros((), jnp.float32)}

    def optimizer(self, cfg: TrainConfig) -> optax.GradientTransformation:
        """The model by the config's optimizer; the baseline by SGD with rate 1 - decay on the gradient
        ``b - mean log p(y|s)``: exactly ``b <- decay·b + (1 - decay)·mean log p(y|s)``."""
        ema = optax.sgd(1.0 - self.cfg.baseline_decay)
        return optax.multi_transform({"model": make_optimizer(cfg), "baseline": ema},
                                     {"model": "model", "baseline": "baseline"})

    def batch(self, step: int):
        rng = np.random.default_rng((self.cfg.train.seed, 21, step))
        return dc.batch(rng, self.cfg.canvas, self.train_sources, self.cfg.batch_size)

    def loss(self, params, batch, rng):
        cfg = self.cfg
        caps = batch["captions"]
        logits, trace = self.model(params)(batch["images"], caps[:, :-1], rng=rng)
        targets = caps[:, 1:]
        mask = (targets != dc.PAD).astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets) * mask
        tokens = jnp.maximum(jnp.sum(mask), 1.0)
        loss = jnp.sum(nll) / tokens
        aux = {"nll": loss}
        if cfg.model == "soft":
            penalty = jnp.mean(doubly_stochastic_penalty(trace.alphas, mask))
            loss = loss + cfg.penalty * penalty / caps.shape[1]
            aux["penalty"] = penalty
        if cfg.model == "hard":
            log_p_y = -jnp.sum(nll, axis=1)  # [B]: the reward log p(y | s, a)
            log_p_s = jnp.sum(trace.log_p_locations * mask, axis=1)
            surrogate = score_function_surrogate(log_p_s, log_p_y, params["baseline"])
            entropy = jnp.sum(trace.entropy * mask) / tokens
            loss = loss - (cfg.reinforce * jnp.sum(surrogate) / tokens + cfg.entropy * entropy)
            # the baseline's "gradient" b - mean(log p(y|s)); its SGD step is the moving average (see optimizer)
            fit = 0.5 * (params["baseline"] - jax.lax.stop_gradient(jnp.mean(log_p_y))) ** 2
            loss = loss + fit - jax.lax.stop_gradient(fit)  # zero-valued: the reported loss stays the captioner's
            aux.update(entropy=entropy, baseline=params["baseline"], reward=jnp.mean(log_p_y))
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
def plot_attention(task: CaptionTask, params, path: Path, examples: int = 3) -> None:
    """Figs. 2-3 analogue: each test canvas, then one panel per generated word with its attention map."""
    test = task.test_set()
    images = test["images"][:examples]
    hyps, alphas = task.captions(params, images)
    h, w = task.model(params).encoder.grid(*images.shape[1:])
    steps = alphas.shape[1]
    words = [(c + ["<eos>"])[:steps] for c in hyps]
    cols = 1 + max(map(len, words))
    plt = pyplot()
    fig, axes = plt.subplots(examples, cols, figsize=(1.6 * cols, 1.1 * examples), squeeze=False)
    for r in range(examples):
        for ax in axes[r]:
            ax.axis("off")
        axes[r, 0].imshow(images[r], cmap="gray_r")
        axes[r, 0].set_title(" ".join(dc.decode(test["captions"][r])), fontsize=5)
        for k, word in enumerate(words[r]):
            ax = axes[r, k + 1]
            ax.imshow(images[r], cmap="gray_r")
            att = alphas[r, k].reshape(h, w)
            ax.imshow(np.kron(att, np.ones((images.shape[1] // h, images.shape[2] // w))), cmap="magma", alpha=0.6,
                      extent=(-0.5, images.shape[2] - 0.5, images.shape[1] - 0.5, -0.5))
            ax.set_title(word, fontsize=7)
    fig.suptitle(f"{task.cfg.model} attention: the map for each generated word", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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
                         aliases={"attention": "model"}, choices={"model": ATTENTIONS, "models": ATTENTIONS})
    if parsed is None:
        return None
    cfg, out, preset, mesh = parsed
    with cli.run_dir(parsed):
        summaries, _ = cli.run_models(parsed, run_one, ATTENTIONS)
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


def publish(run_dir: Path, results: Path, block: str, readme: Path | None = None) -> str:
    """The docs block from a comparison run: BLEU-1..4 and exact match beside the paper's Table 1, and the maps."""
    run_dir, results = Path(run_dir), Path(results)
    comparison = stage_comparison(run_dir, results)
    images = []
    for model in comparison["summaries"]:
        if (row_run(run_dir, model) / "attention.png").exists():
            shutil.copy(row_run(run_dir, model) / "attention.png", results / f"attention_{model}.png")
            images.append(f"attention_{model}.png")
    summaries = comparison["summaries"]
    first = next(iter(summaries.values()))
    rows = ["| model | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | exact match | wall time |", "|---|---|---|---|---|---|---|"]
    for model, s in summaries.items():
        e = s["eval"]
        rows.append(f"| {model} | " + " | ".join(f"{e[f'bleu_{n}']:.1f}" for n in (1, 2, 3, 4)) +
                    f" | {e['exact_match']:.3f} | {s['wall_s']:.0f} s |")
    for model, sets in PAPER.items():
        for name, scores in sets.items():
            rows.append(f"| the paper, {model} ({name}) | " + " | ".join(map(str, scores)) + " | | |")
    examples = ["```text"]
    captions = {m: _read_samples(row_run(run_dir, m) / "samples.txt") for m in summaries}
    for k, (ref, _) in enumerate(next(iter(captions.values()))[:4]):
        examples += [f"reference: {ref}"] + [f"{m + ':':10} {c[k][1]}" for m, c in captions.items()] + [""]
    examples[-1] = "```"
    text = "\n".join([
        f"Device: {first['device']}; preset `{comparison['preset']}`, {first['steps']} steps of "
        f"{comparison['batch_size']} canvases, {comparison['eval_size']} test canvases (held-out digit images); "
        f"written by `python -m experiments.publish show_attend_tell {run_dir} --block {block}` from "
        f"`{comparison['command']}`.", "", *rows, "", "The first test canvases (greedy decoding):", "", *examples, "",
        *[f"![{name[:-4]}]({repo_relative(results / name)})" for name in images]])
    update_readme_block(block, text, readme)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
