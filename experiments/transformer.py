"""The Transformer (Vaswani et al. 2017): translation beside the RNN models, a head/position ablation, a char LM.

    python -m experiments.transformer --preset smoke --out /tmp/tf        # main variant: translate (num2words EN->DE)
    python -m experiments.transformer --set task=ablation                 # 1/4/8/16 heads, sinusoidal vs learned
    python -m experiments.transformer --set task=lm                       # characters of Python's own docs
    python -m experiments.transformer --mesh data=2,model=4 ...           # any task, sharded (docs/flax.md)

``task=translate`` trains an encoder-decoder on the seq2seq experiment's data
(``data=num2words-de|num2words-fr|dates``, the same splits) with that
experiment's budget (steps x batch) and reports the same metrics (BLEU, chrF,
exact match, BLEU by source length, perplexity), decoded by beam search over a
KV cache. ``task=ablation`` trains the translate model once per ``heads`` value
at fixed d_model (head_dim = d_model / heads, as Table 3 row A; rows
``heads=<h>``), once per ``ablation_key_sizes`` value at the base heads (row B:
a smaller key and value size, rows ``key size=<d>``), and once with learned
positions (row E, ``learned positions``), and writes ``ablation.json`` and a
table; ``seeds=...`` runs every row per seed. ``task=lm`` is a
decoder-only character model on the text of ``pydoc_data.topics`` (the Python
documentation topics that ship with CPython's standard library), split 90/10;
eval ``bits_per_char`` on the held-out 10%; ``samples.txt`` holds sampled text.
Label smoothing (``label_smoothing``) and the paper's warmup schedule
(``train.schedule=rsqrt``) are the defaults.

Each run writes, beside the harness's files, ``samples.txt`` and a plot:
``bleu_by_length.png`` (translate, and every ablation row) or
``learning_curve.png`` (lm: training bits per character). Rerunning a finished
run trains nothing and rewrites the same files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attn_jax.nn.generate import generate
from attn_jax.nn.transformer import Transformer, TransformerConfig, TransformerLM
from attn_jax.train import TrainConfig, add_to_summary, cli, rundir, train
from attn_jax.train.config import to_dict
from attn_jax.train.report import curve_key, plot_metric_curves
from experiments import seq2seq, tables
from experiments.data import chars
from experiments.readme import repo_relative, update_readme_block

TASKS = ("translate", "ablation", "lm")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class NetConfig:
    d_model: int = 128  # model width: embedding and residual-stream size
    heads: int = 4  # attention heads per layer
    head_dim: int = 0  # 0: d_model / heads
    kv_heads: int = 0  # 0: = heads (no GQA)
    d_ff: int = 256  # hidden units of each feed-forward sublayer
    layers: int = 2  # encoder and decoder layers each (lm: decoder layers)
    dropout: float = 0.1  # dropout rate on embeddings, sublayer outputs and feed-forward hidden units
    positions: str = "sinusoidal"  # sinusoidal | learned | rope | none
    norm: str = "post"  # post | pre: layer norm after / before each residual sublayer
    # attention implementation: xla | chunked | pallas | pallas_triton | cudnn | ...; none: chosen automatically
    implementation: str | None = None


@dataclasses.dataclass(frozen=True)
class Config:
    task: str = "translate"  # translate | ablation | lm
    data: str = "num2words-de"  # translate / ablation
    batch_size: int = 64  # translate / ablation: sentence pairs per step
    beam_size: int = 4  # translate / ablation: beam width of test decoding (1: greedy)
    label_smoothing: float = 0.1  # weight of the uniform target in the training cross-entropy (0: none)
    ablation_heads: tuple[int, ...] = (1, 4, 8, 16, 32)  # row A: head_dim = d_model / heads
    ablation_key_sizes: tuple[int, ...] = (16,)  # row B: head_dim at net.heads (the base has d_model / heads)
    ablation_steps: int = 1000  # training steps of each ablation row (0: train.steps)
    lm_length: int = 128  # lm: characters per training window
    lm_batch_size: int = 32  # lm: windows per step
    lm_eval_chars: int = 20000  # lm: held-out characters scored
    dataset: seq2seq.DataConfig = seq2seq.DataConfig()
    net: NetConfig = NetConfig()
    # the seq2seq quick budget (1000 x 64); peak 1e-3 after 200 warmup steps, then 1/sqrt(step)
    train: TrainConfig = TrainConfig(steps=1000, learning_rate=1e-3, warmup_steps=200, schedule="rsqrt",
                                     clip_norm=1.0, log_every=50, eval_every=100, checkpoint_every=500)


def smoke() -> Config:
    return Config(batch_size=16, beam_size=2, ablation_heads=(1, 2), ablation_key_sizes=(4,), ablation_steps=0,
                  lm_length=32,
                  lm_batch_size=16, lm_eval_chars=512,
                  dataset=seq2seq.DataConfig(train_size=256, test_size=32),
                  net=NetConfig(d_model=16, heads=2, d_ff=32, layers=1),
                  train=TrainConfig(steps=20, learning_rate=1e-3, warmup_steps=5, schedule="rsqrt", log_every=5,
                                    checkpoint_every=10))


def quick() -> Config:
    return Config()


def paper() -> Config:
    """The base model's recipe (d 512, 8 heads, 6+6 layers, Adam with warmup 4000) on our data."""
    return Config(batch_size=256, dataset=seq2seq.DataConfig(train_size=200_000, test_size=3000),
                  net=NetConfig(d_model=512, heads=8, d_ff=2048, layers=6),
                  train=TrainConfig(steps=100_000, learning_rate=7e-4, warmup_steps=4000, schedule="rsqrt",
                                    clip_norm=None, log_every=500, checkpoint_every=5000))


PRESETS = {"smoke": smoke, "quick": quick, "paper": paper}
VARIANTS = f"variants: task={'|'.join(TASKS)}  data={'|'.join(seq2seq.DATASETS)}  (main: translate)"


def model_config(cfg: Config, vocab: int, target_vocab: int = 0, max_length: int = 512) -> TransformerConfig:
    n = cfg.net
    return TransformerConfig(vocab_size=vocab, target_vocab_size=target_vocab, d_model=n.d_model, num_heads=n.heads,
                             head_dim=n.head_dim, num_kv_heads=n.kv_heads, d_ff=n.d_ff, encoder_layers=n.layers,
                             decoder_layers=n.layers,
                             dropout=n.dropout, positions=n.positions, norm=n.norm, max_length=max_length,
                             # the output projection is the target embedding (Vaswani 3.4); the two languages
                             # keep their own tables (share_embeddings off)
                             tie_embeddings=True,
                             implementation=n.implementation)


def smoothed_nll(logits, targets, mask, smoothing: float):
    """Label-smoothed cross-entropy averaged over the masked tokens, and the plain NLL for reporting."""
    logits = logits.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
    loss = (1.0 - smoothing) * nll - smoothing * jnp.mean(logp, axis=-1)
    denom = jnp.maximum(jnp.sum(mask), 1.0)
    return jnp.sum(loss * mask) / denom, jnp.sum(nll * mask) / denom


# --- translation ---------------------------------------------------------------------------------------------------
class Translator(Transformer):
    """The encoder-decoder with the seq2seq experiment's call signature: ``(src, src_len, tgt_in) -> (logits,
    weights)``; the weights are zeros (no alignment metrics for the Transformer)."""

    def __call__(self, source, source_lengths, target_in, rng=None):
        logits = super().__call__(source, target_in, source_lengths=source_lengths, rng=rng)
        return logits, jnp.zeros(logits.shape[:2] + source.shape[1:2], logits.dtype)


class TranslationTask(seq2seq.Seq2SeqTask):
    """The seq2seq experiment's data, batches and metrics, with a Transformer."""

    def __init__(self, cfg: Config):
        self.tcfg = cfg
        super().__init__(seq2seq.Config(model="bahdanau", data=cfg.data, batch_size=cfg.batch_size,
                                        beam_size=cfg.beam_size, dataset=cfg.dataset, train=cfg.train, heatmaps=0))

    def _model(self, rng):
        mc = model_config(self.tcfg, len(self.src_vocab), len(self.tgt_vocab), max_length=self.max_decode + 2)
        return Translator(mc, rngs=nnx.Rngs(params=rng), decode_length=self.max_decode + 1)

    def loss(self, params, batch, rng):
        logits, _ = self.model(params)(batch["source"], batch["source_lengths"], batch["target_in"], rng=rng)
        mask = (batch["target_out"] != seq2seq.PAD).astype(jnp.float32)
        loss, nll = smoothed_nll(logits, batch["target_out"], mask, self.tcfg.label_smoothing)
        return loss, {"nll": nll}

    def evaluate(self, params) -> dict[str, float]:
        metrics = super().evaluate(params)
        return {k: v for k, v in metrics.items() if k not in ("aer", "inversion")}  # zeros weights: meaningless


# --- character language model --------------------------------------------------------------------------------------
class CharLMTask:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.data = chars.CharCorpus(cfg.lm_eval_chars)
        self.vocab = self.data.vocab
        self.mc = model_config(cfg, len(self.vocab), max_length=cfg.lm_length + 1)
        self.graphdef = nnx.graphdef(TransformerLM(self.mc, rngs=nnx.Rngs(0)))

    def model(self, params) -> TransformerLM:
        return nnx.merge(self.graphdef, params)

    def init(self, rng):
        return nnx.state(TransformerLM(self.mc, rngs=nnx.Rngs(params=rng)), nnx.Param)

    def batch(self, step: int):
        rng = np.random.default_rng((self.cfg.train.seed, 7, step))
        return {"tokens": self.data.windows(rng, self.cfg.lm_batch_size, self.cfg.lm_length)}

    def loss(self, params, batch, rng):
        tokens = batch["tokens"]
        logits = self.model(params)(tokens[:, :-1], rng=rng)
        loss, nll = smoothed_nll(logits, tokens[:, 1:], jnp.ones(tokens[:, 1:].shape), self.cfg.label_smoothing)
        return loss, {"bits_per_char": nll / math.log(2.0)}

    @functools.cached_property
    def _nll(self):
        return jax.jit(lambda p, x: optax.softmax_cross_entropy_with_integer_labels(
            self.model(p)(x[:, :-1]).astype(jnp.float32), x[:, 1:]))

    def evaluate(self, params) -> dict[str, float]:
        nll = functools.partial(self._nll, params)
        return {"bits_per_char": self.data.bits_per_char(nll, self.cfg.lm_length, 32)}

    def sample(self, params, prompt: str, length: int, temperature: float = 0.8, seed: int = 0) -> str:
        """Continue ``prompt`` by ``length`` characters, sampling from the KV-cached model."""
        ids = jnp.asarray(self.data.encode(prompt)[None])
        length = min(length, self.mc.max_length - ids.shape[1])
        out = generate(self.model(params), ids, jnp.array([ids.shape[1]]), max_new_tokens=length, method="sample",
                       rng=jax.random.key(seed), temperature=temperature)
        return prompt + "".join(self.vocab[int(t)] for t in out.tokens[0])


# --- runs ----------------------------------------------------------------------------------------------------------
def run_one(cfg: Config, out: Path, preset: str, mesh=None) -> dict:
    task = CharLMTask(cfg) if cfg.task == "lm" else TranslationTask(cfg)
    config = {"experiment": "transformer", "preset": preset, **to_dict(cfg)}
    summary, params = train(task, cfg.train, out, config=config, mesh=mesh)
    extra = {}
    if cfg.task != "lm" and task.last_outputs is None:  # a finished run returned without training: decode
        task.evaluate(params)
    if jax.process_index() == 0:
        if cfg.task == "lm":
            text = task.sample(params, "The ", min(200, cfg.lm_length - 5))
            (out / "samples.txt").write_text(text)
            extra["sample"] = text
            key = curve_key({"transformer": out}, "eval/bits_per_char", "bits_per_char")
            plot_metric_curves({"transformer": out}, key, out / "learning_curve.png",
                               f"character LM on {chars.SOURCE} ({preset})", "bits per character (" + (
                                   "held-out text)" if key != "bits_per_char" else "training batches)"))
        else:
            seq2seq.write_samples(task, out / "samples.txt")
            counts = seq2seq._bucket_counts(task)
            seq2seq.plot_bleu_by_length({"transformer": summary}, task.buckets, counts, out / "bleu_by_length.png",
                                        f"transformer on {cfg.data} ({preset}): BLEU by source length")
    return add_to_summary(out, summary, extra) if extra else summary


def run_ablation(cfg: Config, out: Path, preset: str, mesh=None, argv=None) -> dict:
    """Table 3 rows A, B and E at our scale: heads at fixed d_model, smaller keys at the base heads, and learned
    positions (base heads), each row over ``train.seeds``."""
    train_cfg = cfg.train
    if cfg.ablation_steps:  # a shorter run: warm up over at most a fifth of it
        train_cfg = dataclasses.replace(train_cfg, steps=cfg.ablation_steps,
                                        warmup_steps=min(train_cfg.warmup_steps, cfg.ablation_steps // 5))
    base = dataclasses.replace(cfg, task="translate", train=train_cfg)
    variants = [(f"heads={h}", dataclasses.replace(base, net=dataclasses.replace(base.net, heads=h)))
                for h in cfg.ablation_heads]
    variants += [(f"key size={d}", dataclasses.replace(base, net=dataclasses.replace(base.net, head_dim=d)))
                 for d in cfg.ablation_key_sizes]
    variants.append(("learned positions", dataclasses.replace(base, net=dataclasses.replace(
        base.net, positions="learned"))))
    summaries, _ = cli.run_rows(cli.Run(cfg, out, preset, mesh), dict(variants), run_one)
    rows = {name: {**summaries[name], "heads": c.net.heads, "head_dim": c.net.head_dim or c.net.d_model // c.net.heads}
            for name, c in variants}
    result = {"preset": preset, "d_model": cfg.net.d_model, "command": cli.command_line("transformer", argv),
              "rows": rows}
    if jax.process_index() == 0:
        rundir.write_json(out / "ablation.json", result)
    return result


def ablation_table(result: dict) -> str:
    """The ablation rows; over several seeds each cell is mean ± std."""
    head = "| variant | head_dim | steps | seeds | BLEU | perplexity | exact match | parameters | wall time |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]

    def cell(s, m, fmt):
        std = s.get("eval_std", {}).get(m)
        return f"{s['eval'][m]:{fmt}}" + (f" ± {std:{fmt}}" if std is not None and len(s.get("seeds", ())) > 1 else "")

    for name, s in result["rows"].items():
        head_dim = s.get("head_dim", result["d_model"] // s["heads"])
        lines.append(f"| {name} | {head_dim} | {s['steps']} | {len(s.get('seeds', ())) or 1} | "
                     f"{cell(s, 'bleu', '.1f')} | {cell(s, 'perplexity', '.3f')} | {cell(s, 'exact_match', '.3f')} | "
                     f"{s['parameters']:,} | {s['wall_s']:.0f} s |")
    return "\n".join(lines)


def main(argv=None):
    parsed = cli.parse("transformer", PRESETS, argv, default_preset="quick", variants=VARIANTS,
                       choices={"task": TASKS})
    if parsed is None:
        return None
    cfg, out, preset, mesh = parsed
    out = Path(out)
    # the ablation, and any task over several seeds: a folder of runs
    with cli.run_dir(parsed, comparison=cfg.task == "ablation" or cli.is_comparison(cfg)):
        if cfg.task == "ablation":
            result = run_ablation(cfg, out, preset, mesh, argv)
            print(ablation_table(result))
            return result
        if cli.is_comparison(cfg):  # translate / lm over seeds: one row, ``transformer``, in out/transformer/seed<k>
            summaries, _ = cli.run_rows(cli.Run(cfg, out, preset, mesh), {"transformer": cfg}, run_one)
            if jax.process_index() == 0:
                cli.save_comparison(out, "transformer", argv, summaries, task=cfg.task, data=cfg.data,
                                    config={"experiment": "transformer", "preset": preset, **to_dict(cfg)})
            summary = summaries["transformer"]
        else:
            summary = run_one(cfg, out, preset, mesh)
    print(f"transformer, {cfg.task} (preset {preset}): " + ", ".join(
        f"{k} {v:.4g}" for k, v in summary["eval"].items()))
    return summary


TRANSLATE_METRICS = ("bleu", "chrf", "exact_match", "perplexity")


def _bucket_metrics(rows) -> list[str]:
    """The ``bleu_len_<bucket>`` metrics every row reports, in bucket order."""
    names = [m for m in next(iter(rows.values()))["per_seed"] if m.startswith("bleu_len_")]
    return [m for m in names if all(m in r["per_seed"] for r in rows.values())]


def _seed_dirs(run: Path, rows, seeds) -> dict[str, list[Path]]:
    return {r: [d for k in seeds if (d := cli.seed_dir(run, r, k)).is_dir()] for r in rows}


def _curve(dirs, results: Path, key: str, fallback: str, title: str, ylabel: str) -> str | None:
    """A learning curve (held-out when logged) with seed bands, ``results/learning_curve.png``; its Markdown."""
    if not all(dirs.values()):
        return None
    key = curve_key(dirs, key, fallback)
    plot_metric_curves(dirs, key, results / "learning_curve.png", title,
                       ylabel + (" (held out)" if key.startswith("eval/") else " (training batches)"),
                       log_y=key.endswith("perplexity") or key == "loss")
    return f"![learning curve]({repo_relative(results / 'learning_curve.png')})"


def _translate_table(run: Path, comparison: dict, results: Path) -> list[str]:
    """``translate/``: the transformer over seeds beside the RNN rows of the published seq2seq table of the same
    data (``seq2seq/<data>``), when that table exists and ran the same seeds."""
    config = comparison["config"]
    summaries = comparison["summaries"]
    metrics = list(TRANSLATE_METRICS) + _bucket_metrics(summaries)
    table = tables.from_summaries(summaries, comparison["command"], metrics)
    net = config["net"]
    labels = {"transformer": f"transformer ({net['layers']}+{net['layers']} layers, d {net['d_model']})"}
    published = RESULTS / "seq2seq" / config["data"].replace("-", "_") / "comparison.json"
    rnn = json.loads(published.read_text()) if published.exists() else None
    source = ""
    if rnn and rnn["seeds"] == table["seeds"]:
        for name, row in rnn["rows"].items():
            row = {**row, "metrics": {m: v for m, v in row["metrics"].items() if m in metrics}}
            table["rows"][f"{name} (RNN)"] = row
        table["rnn_rows"] = {"table": repo_relative(published.parent), "provenance": rnn["provenance"]}
        command = str(rnn["provenance"]["command"])
        words = command.split()
        recipe = seq2seq.PRESETS[words[words.index("--preset") + 1] if "--preset" in words else "quick"]()
        steps = "?" if "train.steps=" in command else recipe.train.steps
        batch = "?" if "batch_size=" in command else recipe.batch_size
        source = (f"; the RNN rows are the published table `{repo_relative(published.parent)}` (commit "
                  f"{tables.short_commit(rnn['provenance']['commit'])}, `{command}`: {steps} steps x {batch}), "
                  "same data and seeds")
    table["rows"] = {labels.get(r, r): v for r, v in table["rows"].items()}
    tables.write(results, table)
    columns = [("bleu", "BLEU", ".1f"), ("chrf", "chrF", ".1f"), ("exact_match", "exact match", ".3f"),
               ("perplexity", "perplexity", ".3f")]
    longest = [m for m in metrics if m.startswith("bleu_len_")][-1:]
    columns += [(m, f"BLEU len {m[len('bleu_len_'):]}", ".1f") for m in longest]
    prov = table["provenance"]
    first = next(iter(summaries.values()))
    text = [f"Translation, `{config['data']}` ({prov['device']}; commit {tables.short_commit(prov['commit'])}; "
            f"`{prov['command']}`; {first['steps']} steps x {config['batch_size']}{source}):", "",
            tables.markdown(table, columns, higher={"perplexity": False})]
    dirs = _seed_dirs(run, summaries, table["seeds"])
    curve = _curve(dirs, results, "eval/perplexity", "loss", f"transformer on {config['data']}",
                   "test-set perplexity")
    return text + (["", curve] if curve else [])


def _ablation_table(run: Path, result: dict, results: Path) -> list[str]:
    """``ablation/``: Table 3 rows A, B, E over seeds; each row keeps its heads and head_dim."""
    rows = result["rows"]
    metrics = list(TRANSLATE_METRICS) + _bucket_metrics(rows)
    table = tables.from_summaries(rows, result["command"], metrics)
    for name, row in table["rows"].items():
        row.update(heads=rows[name]["heads"], head_dim=rows[name]["head_dim"], steps=rows[name]["steps"])
    tables.write(results, table)
    longest = [m for m in metrics if m.startswith("bleu_len_")][-1:]
    columns = [("bleu", "BLEU", ".1f"), ("perplexity", "perplexity", ".3f"), ("exact_match", "exact match", ".3f")]
    columns += [(m, f"BLEU len {m[len('bleu_len_'):]}", ".1f") for m in longest]
    extra = {"heads": {r: str(v["heads"]) for r, v in table["rows"].items()},
             "head_dim": {r: str(v["head_dim"]) for r, v in table["rows"].items()},
             "parameters": {r: f"{v['parameters']:,}" for r, v in table["rows"].items()}}
    prov = table["provenance"]
    first = next(iter(rows.values()))
    text = [f"Ablation ({prov['device']}; commit {tables.short_commit(prov['commit'])}; `{prov['command']}`; "
            f"{first['steps']} steps per row):", "", tables.markdown(table, columns, {"perplexity": False}, extra)]
    curve = _curve(_seed_dirs(run, rows, table["seeds"]), results, "eval/perplexity", "loss",
                   "Table 3 ablation at our scale", "test-set perplexity")
    return text + (["", curve] if curve else [])


def _lm_table(run: Path, comparison: dict, results: Path) -> list[str]:
    """``lm/``: bits per character on the held-out 10% over seeds, and the first seed's sample."""
    config, summaries = comparison["config"], comparison["summaries"]
    table = tables.from_summaries(summaries, comparison["command"], ["bits_per_char"])
    tables.write(results, table)
    s = summaries["transformer"]
    first_seed = str(table["seeds"][0])
    sample = s["per_seed_summaries"][first_seed].get("sample", "")
    prov = table["provenance"]
    bpc = table["rows"]["transformer"]["metrics"]["bits_per_char"]
    text = [f"Character LM on `pydoc_data.topics` ({prov['device']}; commit {tables.short_commit(prov['commit'])}; "
            f"`{prov['command']}`; {s['steps']} steps x {config['lm_batch_size']} windows of {config['lm_length']}, "
            f"{s['parameters']:,} parameters): **{bpc['mean']:.3f} ± {bpc['std']:.3f} bits per character** on the "
            f"held-out 10% over seeds {', '.join(map(str, table['seeds']))}. Seed {first_seed}'s sample "
            "(temperature 0.8):", "", "```text", sample, "```"]
    curve = _curve(_seed_dirs(run, summaries, table["seeds"]), results, "eval/bits_per_char", "bits_per_char",
                   f"character LM on {chars.SOURCE}", "bits per character")
    return text + (["", curve] if curve else [])


def publish(run_dirs, results: Path, block: str, readme: Path | None = None) -> str:
    """The published tables ``results/{translate,ablation,lm}/comparison.json`` (experiments.tables' schema) of
    runs over seeds (``--set seeds=0,1,2``: an ablation folder, or a translate / lm comparison folder), their
    learning curves, and the docs block ``block`` written from the tables."""
    results = Path(results)
    parts = [f"Written by `python -m experiments.publish transformer {' '.join(map(str, run_dirs))} --block "
             f"{block}` from the tables in `{repo_relative(results)}`."]
    for run in map(Path, run_dirs):
        if (run / "ablation.json").exists():
            result = json.loads((run / "ablation.json").read_text())
            if "per_seed" not in next(iter(result["rows"].values())):
                raise SystemExit(f"{run}: a published ablation runs over seeds (--set seeds=0,1,2)")
            parts += ["", *_ablation_table(run, result, results / "ablation")]
            continue
        if not (run / "comparison.json").exists():
            raise SystemExit(f"{run}: not a run over seeds (no comparison.json); publish runs of --set seeds=0,1,2")
        comparison = json.loads((run / "comparison.json").read_text())
        if comparison["task"] == "lm":
            parts += ["", *_lm_table(run, comparison, results / "lm")]
        else:
            parts += ["", *_translate_table(run, comparison, results / "translate")]
    text = "\n".join(parts)
    update_readme_block(block, text, readme)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
