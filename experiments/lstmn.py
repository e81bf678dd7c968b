"""LSTMN vs LSTM as character language models (Cheng, Dong and Lapata 2016, §5.1 at our scale).

    python -m experiments.lstmn --preset smoke --out /tmp/lstmn        # main variant: lstmn
    python -m experiments.lstmn --set models=lstmn,lstm                 # comparison at equal parameters
    python -m experiments.lstmn --set model=lstm
    python -m experiments.lstmn --set models=lstmn,lstmn_last        # control: the read pinned to the newest slot
    python -m experiments.lstmn --list

Text: ``pydoc_data.topics``, the Python documentation bundled with CPython (the Transformer LM's
corpus, :mod:`experiments.data.chars`). The LSTM baseline's hidden size is chosen so that its
parameter count matches the LSTMN's (``net.lstm_hidden=0``). Each run writes, beside config.json,
metrics.jsonl, checkpoints and summary.json: ``samples.txt`` (temperature 0.8) and, for the LSTMN,
``attention.png`` (intra-attention of every character over the previous ones on a held-out
sentence: the paper's Fig. 1 analogue) and ``attention`` in summary.json: where the read goes on held-out
text (:func:`attention_stats`). Eval metric: ``bits_per_char`` on held-out windows of ``length`` characters,
each read from an empty state.

``lstmn_last`` is a control, not a paper model: the LSTMN with its read pinned to the newest slot
(``attn_jax.nn.lstmn.LSTMN(read="last")``), i.e. an LSTM with the LSTMN's gates, hidden size and learning rate
and without the attention's parameters. It isolates what the intra-attention read does.
"""

from __future__ import annotations

import dataclasses
import functools
import json
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
from attn_jax.train.report import mean_std, plot_metric_curves, pyplot
from attn_jax.train.rundir import read_metrics
from experiments import tables
from experiments.data import chars
from experiments.readme import repo_relative, row_config, row_run, update_readme_block

MODELS = ("lstmn", "lstm", "lstmn_last")


@dataclasses.dataclass(frozen=True)
class NetConfig:
    embed: int = 64  # character embedding size
    hidden: int = 128  # LSTMN memory/hidden size
    attention: int = 64  # LSTMN intra-attention size
    lstm_hidden: int = 0  # 0: the size that gives the LSTM the LSTMN's parameter count


@dataclasses.dataclass(frozen=True)
class Config:
    model: str = "lstmn"  # lstmn | lstm (the baseline) | lstmn_last (control: the read pinned to the newest slot)
    models: tuple[str, ...] = ()  # comparison mode
    length: int = 64  # characters per training window
    batch_size: int = 32  # training windows per step
    eval_chars: int = 20000  # held-out characters scored for bits_per_char
    eval_split: str = "test"  # test (the held-out 10%) | val (the training part's tail, for the lr sweep)
    curve_chars: int = 4096  # held-out characters scored at each eval_every point (the learning curve)
    lr_lstmn: float = 0.0  # the LSTMN's learning rate (0: train.learning_rate): each model its sweep's best
    lr_lstm: float = 0.0  # the LSTM's learning rate (0: train.learning_rate)
    sentence: str = "Every object has an identity, a type and a value."  # attention plot (a held-out sentence)
    net: NetConfig = NetConfig()
    train: TrainConfig = TrainConfig(steps=1200, optimizer="adam", learning_rate=3e-3, schedule="cosine",
                                     warmup_steps=50, clip_norm=1.0, log_every=50, checkpoint_every=400,
                                     eval_every=100)


def smoke() -> Config:
    return Config(length=16, batch_size=8, eval_chars=256, curve_chars=64,
                  net=NetConfig(embed=8, hidden=16, attention=8),
                  train=TrainConfig(steps=20, learning_rate=3e-3, log_every=5, checkpoint_every=10, eval_every=10))


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
def lstmn_parameters(vocab: int, n: NetConfig, read: str = "attention") -> int:
    d, a, e = n.hidden, n.attention, n.embed
    attention = 2 * d * a + e * a + a if read == "attention" else 0
    return vocab * e + attention + (4 * d * (d + e) + 4 * d) + (d * vocab + vocab)


def lstm_parameters(vocab: int, embed: int, h: int) -> int:
    return vocab * embed + (4 * h * (h + embed) + 4 * h) + (h * vocab + vocab)


def flops_per_char(model: str, vocab: int, n: NetConfig, length: int, lstm_hidden: int | None = None) -> float:
    """Forward FLOPs per predicted character (a multiply-add is 2), averaged over a window of ``length``: the
    matrix products, the attention's scores and sums (counted as 2 per multiply-add, the tanh and softmax as
    1 per element) and the readout; the embedding is a lookup (0). The LSTMN reads a tape of t + 1 slots at
    step t (0-based), so its attention costs grow with the position: the average is over t = 0..length-1.
    ``lstmn_last`` is counted as the LSTM it is (its implementation's one-hot read over the tape is not)."""
    e = n.embed
    readout = 2 * vocab * (lstm_hidden if model == "lstm" else n.hidden)
    if model in ("lstm", "lstmn_last"):
        h = lstm_hidden if model == "lstm" else n.hidden
        return 2 * 4 * h * (h + e) + readout
    d, a = n.hidden, n.attention
    slots = (length + 1) / 2  # the mean of t + 1 over t = 0..length-1
    query = 2 * a * (e + d)  # W_x x_t + W_h~ h~_{t-1}
    scores = slots * (a + a + 2 * a)  # add the query to each key, tanh, dot with v
    softmax = 3 * slots  # exp, sum, divide
    sums = 2 * 2 * slots * d  # h~_t and c~_t
    gates = 2 * 4 * d * (d + e)
    key = 2 * d * a  # W_h h_t, written once to the tape
    return query + scores + softmax + sums + gates + key + readout


def matched_lstm_hidden(vocab: int, n: NetConfig) -> int:
    """The LSTM hidden size whose parameter count is closest to the LSTMN's."""
    target = lstmn_parameters(vocab, n)
    return min(range(1, 4 * n.hidden), key=lambda h: abs(lstm_parameters(vocab, n.embed, h) - target))


class CharRNN(nnx.Module):
    """Embedding -> LSTMN or LSTM -> softmax readout: ``tokens [B, T]`` -> logits ``[B, T, V]``."""

    def __init__(self, vocab: int, n: NetConfig, model: str, *, rngs: nnx.Rngs):
        self.kind = model
        self.embed = nnx.Embed(vocab, n.embed, rngs=rngs)
        self.is_lstmn = model.startswith("lstmn")
        if self.is_lstmn:
            hidden = n.hidden
            self.rnn = LSTMN(n.embed, hidden, attention_features=n.attention, rngs=rngs,
                             read="last" if model == "lstmn_last" else "attention")
        else:
            hidden = n.lstm_hidden or matched_lstm_hidden(vocab, n)
            self.rnn = nnx.OptimizedLSTMCell(n.embed, hidden, rngs=rngs)
        self.hidden = hidden
        self.head = nnx.Linear(hidden, vocab, rngs=rngs)

    def __call__(self, tokens, return_weights: bool = False):
        x = self.embed(tokens)
        if self.is_lstmn:
            h, w = self.rnn(x, return_weights=True)
            return (self.head(h), w) if return_weights else self.head(h)
        _, h = jax.lax.scan(lambda c, xt: self.rnn(c, xt), self.init_state(tokens.shape[0], 0), jnp.swapaxes(x, 0, 1))
        return self.head(jnp.swapaxes(h, 0, 1))

    def init_state(self, batch: int, length: int):
        if self.is_lstmn:
            return self.rnn.init_state(batch, length)
        zeros = jnp.zeros((batch, self.hidden))
        return zeros, zeros

    def step(self, state, tokens):
        """One character per sequence ``tokens [B]``: ``(state, logits [B, V])``."""
        x = self.embed(tokens)
        if self.is_lstmn:
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
        self.data = chars.CharCorpus(cfg.eval_chars, cfg.eval_split)
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

    def curve_metrics(self, params) -> dict[str, float]:
        """The learning curve's held-out point: bits per character on the first ``curve_chars`` held-out ones."""
        nll = functools.partial(self._nll, params)
        return {"bits_per_char": self.data.bits_per_char(nll, self.cfg.length, 64, limit=self.cfg.curve_chars)}

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


def attention_stats(weights: np.ndarray) -> dict[str, float]:
    """Where the intra-attention read goes, from ``weights [B, T, T + 1]`` (step t reads slots 0..t; slot t holds
    the newest state, h_{t-1}), averaged over the windows and the steps t >= 1 (step 0 has one slot to read):
    ``newest`` the weight on the newest slot (1 for an LSTM), ``slots`` the effective number of slots read
    (exp of the weights' entropy; 1 for an LSTM) and ``lag`` the mean distance back in characters of what is
    read (0 = the newest slot; the zero start slot counts as t characters back)."""
    w = np.asarray(weights, np.float64)[:, 1:]  # steps t = 1..T-1
    t = np.arange(1, w.shape[1] + 1)
    newest = np.take_along_axis(w, t[None, :, None], axis=2)[..., 0]
    entropy = -np.sum(np.where(w > 0, w * np.log(np.where(w > 0, w, 1.0)), 0.0), axis=2)
    back = np.maximum(t[:, None] - np.arange(w.shape[2])[None, :], 0)  # [T-1, T+1]; unreachable slots weigh 0
    return {"newest": float(newest.mean()), "slots": float(np.exp(entropy).mean()),
            "lag": float(np.sum(w * back[None], axis=2).mean())}


def held_out_attention(task: CharLMTask, params) -> dict[str, float]:
    """:func:`attention_stats` of an LSTMN on the learning curve's held-out windows (the first ``curve_chars``)."""
    windows = task.data.eval_windows(task.cfg.length)[:max(task.cfg.curve_chars // task.cfg.length, 1)]
    weights = jax.jit(lambda p, x: task.model(p)(x, return_weights=True)[1])(params, jnp.asarray(windows[:, :-1]))
    return attention_stats(np.asarray(weights))


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
def model_config(cfg: Config) -> Config:
    """The row's config: ``train.learning_rate`` set to the model's own rate (``lr_lstmn``, which the control
    ``lstmn_last`` shares, / ``lr_lstm``) if given."""
    lr = cfg.lr_lstmn if cfg.model.startswith("lstmn") else cfg.lr_lstm
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, learning_rate=lr)) if lr else cfg


def run_one(cfg: Config, out: Path, preset: str, mesh=None) -> dict:
    cfg = model_config(cfg)
    task = CharLMTask(cfg)
    config = {"experiment": "lstmn", "preset": preset, **to_dict(dataclasses.replace(cfg, models=()))}
    summary, params = train(task, cfg.train, out, config=config, mesh=mesh)
    sample = task.sample(params, "The ", 200)
    if jax.process_index() == 0:
        (out / "samples.txt").write_text(sample)
        if cfg.model == "lstmn":
            plot_attention(task, params, out / "attention.png")
    hidden = task.model(params).hidden
    flops = flops_per_char(cfg.model, len(task.data.vocab), cfg.net, cfg.length, hidden)
    fields = {"hidden": hidden, "sample": sample, "flops_per_char": flops}
    if cfg.model == "lstmn":
        fields["attention"] = held_out_attention(task, params)
    return add_to_summary(out, summary, fields)


def main(argv=None) -> dict | None:
    parsed = cli.parse("lstmn", PRESETS, argv, default_preset="quick", variants=VARIANTS,
                       choices={"model": MODELS, "models": MODELS, "eval_split": ("test", "val")})
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


def _mean_std(values, fmt: str) -> str:
    mean, std = mean_std(values)
    return f"{mean:{fmt}} ± {std:{fmt}}"


def steps_to_flat(metrics: Path, tolerance: float = 0.05) -> int | None:
    """The first step whose held-out learning-curve point (``eval/bits_per_char``) is within ``tolerance`` bits of
    the run's last one: how long the curve took to flatten (the last step when it only got there at the end)."""
    curve = [(r["step"], r["eval/bits_per_char"]) for r in read_metrics(metrics) if "eval/bits_per_char" in r]
    if not curve:
        return None
    final = curve[-1][1]
    return next(step for step, bpc in curve if bpc <= final + tolerance)


def publish(run_dir: Path | list[Path], results: Path, block: str, readme: Path | None = None) -> str:
    """The published table ``results/comparison.json`` (experiments.tables' schema; rows ``lstmn``, ``lstm``,
    held-out ``bits_per_char`` over seeds, each row with its learning rate, hidden size, FLOPs per character and
    per-seed sequences until its curve flattened) of the one comparison folder evaluated on the test text, the
    learning-rate sweep of the other folders (``eval_split=val``, one rate each) beside it, the learning curves
    over seeds, the attention figure and the docs block ``block``."""
    run_dirs = [Path(r) for r in (run_dir if isinstance(run_dir, (list, tuple)) else [run_dir])]
    results = Path(results)
    found = {d: json.loads((d / "comparison.json").read_text()) for d in run_dirs}
    split = {d: row_config(d, next(iter(c["summaries"])))["eval_split"] for d, c in found.items()}
    tests = [d for d in run_dirs if split[d] == "test"]
    if len(tests) != 1:
        raise SystemExit(f"give exactly one folder evaluated on the test text (eval_split=test), got {len(tests)}")
    (main_dir,), sweep_dirs = tests, [d for d in run_dirs if split[d] == "val"]
    comparison = found[main_dir]
    summaries = comparison["summaries"]
    table = tables.from_summaries(summaries, comparison["command"], metrics=["bits_per_char"])
    table["task"] = {"corpus": chars.SOURCE, "length": comparison["length"], "batch_size": comparison["batch_size"]}
    sweep: dict[str, dict[str, dict]] = {}
    for d in sweep_dirs:
        for model, s in found[d]["summaries"].items():
            lr = row_config(d, model)["train"]["learning_rate"]
            sweep.setdefault(model, {})[f"{lr:g}"] = {"bits_per_char": s["per_seed"]["bits_per_char"],
                                                      "seeds": s["seeds"], "steps": s["steps"]}
    if sweep:
        table["lr_sweep"] = {"split": "val", "commands": [found[d]["command"] for d in sweep_dirs], "rows": sweep}
    for model, row in table["rows"].items():
        config = row_config(main_dir, model)
        seeds = [cli.seed_dir(main_dir, model, k) for k in table["seeds"]]
        row.update(hidden=summaries[model]["hidden"], flops_per_char=summaries[model]["flops_per_char"],
                   learning_rate=config["train"]["learning_rate"],
                   sequences_to_flat=[(steps_to_flat(d / "metrics.jsonl") or 0) * comparison["batch_size"]
                                      for d in seeds])
        reads = [json.loads((d / "summary.json").read_text()).get("attention") for d in seeds]
        if all(reads):
            row["attention"] = {k: [r[k] for r in reads] for k in reads[0]}
    tables.write(results, table)
    images = []
    seed_dirs = {m: [cli.seed_dir(main_dir, m, k) for k in table["seeds"]] for m in summaries}
    plot_metric_curves(seed_dirs, "eval/bits_per_char", results / "learning_curve.png",
                       f"character LM on {chars.SOURCE}: held-out curve", "bits per character (held-out)",
                       x_per_step=comparison["batch_size"], xlabel="training windows seen")
    images.append("learning_curve.png")
    if (row_run(main_dir, "lstmn") / "attention.png").exists():
        shutil.copy(row_run(main_dir, "lstmn") / "attention.png", results / "attention.png")
        images.append("attention.png")
    rows = table["rows"]
    extra = {"lr": {r: f"{v['learning_rate']:g}" for r, v in rows.items()},
             "hidden": {r: str(v["hidden"]) for r, v in rows.items()},
             "parameters": {r: f"{v['parameters']:,}" for r, v in rows.items()},
             "forward FLOPs / char": {r: f"{v['flops_per_char'] / 1e3:,.0f}k" for r, v in rows.items()},
             "windows until flat": {r: _mean_std(v["sequences_to_flat"], ",.0f") for r, v in rows.items()},
             "read: weight on newest slot": {r: _mean_std(v["attention"]["newest"], ".2f") if "attention" in v
                                             else "1 (no attention)" for r, v in rows.items()},
             "read: slots (exp entropy)": {r: _mean_std(v["attention"]["slots"], ".1f") if "attention" in v
                                           else "1" for r, v in rows.items()}}
    sweep_lines = []
    if sweep:
        rates = sorted({lr for m in sweep.values() for lr in m}, key=float)
        sweep_lines = ["Learning-rate sweep (validation text: the training part's last "
                       f"{row_config(sweep_dirs[0], next(iter(found[sweep_dirs[0]]['summaries'])))['eval_chars']:,} "
                       "characters, held out of training; seed "
                       f"{', '.join(map(str, next(iter(next(iter(sweep.values())).values()))['seeds']))}), "
                       "held-out bits per character:", "",
                       "| model | " + " | ".join(f"lr {r}" for r in rates) + " |",
                       "|---|" + "---:|" * len(rates)]
        for model, by_lr in sweep.items():
            cells = [f"{np.mean(by_lr[r]['bits_per_char']):.3f}" if r in by_lr else "–" for r in rates]
            sweep_lines.append(f"| {model} | " + " | ".join(cells) + " |")
        sweep_lines.append("")
    first = next(iter(summaries.values()))
    prov = table["provenance"]
    t = row_config(main_dir, next(iter(summaries)))["train"]
    samples = [x for m, s in summaries.items() for x in (f"{m} (first seed):", "", "```text", s["sample"], "```", "")]
    text = "\n".join([
        f"Device: {prov['device']}; commit {tables.short_commit(prov['commit'])}; {first['steps']} steps of "
        f"{comparison['batch_size']} windows of {comparison['length']} characters of `{chars.SOURCE}` per run, "
        f"{t['optimizer']} ({t['schedule']}), each model at its own learning rate from the sweep below (the control "
        "lstmn_last, if run, at the LSTMN's); seeds "
        f"{', '.join(map(str, table['seeds']))}; held-out bits per character on the test text. Written by "
        f"`python -m experiments.publish lstmn {' '.join(map(str, run_dirs))} --block {block}"
        + (f" --table {results.name}" if results.name != block else "") + f"` from `{comparison['command']}`"
        + (" and the sweep's " + ", ".join(f"`{found[d]['command']}`" for d in sweep_dirs) if sweep_dirs else "")
        + ". Windows until flat: training windows until the held-out curve came within 0.05 bits of its last "
        "point. FLOPs: the forward pass per predicted character, counted from the shapes "
        "(`experiments.lstmn.flops_per_char`). No wall times: the runs shared the cores with other work (each run's "
        "`wall_s` is in its summary.json).",
        "", tables.markdown(table, [("bits_per_char", "held-out bits/char", ".3f")], {"bits_per_char": False},
                            extra=extra),
        "", *sweep_lines, "Samples (temperature 0.8):", "", *samples,
        *[f"![{name[:-4]}]({repo_relative(results / name)})" for name in images],
    ])
    update_readme_block(block, text, readme)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
