"""Seq2seq alignment: no attention (Cho et al. 2014), RNNsearch (Bahdanau et al. 2015), Luong et al. 2015.

    python -m experiments.seq2seq --preset smoke --out /tmp/s2s                 # main variant: bahdanau, num2words-de
    python -m experiments.seq2seq --preset quick --set models=none,bahdanau     # comparison, one plot
    python -m experiments.seq2seq --preset quick --set data=dates --set model=local-p
    python -m experiments.seq2seq --list

Variants: ``model`` in {none, bahdanau, luong-dot, luong-general, luong-concat,
luong-location, local-m, local-p}; ``data`` in {num2words-de, num2words-fr,
dates, reorder}. ``models=a,b,...`` trains each with the same budget into
``OUT/<model>/seed<k>/`` (``seeds=0,1,2`` for several seeds, docs/results.md)
and draws them together in ``OUT/bleu_by_length.png``.

Each run writes (beside the harness's config.json, metrics.jsonl, checkpoints,
summary.json): ``bleu_by_length.png`` (Bahdanau 2015 Fig. 2 analogue),
``alignments.png`` (Fig. 3 analogue, decoded test samples), ``samples.txt``.
Eval metrics in summary.json: ``bleu`` (sacrebleu, on target tokens: German
number morphemes, French words, ISO characters), ``chrf`` (detokenised),
``exact_match``, ``perplexity`` (teacher-forced, per target token incl. EOS),
``bleu_len_<a>-<b>`` per source-length bucket; for dates and reorder (the
synthetic reordering language, experiments.data.reorder) ``aer`` (alignment
error rate of teacher-forced arg-max alignments against the gold links) and
``alignment_accuracy`` (the share of target tokens whose arg-max lands on a
sure gold source token); for num2words-de ``inversion`` (the share of
"<unit> und <tens>" pairs whose teacher-forced arg-max alignments are inverted,
as the English order demands).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attn_jax.nn import ATTENTIONS, Seq2Seq, beam_search, greedy_decode
from attn_jax.train import TrainConfig, add_to_summary, cli, rundir, text_metrics, train
from attn_jax.train.config import to_dict
from attn_jax.train.report import curve_key, plot_metric_curves, pyplot, save_line_plot
from experiments import tables
from experiments.data import dates, number_words, reorder
from experiments.data.text import BOS, EOS, PAD, ParallelData, Vocab, check_disjoint, pad_ids
from experiments.readme import repo_relative, row_run, update_readme_block

DATASETS = ("num2words-de", "num2words-fr", "dates", "reorder")
# num2words: the first three buckets hold the training lengths (train_max_tokens 10), the rest lengths no
# training source has
DEFAULT_BUCKETS = {"num2words-de": (4, 7, 10, 13, 16), "num2words-fr": (4, 7, 10, 13, 16), "dates": (7, 9, 11),
                   "reorder": (10, 16, 22, 28)}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    train_size: int = 20000  # training pairs generated
    test_size: int = 1000  # test pairs generated (no test source occurs in training)
    max_digits: int = 12  # num2words: numbers have 1..max_digits digits (uniform)
    train_digits: int = 9  # num2words with train_max_tokens 0: training numbers mostly up to this many digits
    # num2words: training sources of at most this many English tokens, test sources of any length (length
    # generalisation, experiments.data.number_words); 0: every length in training (train_digits' tail)
    train_max_tokens: int = 10
    seed: int = 0  # seed of the dataset generation and of the epoch-wise shuffling
    length_buckets: tuple[int, ...] = ()  # upper edges of the source-length buckets; () = per-dataset default


@dataclasses.dataclass(frozen=True)
class NetConfig:
    embed: int = 64  # source and target token embedding size
    hidden: int = 64  # encoder size per direction; the decoder has 2 * hidden
    # hidden size of the additive scores: bahdanau, luong-concat and local-p's window-centre predictor
    attention_features: int = 64
    cell: str = "gru"  # gru | lstm
    half_window: int = 3  # local-m / local-p: D
    local_score: str = "general"  # local-m / local-p: the score inside the window: dot | general
    implementation: str | None = None  # passed to the attention primitives


@dataclasses.dataclass(frozen=True)
class Config:
    # the attention: none | bahdanau | luong-dot | luong-general | luong-concat | luong-location | local-m | local-p
    model: str = "bahdanau"
    models: tuple[str, ...] = ()  # comparison mode: train each of these (same budget)
    data: str = "num2words-de"  # the dataset: num2words-de | num2words-fr | dates | reorder
    batch_size: int = 64  # training pairs per step
    beam_size: int = 4  # beam width of the test-set decoding; 1: greedy
    length_penalty: float = 1.0  # beam search ranks hypotheses by log p / length ** length_penalty
    eval_batch_size: int = 200  # test pairs per evaluation batch (decoding and teacher-forced perplexity)
    eval_examples: int = 0  # 0: the whole test split
    heatmaps: int = 4  # decoded test samples drawn in alignments.png (0: no plot)
    dataset: DataConfig = DataConfig()
    net: NetConfig = NetConfig()
    # eval_every: the learning curve's held-out perplexity (Seq2SeqTask.curve_metrics, no decoding)
    train: TrainConfig = TrainConfig(steps=1000, learning_rate=3e-3, warmup_steps=100, schedule="cosine",
                                     clip_norm=1.0, log_every=50, eval_every=100, checkpoint_every=500)


def smoke() -> Config:
    return Config(batch_size=32, beam_size=2, heatmaps=2,
                  dataset=DataConfig(train_size=512, test_size=64),
                  net=NetConfig(embed=16, hidden=16, attention_features=16),
                  train=TrainConfig(steps=30, learning_rate=3e-3, log_every=10, checkpoint_every=15))


def quick() -> Config:
    return Config()


def paper() -> Config:
    return Config(batch_size=128, beam_size=10, dataset=DataConfig(train_size=200000, test_size=3000),
                  net=NetConfig(embed=256, hidden=256, attention_features=256, cell="lstm"),
                  train=TrainConfig(steps=30000, learning_rate=1e-3, warmup_steps=1000, schedule="cosine",
                                    log_every=100, checkpoint_every=2000))


PRESETS = {"smoke": smoke, "quick": quick, "paper": paper}
VARIANTS = f"variants: model={'|'.join(ATTENTIONS)}  data={'|'.join(DATASETS)}  (main: bahdanau on num2words-de)"


@functools.lru_cache(maxsize=4)
def load(data: str, dcfg: DataConfig) -> tuple[ParallelData, ParallelData]:
    """(train, test) for a dataset name; cached so a comparison builds it once."""
    if data in ("num2words-de", "num2words-fr"):
        train_split, test_split = number_words.make_split(data[-2:], train_size=dcfg.train_size,
                                                          test_size=dcfg.test_size, max_digits=dcfg.max_digits,
                                                          train_digits=dcfg.train_digits, seed=dcfg.seed,
                                                          train_max_tokens=dcfg.train_max_tokens)
    elif data == "dates":
        train_split, test_split = dates.make_split(train_size=dcfg.train_size, test_size=dcfg.test_size,
                                                   seed=dcfg.seed)
    elif data == "reorder":
        train_split, test_split = reorder.make_split(train_size=dcfg.train_size, test_size=dcfg.test_size,
                                                     seed=dcfg.seed)
    else:
        raise ValueError(f"unknown data {data!r}; valid: {', '.join(DATASETS)}")
    check_disjoint(train_split, test_split)
    return train_split, test_split


def detokenize(data: str, tokens) -> str:
    if data == "dates":
        return "".join(tokens)
    if data == "reorder":
        return " ".join(tokens)
    return number_words.detokenize(tokens, data[-2:])


class Seq2SeqTask:
    """The harness's Task for one model on one dataset."""

    def __init__(self, cfg: Config):
        if cfg.model not in ATTENTIONS:
            raise ValueError(f"unknown model {cfg.model!r}; valid: {', '.join(ATTENTIONS)}")
        self.cfg = cfg
        self.train_data, self.test_data = load(cfg.data, cfg.dataset)
        if cfg.eval_examples:
            self.test_data = self.test_data.subset(range(min(cfg.eval_examples, len(self.test_data))))
        self.src_vocab = Vocab.build(self.train_data.source)
        self.tgt_vocab = Vocab.build(self.train_data.target)
        all_src = self.train_data.source + self.test_data.source
        self.src_len = max(map(len, all_src))
        self.tgt_len = max(map(len, self.train_data.target + self.test_data.target)) + 1
        self.max_decode = 2 * self.src_len + 2
        self.buckets = cfg.dataset.length_buckets or DEFAULT_BUCKETS[cfg.data]
        self.train_arrays = self._arrays(self.train_data)
        self.test_arrays = self._arrays(self.test_data)
        self.graphdef = nnx.graphdef(self._model(jax.random.key(0)))
        self.last_outputs: dict | None = None

    def _arrays(self, data: ParallelData) -> dict[str, np.ndarray]:
        src, src_len = pad_ids([self.src_vocab.encode(s) for s in data.source], self.src_len)
        tgt_ids = [self.tgt_vocab.encode(t) for t in data.target]
        tgt_out, _ = pad_ids(tgt_ids, self.tgt_len, eos=True)
        tgt_in, _ = pad_ids([[BOS] + t for t in tgt_ids], self.tgt_len)
        return {"source": src, "source_lengths": src_len, "target_in": tgt_in, "target_out": tgt_out}

    def _model(self, rng) -> Seq2Seq:
        n = self.cfg.net
        return Seq2Seq(len(self.src_vocab), len(self.tgt_vocab), rngs=nnx.Rngs(params=rng), attention=self.cfg.model,
                       embed_features=n.embed, hidden_features=n.hidden, attention_features=n.attention_features,
                       cell=n.cell, max_source_length=self.src_len, half_window=n.half_window,
                       local_score=n.local_score, implementation=n.implementation)

    def model(self, params) -> Seq2Seq:
        return nnx.merge(self.graphdef, params)

    # --- the Task protocol -------------------------------------------------------------------------------------
    def init(self, rng):
        return nnx.state(self._model(rng), nnx.Param)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """Rows ``step*B ... step*B+B-1`` of the epoch-wise shuffled training set: a pure function of the step."""
        n, b = len(self.train_data), self.cfg.batch_size
        positions = np.arange(step * b, step * b + b)
        rows = np.array([self._permutation(p // n)[p % n] for p in positions])
        return {k: v[rows] for k, v in self.train_arrays.items()}

    @functools.lru_cache(maxsize=2)  # noqa: B019 (one task per run)
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.cfg.dataset.seed, self.cfg.train.seed, epoch)).permutation(
            len(self.train_data))

    def loss(self, params, batch, rng):
        del rng
        logits, _ = self.model(params)(batch["source"], batch["source_lengths"], batch["target_in"])
        return _token_nll(logits, batch["target_out"])

    def evaluate(self, params) -> dict[str, float]:
        hyps, aligns, nll, tf_weights = self._decode_test(params)
        data = self.test_data
        refs = list(data.target)
        src_lengths = [len(s) for s in data.source]
        metrics = {
            "bleu": text_metrics.bleu(hyps, refs),
            "chrf": text_metrics.chrf([detokenize(self.cfg.data, h) for h in hyps], list(data.target_text)),
            "exact_match": text_metrics.exact_match(hyps, refs),
            "perplexity": float(np.exp(nll)),
        }
        for name, (score, _) in text_metrics.bleu_by_length(hyps, refs, src_lengths, self.buckets).items():
            metrics[f"bleu_len_{name}"] = score
        if data.gold is not None and self.cfg.model != "none":
            weights = [w[:len(t), :len(s)] for w, t, s in zip(tf_weights, data.target, data.source, strict=True)]
            metrics["aer"] = text_metrics.alignment_error_rate(weights, [g.sure for g in data.gold],
                                                               [g.possible for g in data.gold])
            metrics["alignment_accuracy"] = text_metrics.alignment_accuracy(weights, [g.sure for g in data.gold])
        if self.cfg.data == "num2words-de" and self.cfg.model != "none":
            metrics["inversion"], _ = number_words.inversion_rate(tf_weights, refs)
        self.last_outputs = {"hypotheses": hyps, "alignments": aligns}
        return metrics

    def curve_metrics(self, params) -> dict[str, float]:
        """The learning curve's held-out point (every ``train.eval_every`` steps): teacher-forced perplexity on the
        test set, the same number :meth:`evaluate` reports, without the decoding."""
        _, forced = self._eval_fns
        a, bs, n = self.test_arrays, self.cfg.eval_batch_size, len(self.test_data)
        nll_sum = tok = 0.0
        for start in range(0, n, bs):
            idx = np.minimum(np.arange(start, start + bs), n - 1)
            keep = min(bs, n - start)
            batch = {k: jnp.asarray(v[idx]) for k, v in a.items()}
            s_nll, s_tok, _ = forced(params, batch["source"], batch["source_lengths"], batch["target_in"],
                                     batch["target_out"])
            nll_sum += float(np.sum(np.asarray(s_nll)[:keep]))
            tok += float(np.sum(np.asarray(s_tok)[:keep]))
        return {"perplexity": float(np.exp(nll_sum / max(tok, 1.0)))}

    # --- evaluation helpers --------------------------------------------------------------------------------------
    @functools.cached_property
    def _eval_fns(self):
        cfg = self.cfg
        search = dict(max_length=self.max_decode, bos_id=BOS, eos_id=EOS, pad_id=PAD,
                      length_penalty=cfg.length_penalty)

        @jax.jit
        def decode(params, src, src_len):
            model = self.model(params)
            if cfg.beam_size > 1:
                return beam_search(model, src, src_len, beam_size=cfg.beam_size, **search)
            return greedy_decode(model, src, src_len, **search)

        @jax.jit
        def forced(params, src, src_len, tgt_in, tgt_out):
            logits, weights = self.model(params)(src, src_len, tgt_in)
            mask = tgt_out != PAD
            nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), tgt_out)
            return jnp.sum(nll * mask, axis=1), jnp.sum(mask, axis=1), weights  # per row

        return decode, forced

    def _decode_test(self, params):
        decode, forced = self._eval_fns
        a, bs = self.test_arrays, self.cfg.eval_batch_size
        n = len(self.test_data)
        hyps, aligns, tf_weights = [], [], []
        nll_sum = tok = 0.0
        for start in range(0, n, bs):
            idx = np.minimum(np.arange(start, start + bs), n - 1)  # pad the last batch by repetition
            keep = min(bs, n - start)
            batch = {k: jnp.asarray(v[idx]) for k, v in a.items()}
            out = decode(params, batch["source"], batch["source_lengths"])
            s_nll, s_tok, weights = forced(params, batch["source"], batch["source_lengths"], batch["target_in"],
                                           batch["target_out"])
            tokens, alignments, lengths = map(np.asarray, (out.tokens, out.alignments, out.lengths))
            for i in range(keep):
                hyps.append(self.tgt_vocab.decode(tokens[i]))
                aligns.append(alignments[i, :lengths[i], :a["source_lengths"][idx[i]]])
                tf_weights.append(np.asarray(weights[i]))
            nll_sum += float(np.sum(np.asarray(s_nll)[:keep]))
            tok += float(np.sum(np.asarray(s_tok)[:keep]))
        return hyps, aligns, nll_sum / max(tok, 1.0), tf_weights


def _token_nll(logits, targets):
    mask = (targets != PAD).astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    loss = jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    acc = jnp.sum((jnp.argmax(logits, -1) == targets) * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    return loss, {"token_accuracy": acc}


# --- reports and plots --------------------------------------------------------------------------------------------
def bucket_table(summaries: dict[str, dict], buckets) -> str:
    """Markdown table: one row per model, BLEU per source-length bucket plus the overall metrics."""
    names = text_metrics.bucket_names(buckets)
    overall = ["bleu", "chrf", "exact_match", "perplexity", "aer", "inversion"]
    present = [m for m in overall if any(m in s["eval"] for s in summaries.values())]
    head = "| model | " + " | ".join(present) + " | " + " | ".join(f"BLEU len {b}" for b in names) + " |"
    rows = [head, "|" + "---|" * (1 + len(present) + len(names))]
    for model, s in summaries.items():
        e = s["eval"]
        cells = [_fmt(e.get(m)) for m in present] + [_fmt(e.get(f"bleu_len_{b}")) for b in names]
        rows.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def plot_bleu_by_length(summaries: dict[str, dict], buckets, counts: dict[str, int], path: Path, title: str,
                        train_max: int | None = None) -> None:
    """BLEU per source-length bucket, one line per model (with a ±1 std band when the summary is over seeds), and
    a dashed line after the bucket holding ``train_max``, the longest training source."""
    plt = pyplot()
    names = [b for b in text_metrics.bucket_names(buckets) if b in counts]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for model, s in summaries.items():
        y = np.array([s["eval"].get(f"bleu_len_{b}", np.nan) for b in names], dtype=float)
        seeds = len(s.get("seeds", ()))
        (line,) = ax.plot(range(len(names)), y, marker="o", label=model + (f" ({seeds} seeds)" if seeds > 1 else ""))
        if seeds > 1:
            std = np.array([s["eval_std"].get(f"bleu_len_{b}", np.nan) for b in names], dtype=float)
            ax.fill_between(range(len(names)), y - std, y + std, color=line.get_color(), alpha=0.15, linewidth=0)
    if train_max is not None:
        all_names = text_metrics.bucket_names(buckets)
        inside = all_names[text_metrics.bucket_of(train_max, buckets)]
        if inside in names:
            ax.axvline(names.index(inside) + 0.5, color="gray", ls="--", lw=1,
                       label=f"longest training source ({train_max} tokens)")
    ax.set_xticks(range(len(names)), [f"{b}\n(n={counts[b]})" for b in names])
    ax.set_xlabel("source length (tokens)")
    ax.set_ylabel("BLEU")
    save_line_plot(fig, ax, path, title)


def plot_alignments(task: Seq2SeqTask, path: Path, count: int) -> list[int]:
    """Heatmaps of decoded test samples (rows: output tokens, columns: source tokens); returns the sample indices."""
    plt = pyplot()
    out, data = task.last_outputs, task.test_data
    order = np.argsort([len(s) for s in data.source], kind="stable")
    picks = [int(order[int(q * (len(order) - 1))]) for q in np.linspace(0.35, 0.95, count)]
    fig, axes = plt.subplots(1, count, figsize=(4.2 * count, 4.4), squeeze=False)
    for ax, i in zip(axes[0], picks, strict=True):
        hyp = out["hypotheses"][i]
        w = out["alignments"][i]
        rows = hyp + ["<eos>"] if len(w) > len(hyp) else hyp
        ax.imshow(w[:len(rows)], cmap="gray_r", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(data.source[i])), data.source[i], rotation=90, fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_title("exact" if tuple(hyp) == data.target[i] else "differs from reference", fontsize=8)
    fig.suptitle(f"{task.cfg.model} on {task.cfg.data}: attention while decoding (test samples)")
    with warnings.catch_warnings():  # CJK month/day tokens have no glyph in matplotlib's default font
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return picks


def write_samples(task: Seq2SeqTask, path: Path, count: int = 20) -> None:
    out, data = task.last_outputs, task.test_data
    lines = []
    for i in range(min(count, len(data))):
        lines += [f"src: {' '.join(data.source[i])}", f"ref: {' '.join(data.target[i])}",
                  f"hyp: {' '.join(out['hypotheses'][i])}", ""]
    path.write_text("\n".join(lines))


def run_one(cfg: Config, out: Path, preset: str, mesh=None) -> dict:
    task = Seq2SeqTask(cfg)
    config = {"experiment": "seq2seq", "preset": preset, **to_dict(dataclasses.replace(cfg, models=()))}
    summary, params = train(task, cfg.train, out, config=config, mesh=mesh)
    if task.last_outputs is None:  # a finished run was returned without training: decode for the reports
        task.evaluate(params)
    counts = _bucket_counts(task)
    train_max = max(map(len, task.train_data.source))
    plot_bleu_by_length({cfg.model: summary}, task.buckets, counts, out / "bleu_by_length.png",
                        f"{cfg.data}: BLEU by source length", train_max)
    if cfg.model != "none" and cfg.heatmaps:
        plot_alignments(task, out / "alignments.png", cfg.heatmaps)
    write_samples(task, out / "samples.txt")
    return add_to_summary(out, summary, {"bucket_counts": counts, "train_max_source_length": train_max})


def _bucket_counts(task: Seq2SeqTask) -> dict[str, int]:
    names = text_metrics.bucket_names(task.buckets)
    counts = dict.fromkeys(names, 0)
    for s in task.test_data.source:
        counts[names[text_metrics.bucket_of(len(s), task.buckets)]] += 1
    return {name: n for name, n in counts.items() if n}


def main(argv=None) -> dict | None:
    parsed = cli.parse("seq2seq", PRESETS, argv, default_preset="quick", variants=VARIANTS,
                       choices={"model": ATTENTIONS, "models": ATTENTIONS, "data": DATASETS})
    if parsed is None:
        return None
    cfg, out, preset, mesh = parsed
    with cli.run_dir(parsed):
        summaries, dirs = cli.run_models(parsed, run_one, ATTENTIONS)
        out = Path(out)
        buckets = cfg.dataset.length_buckets or DEFAULT_BUCKETS[cfg.data]
        first = next(iter(summaries.values()))
        counts, train_max = first["bucket_counts"], first.get("train_max_source_length")
        plot_bleu_by_length(summaries, buckets, counts, out / "bleu_by_length.png",
                            f"{cfg.data} ({preset}): BLEU by source length", train_max)
        table = bucket_table(summaries, buckets)
        if cli.is_comparison(cfg):
            rundir.write_json(out / "comparison.json", {
                "data": cfg.data, "preset": preset, "buckets": buckets, "bucket_counts": counts,
                "train_max_source_length": train_max,
                "command": cli.command_line("seq2seq", argv), "summaries": summaries})
    print(f"\n{cfg.data}, preset {preset}: test BLEU by source length (tokens)\n{table}\n")
    print(f"plots: {out / 'bleu_by_length.png'}"
          + "".join(f", {dirs[m][0] / 'alignments.png'}" for m in summaries if m != "none"))
    return summaries


def publish(run_dir: Path, results: Path, block: str, readme: Path | None = None) -> str:
    """The published table of a comparison run (``results/comparison.json``, experiments.tables' schema: every
    metric's mean, std and per-seed values), its plots, and the docs block ``block`` written from them."""
    run_dir, results = Path(run_dir), Path(results)
    comparison = json.loads((run_dir / "comparison.json").read_text())
    summaries, buckets, counts = comparison["summaries"], comparison["buckets"], comparison["bucket_counts"]
    names = [b for b in text_metrics.bucket_names(buckets) if b in counts]
    overall = [m for m in ("bleu", "chrf", "exact_match", "perplexity", "aer", "alignment_accuracy", "inversion")
               if any(m in s["per_seed"] for s in summaries.values())]
    metrics = overall + [f"bleu_len_{b}" for b in names if any(f"bleu_len_{b}" in s["per_seed"]
                                                              for s in summaries.values())]
    table = tables.from_summaries(summaries, comparison["command"], metrics)
    table["buckets"] = {"edges": list(buckets), "counts": counts,
                        "train_max_source_length": comparison.get("train_max_source_length")}
    tables.write(results, table)
    shutil.copy(run_dir / "bleu_by_length.png", results / "bleu_by_length.png")
    seed_dirs = {m: [d for k in table["seeds"] if (d := run_dir / cli.row_folder(m) / f"seed{k}").is_dir()]
                 for m in summaries}
    if all(seed_dirs.values()):
        key = curve_key(seed_dirs, "eval/perplexity", "loss")
        held_out = key != "loss"
        plot_metric_curves(seed_dirs, key, results / "learning_curve.png",
                           f"{comparison['data']}: " + ("held-out perplexity" if held_out else "training loss"),
                           "test-set perplexity (teacher forced)" if held_out
                           else "cross-entropy per target token (training batches)", log_y=True)
    images = []
    for model in summaries:
        if (row_run(run_dir, model) / "alignments.png").exists():
            shutil.copy(row_run(run_dir, model) / "alignments.png", results / f"alignments_{model}.png")
            images.append(model)
    train_max = comparison.get("train_max_source_length")
    beyond = [b for b in names if train_max is not None and int(b.split("-")[0].rstrip("+")) > train_max]
    rows = table["rows"]
    walls = [r["wall_s"] for r in rows.values()]
    lower = {"perplexity": False, "aer": False}
    fmt = {"exact_match": ".3f", "perplexity": ".3f", "aer": ".3f", "alignment_accuracy": ".3f", "inversion": ".2f"}
    columns = [(m, m, fmt.get(m, ".1f")) for m in overall
               if m in ("bleu", "exact_match", "aer", "alignment_accuracy", "inversion")]
    columns += [(f"bleu_len_{b}", f"BLEU {b}" + (" *" if b in beyond else ""), ".1f") for b in names]
    prov = table["provenance"]
    lines = [
        f"Device: {prov['device']}; commit {tables.short_commit(prov['commit'])}; "
        f"{next(iter(summaries.values()))['steps']} steps per run, seeds {', '.join(map(str, table['seeds']))}; "
        f"written by `python -m experiments.publish seq2seq {run_dir} --block {block}"
        + (f" --table {results.name}" if results.name != block else "")
        + f"` from `{prov['command']}` (training time per run, mean over seeds: "
        f"{min(walls):.0f}-{max(walls):.0f} s). Test set: {sum(counts.values())} pairs; buckets by source length in "
        "tokens with their sizes: " + ", ".join(f"{b} (n={counts[b]})" for b in names) + "."
        + (f" Training sources have at most {train_max} tokens: the buckets marked * hold lengths no training "
           "source has." if beyond else ""),
        "",
        tables.markdown(table, columns, higher=lower),
        "",
    ]
    longest = f"bleu_len_{names[-1]}"
    if "none" in rows and longest in metrics:
        base = rows["none"]["metrics"][longest]
        gaps = [f"{m} {r['metrics'][longest]['mean'] - base['mean']:+.1f}"
                + (" (within noise)" if tables.within_noise(r["metrics"][longest], base) else "")
                for m, r in rows.items() if m != "none"]
        lines += [f"Longest bucket ({names[-1]}), BLEU minus no attention's: " + ", ".join(gaps) + ".", ""]
    lines.append(f"![BLEU by source length]({repo_relative(results / 'bleu_by_length.png')})")
    if (results / "learning_curve.png").exists():
        lines.append(f"![learning curve]({repo_relative(results / 'learning_curve.png')})")
    lines += [f"![alignments {m}]({repo_relative(results / f'alignments_{m}.png')})" for m in images[:2]]
    if len(images) > 2:
        lines += ["", "Alignment heatmaps of the other models (first seed): " + ", ".join(
            f"[{m}]({repo_relative(results / f'alignments_{m}.png')})" for m in images[2:]) + "."]
    text = "\n".join(lines)
    update_readme_block(block, text, readme)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
