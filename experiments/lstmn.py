"""LSTMN vs LSTM as character language models (Cheng, Dong and Lapata 2016, §5.1 at our scale).

    python -m experiments.lstmn --preset smoke --out /tmp/lstmn        # main variant: lstmn
    python -m experiments.lstmn --set models=lstmn,lstm                 # comparison at equal parameters
    python -m experiments.lstmn --set model=lstm
    python -m experiments.lstmn --list

Text: ``pydoc_data.topics``, the Python documentation bundled with CPython (the Transformer LM's
corpus, :mod:`experiments.data.chars`). The LSTM baseline's hidden size is chosen so that its
parameter count matches the LSTMN's (``net.lstm_hidden=0``). Each run writes, beside config.json,
metrics.jsonl, checkpoints and summary.json: ``samples.txt`` (temperature 0.8) and, for the LSTMN,
``attention.png`` (intra-attention of every character over the previous ones on a held-out
sentence: the paper's Fig. 1 analogue). Eval metric: ``bits_per_char`` on held-out windows of
``length`` characters, each read from an empty state.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attn_jax.nn.lstmn import LSTMN
from attn_jax.train import TrainConfig, add_to_summary, cli, train
from attn_jax.train.config import to_dict
from attn_jax.train.report import plot_metric_curves, pyplot
from experiments.data import chars
from experiments.readme import repo_relative, row_run, stage_comparison, update_readme_block

MODELS = ("lstmn", "lstm")


@dataclasses.dataclass(frozen=True)
class NetConfig:
    embed: int = 64  # character embedding size
    hidden: int = 128  # LSTMN memory/hidden size
    attention: int = 64  # LSTMN intra-attention size
    lstm_hidden: int = 0  # 0: the size that gives the LSTM the LSTMN's parameter count


@dataclasses.dataclass(frozen=True)
class Config:
    model: str = "lstmn"  # lstmn | lstm (the baseline)
    models: tuple[str, ...] = ()  # comparison mode
    length: int = 64  # characters per training window
    batch_size: int = 32  # training windows per step
    eval_chars: int = 20000  # held-out characters scored for bits_per_char
    sentence: str = "Every object has an identity, a type and a value."  # attention plot (a held-out sentence)
    net: NetConfig = NetConfig()
    train: TrainConfig = TrainConfig(steps=1200, optimizer="adam", learning_rate=3e-3, schedule="cosine",
                                     warmup_steps=50, clip_norm=1.0, log_every=50, checkpoint_every=400)


def smoke() -> Config:
    return Config(length=16, batch_size=8, eval_chars=256, net=NetConfig(embed=8, hidden=16, attention=8),
                  train=TrainConfig(steps=20, learning_rate=3e-3, log_every=5, checkpoint_every=10))


def quick() -> Config:
    return Config()


def paper() -> Config:
    """Closer to the paper's LM setting (hidden 300 on PTB words; here characters, longer windows)."""
    return Config(length=128, batch_size=64, eval_chars=80_000, net=NetConfig(embed=128, hidden=300, attention=150),
                  train=TrainConfig(steps=30_000, learning_rate=2e-3, schedule="cosine", warmup_steps=500,
                                    clip_norm=1.0, log_every=200, checkpoint_every=2000))


PRESETS = {"smoke": smoke, "quick": quick, "paper": paper}
VARIANTS = f"variants: model={'|'.join(MODELS)}  (main: lstmn; models=lstmn,lstm compares them)"


# --- models ---------------------------------------------------------------------------------------------------------
def lstmn_parameters(vocab: int, n: NetConfig) -> int:
    d, a, e = n.hidden, n.attention, n.embed
    return vocab * e + (2 * d * a + e * a + a) + (4 * d * (d + e) + 4 * d) + (d * vocab + vocab)


def lstm_parameters(vocab: int, embed: int, h: int) -> int:
    return vocab * embed + (4 * h * (h + embed) + 4 * h) + (h * vocab + vocab)


def matched_lstm_hidden(vocab: int, n: NetConfig) -> int:
    """The LSTM hidden size whose parameter count is closest to the LSTMN's."""
    target = lstmn_parameters(vocab, n)
    return min(range(1, 4 * n.hidden), key=lambda h: abs(lstm_parameters(vocab, n.embed, h) - target))


class CharRNN(nnx.Module):
    """Embedding -> LSTMN or LSTM -> softmax readout: ``tokens [B, T]`` -> logits ``[B, T, V]``."""

    def __init__(self, vocab: int, n: NetConfig, model: str, *, rngs: nnx.Rngs):
        self.kind = model
        self.embed = nnx.Embed(vocab, n.embed, rngs=rngs)
        if model == "lstmn":
            hidden = n.hidden
            self.rnn = LSTMN(n.embed, hidden, attention_features=n.attention, rngs=rngs)
        else:
            hidden = n.lstm_hidden or matched_lstm_hidden(vocab, n)
            self.rnn = nnx.OptimizedLSTMCell(n.embed, hidden, rngs=rngs)
        self.hidden = hidden
        self.head = nnx.Linear(hidden, vocab, rngs=rngs)

    def __call__(self, tokens, return_weights: bool = False):
        x = self.embed(tokens)
        if self.kind == "lstmn":
            h, w = self.rnn(x, return_weights=True)
            return (self.head(h), w) if return_weights else self.head(h)
        _, h = jax.lax.scan(lambda c, xt: self.rnn(c, xt), self.init_state(tokens.shape[0], 0), jnp.swapaxes(x, 0, 1))
        return self.head(jnp.swapaxes(h, 0, 1))

    def init_state(self, batch: int, length: int):
        if self.kind == "lstmn":
            return self.rnn.init_state(batch, length)
        zeros = jnp.zeros((batch, self.hidden))
        return zeros, zeros

    def step(self, state, tokens):
        """One character per sequence ``tokens [B]``: ``(state, logits [B, V])``."""
        x = self.embed(tokens)
        if self.kind == "lstmn":
            state, h, _ = self.rnn.step(state, x)
        else:
            state, h = self.rnn(state, x)
        return state, self.head(h)


# --- the task -------------------------------------------------------------------------------------------------------
class CharLMTask:
    def __init__(self, cfg: Config):
        if cfg.model not in MODELS:
            raise ValueError(f"unknown model {cfg.model!r}; valid: {', '.join(MODELS)}")
        self.cfg = cfg
        self.data = chars.CharCorpus(cfg.eval_chars)
        self.graphdef = nnx.graphdef(self._model(jax.random.key(0)))

    def _model(self, rng) -> CharRNN:
        return CharRNN(len(self.data.vocab), self.cfg.net, self.cfg.model, rngs=nnx.Rngs(params=rng))

    def model(self, params) -> CharRNN:
        return nnx.merge(self.graphdef, params)

    def init(self, rng):
        return nnx.state(self._model(rng), nnx.Param)

    def batch(self, step: int):
        rng = np.random.default_rng((self.cfg.train.seed, 7, step))
        return {"tokens": self.data.windows(rng, self.cfg.batch_size, self.cfg.length)}

    def loss(self, params, batch, rng):
        del rng
        tokens = batch["tokens"]
        nll = optax.softmax_cross_entropy_with_integer_labels(self.model(params)(tokens[:, :-1]), tokens[:, 1:])
        return jnp.mean(nll), {"bits_per_char": jnp.mean(nll) / math.log(2.0)}

    @functools.cached_property
    def _nll(self):
        return jax.jit(lambda p, x: optax.softmax_cross_entropy_with_integer_labels(self.model(p)(x[:, :-1]), x[:, 1:]))

    def evaluate(self, params) -> dict[str, float]:
        nll = functools.partial(self._nll, params)
        return {"bits_per_char": self.data.bits_per_char(nll, self.cfg.length, 64)}

    def sample(self, params, prompt: str, length: int, temperature: float = 0.8, seed: int = 0) -> str:
        """Feed ``prompt`` then draw ``length`` characters, one step at a time under ``lax.scan``."""
        model, ids = self.model(params), jnp.asarray(self.data.encode(prompt))

        @jax.jit
        def run(key):
            state = model.init_state(1, len(ids) + length)
            state, logits = jax.lax.scan(lambda s, t: model.step(s, t[None]), state, ids)

            def draw(carry, k):
                s, last = carry
                tok = jax.random.categorical(k, last[0] / temperature)
                s, nxt = model.step(s, tok[None])
                return (s, nxt), tok

            return jax.lax.scan(draw, (state, logits[-1]), jax.random.split(key, length))[1]

        return prompt + self.data.decode(run(jax.random.key(seed)))


# --- plots ----------------------------------------------------------------------------------------------------------
def plot_attention(task: CharLMTask, params, path: Path) -> None:
    """Fig. 1 analogue: row t = the weights with which character t reads the tape (slot 0 = the start state)."""
    text = task.cfg.sentence
    ids = jnp.asarray(task.data.encode(text))[None]
    _, w = task.model(params)(ids, return_weights=True)
    w = np.asarray(w[0])  # [T, T + 1]
    labels = ["∅"] + [c if c != " " else "␣" for c in text]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.17 * len(labels)), max(5.0, 0.17 * len(labels))))
    vmax = float(w[3:].max()) if len(text) > 3 else 1.0  # the first rows have 1-3 slots to share: off the scale
    ax.imshow(w, cmap="Blues", vmin=0.0, vmax=vmax, aspect="equal", interpolation="nearest")
    ax.set_xticks(range(len(labels)), labels, fontsize=6)
    ax.set_yticks(range(len(text)), labels[1:], fontsize=6)
    ax.set_xlabel("tape slot read (previous characters)")
    ax.set_ylabel("current character")
    ax.set_title("LSTMN intra-attention")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- runs -----------------------------------------------------------------------------------------------------------
def run_one(cfg: Config, out: Path, preset: str, mesh=None) -> dict:
    task = CharLMTask(cfg)
    config = {"experiment": "lstmn", "preset": preset, **to_dict(dataclasses.replace(cfg, models=()))}
    summary, params = train(task, cfg.train, out, config=config, mesh=mesh)
    sample = task.sample(params, "The ", 200)
    if jax.process_index() == 0:
        (out / "samples.txt").write_text(sample)
        if cfg.model == "lstmn":
            plot_attention(task, params, out / "attention.png")
    return add_to_summary(out, summary, {"hidden": task.model(params).hidden, "sample": sample})


def main(argv=None) -> dict | None:
    parsed = cli.parse("lstmn", PRESETS, argv, default_preset="quick", variants=VARIANTS,
                       choices={"model": MODELS, "models": MODELS})
    if parsed is None:
        return None
    cfg, out, preset, mesh = parsed
    with cli.run_dir(parsed):
        summaries, dirs = cli.run_models(parsed, run_one, MODELS)
        out = Path(out)
        if cli.is_comparison(cfg) and jax.process_index() == 0:
            plot_metric_curves(dirs, "bits_per_char", out / "learning_curve.png",
                               f"character LM on {chars.SOURCE} ({preset})", "bits per character (training batches)")
            cli.save_comparison(out, "lstmn", argv, summaries, preset=preset, batch_size=cfg.batch_size,
                                length=cfg.length)
    print(f"\nlstmn, preset {preset}: held-out bits per character")
    for m, s in summaries.items():
        print(f"  {m} (hidden {s['hidden']}, {s['parameters']:,} parameters): {s['eval']['bits_per_char']:.4f}")
    return summaries


def publish(run_dir: Path, results: Path, block: str, readme: Path | None = None) -> str:
    """Copy a comparison run's JSON and plots to ``results`` and write the docs block ``block`` from them."""
    run_dir, results = Path(run_dir), Path(results)
    comparison = stage_comparison(run_dir, results)
    images = []
    for src, name in ((run_dir / "learning_curve.png", "learning_curve.png"),
                      (row_run(run_dir, "lstmn") / "attention.png", "attention.png")):
        if src.exists():
            shutil.copy(src, results / name)
            images.append(name)
    summaries = comparison["summaries"]
    first = next(iter(summaries.values()))
    rows = ["| model | hidden | parameters | held-out bits per character | perplexity per character | wall time |",
            "|---|---|---|---|---|---|"]
    for model, s in summaries.items():
        bpc = s["eval"]["bits_per_char"]
        rows.append(f"| {model} | {s['hidden']} | {s['parameters']:,} | {bpc:.3f} | {2 ** bpc:.2f} | "
                    f"{s['wall_s']:.0f} s |")
    samples = [x for m, s in summaries.items() for x in (f"{m}:", "", "```text", s["sample"], "```", "")]
    text = "\n".join([
        f"Device: {first['device']}; preset `{comparison['preset']}`, {first['steps']} steps of "
        f"{comparison['batch_size']} windows of {comparison['length']} characters of `{chars.SOURCE}`; written by "
        f"`python -m experiments.publish lstmn {run_dir} --block {block}` from `{comparison['command']}`.",
        "", *rows, "", "Samples (temperature 0.8):", "", *samples,
        *[f"![{name[:-4]}]({repo_relative(results / name)})" for name in images],
    ])
    update_readme_block(block, text, readme)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
