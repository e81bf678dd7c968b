"""Training-step throughput of a ~100M-parameter decoder-only Transformer: tokens/s and MFU per attention kernel.

The model (defaults): 12 layers, d_model 768, 12 heads, d_ff 3072, vocabulary 32768, sequence 2048, bf16
activations with float32 parameters, pre-LN, RoPE; one Adam step (forward, backward, update) on a batch of
``--batch`` sequences, jitted, timed as the median of ``--repeats`` steps. Model FLOPs per token (the PaLM
appendix B count): 6·N (N = non-embedding parameters + the output projection) + 6·L·T·d for causal attention
(12·L·T·d halved by the causal mask), forward and backward. MFU = achieved model FLOP/s over the device's peak
dense bf16 FLOP/s (table below; unknown devices get no MFU). Writes
``benchmarks/results/transformer_step_<device>.json``; ``--update-readme`` rewrites its block in docs/benchmarks.md.

    python -m benchmarks.transformer_step                                   # GPU: the 100M model
    python -m benchmarks.transformer_step --allow-cpu --layers 1 --d-model 64 --heads 4 --seq 64 --batch 2 \\
        --vocab 256 --implementations xla chunked                           # CPU smoke run (numbers mean nothing)

No GPU has run this yet: its figures in docs/benchmarks.md are pending.

``--lm-experiment`` measures instead the character LM of ``experiments.transformer --set task=lm`` (its
``quick`` sizes: 2 layers, d_model 128, 4 heads, d_ff 256, windows of 128, batch 32, its character vocabulary,
float32) on this machine, CPU included, with ours (``auto``: ``implementation=None``, and by name) beside the
same model with ``jax.nn.dot_product_attention`` swapped in through ``TransformerConfig.attention_fn``
(``jax_nn``): one process, the same initial parameters and batch. It writes ``transformer_step_lm_<device>.json``
and the docs block ``transformer_step_lm``.

    python -m benchmarks.transformer_step --lm-experiment --update-readme
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from attn_jax.nn.transformer import TransformerConfig, TransformerLM
from benchmarks._common import add_output_args, device_name, time_fn, update_readme_block

# peak dense bf16 tensor-core FLOP/s by device kind (vendor data sheets, without sparsity)
PEAK_BF16 = {"nvidia-h100-80gb-hbm3": 989e12, "nvidia-h100": 989e12, "nvidia-h200": 989e12,
             "nvidia-a100-sxm4-80gb": 312e12, "nvidia-a100-sxm4-40gb": 312e12}
IMPLEMENTATIONS = ("xla", "cudnn", "pallas")
LM_IMPLEMENTATIONS = ("auto", "xla", "chunked", "jax_nn")


def lm_experiment_args(args) -> None:
    """Set the model and batch of experiments.transformer's character LM (quick preset) on ``args``."""
    from experiments import transformer as exp
    from experiments.data import chars

    cfg = exp.quick()
    net = cfg.net
    args.layers, args.d_model, args.heads, args.kv_heads = net.layers, net.d_model, net.heads, net.kv_heads
    args.d_ff, args.seq, args.batch, args.dtype = net.d_ff, cfg.lm_length, cfg.lm_batch_size, "float32"
    args.vocab = len(chars.CharCorpus(cfg.lm_eval_chars).vocab)
    args.positions, args.norm = net.positions, net.norm


def model_flops_per_token(cfg: TransformerConfig, seq: int) -> float:
    d, layers = cfg.d_model, cfg.decoder_layers
    hq, hk = cfg.num_heads * cfg.head_features, cfg.kv_heads * cfg.head_features
    per_layer = d * hq + 2 * d * hk + hq * d + 2 * d * cfg.d_ff  # attention projections + MLP matmuls
    n = layers * per_layer + d * cfg.vocab_size  # + the output projection (tied: the embedding as a matmul)
    return 6.0 * n + 6.0 * layers * seq * hq


def measure(impl, args) -> dict:
    attention = dict(implementation=impl)
    if impl == "jax_nn":
        attention = dict(attention_fn=jax.nn.dot_product_attention)
    elif impl == "auto":
        attention = dict(implementation=None)
    cfg = TransformerConfig(vocab_size=args.vocab, d_model=args.d_model, num_heads=args.heads,
                            num_kv_heads=args.kv_heads, d_ff=args.d_ff or 4 * args.d_model,
                            decoder_layers=args.layers, dropout=0.0, positions=args.positions, norm=args.norm,
                            max_length=args.seq + 1, dtype=args.dtype, **attention)
    model = TransformerLM(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    opt = optax.adam(1e-4)
    opt_state = opt.init(params)
    tokens = jax.random.randint(jax.random.key(1), (args.batch, args.seq + 1), 0, args.vocab)

    @jax.jit
    def step(params, opt_state, tokens):
        def loss(p):
            logits = nnx.merge(graphdef, p)(tokens[:, :-1])
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                                            tokens[:, 1:]))

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    try:
        first_loss = float(step(params, opt_state, tokens)[2])
        seconds, samples = time_fn(step, params, opt_state, tokens, repeats=args.repeats)
    except Exception as err:  # an implementation that cannot serve this configuration on this device
        return {"implementation": impl, "error": f"{type(err).__name__}: {str(err)[:200]}"}
    tokens_per_s = args.batch * args.seq / seconds
    flops = model_flops_per_token(cfg, args.seq) * tokens_per_s
    peak = PEAK_BF16.get(device_name())
    return {"implementation": impl, "loss": first_loss, "step_s": seconds, "samples_s": samples,
            "tokens_per_s": tokens_per_s,
            "model_tflops": flops / 1e12, "mfu": None if peak is None else flops / peak,
            "parameters": int(sum(x.size for x in jax.tree.leaves(params)))}


def markdown(result: dict) -> str:
    head = (f"Device: {result['device']}, jax {result['jax']}, {result['date']}; {result['config']}. "
            "MFU against the device's peak dense bf16 FLOP/s.")
    if result.get("lm_experiment"):
        head = (f"Device: {result['device']}, jax {result['jax']}, {result['date']}; the character LM of "
                f"`experiments.transformer --set task=lm` ({result['config']}), one Adam step, median of "
                f"{result['repeats']}; `jax_nn` is the same model with jax.nn.dot_product_attention as its "
                f"attention_fn. The first-step losses agree to {result['loss_spread']:.1e}.")
    elif result["device"] == "cpu":
        head += " CPU SMOKE RUN: the numbers mean nothing."
    rows = ["| attention | step time | tokens/s | model TFLOP/s | MFU |", "|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        if "error" in r:
            rows.append(f"| {r['implementation']} | – | – | – | {r['error']} |")
            continue
        mfu = "–" if r["mfu"] is None else f"{r['mfu']:.1%}"
        rows.append(f"| {r['implementation']} | {r['step_s'] * 1e3:.1f} ms | {r['tokens_per_s']:,.0f} | "
                    f"{r['model_tflops']:.1f} | {mfu} |")
    return "\n".join([head, "", *rows])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--d-ff", type=int, default=0, help="0: 4 * d_model")
    ap.add_argument("--positions", default="rope")
    ap.add_argument("--norm", default="pre")
    ap.add_argument("--implementations", nargs="+", default=None,
                    help=f"default {' '.join(IMPLEMENTATIONS)}; with --lm-experiment {' '.join(LM_IMPLEMENTATIONS)}")
    ap.add_argument("--allow-cpu", action="store_true")
    ap.add_argument("--lm-experiment", action="store_true", help="experiments.transformer's char LM (module doc)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    block = "transformer_step_lm" if args.lm_experiment else "transformer_step"
    if args.readme_from:
        result = json.loads(args.readme_from.read_text())
        block = "transformer_step_lm" if result.get("lm_experiment") else "transformer_step"
    else:
        if args.lm_experiment:
            lm_experiment_args(args)
        elif jax.default_backend() == "cpu" and not args.allow_cpu:
            raise SystemExit("transformer_step measures an accelerator; pass --allow-cpu for a smoke run")
        impls = args.implementations or list(LM_IMPLEMENTATIONS if args.lm_experiment else IMPLEMENTATIONS)
        rows = [measure(impl, args) for impl in impls]
        losses = [r["loss"] for r in rows if "loss" in r]
        result = {"device": device_name(), "jax": jax.__version__, "date": dt.date.today().isoformat(),
                  "config": f"{args.layers} layers, d_model {args.d_model}, {args.heads} heads, d_ff "
                            f"{args.d_ff or 4 * args.d_model}, vocab {args.vocab}, seq {args.seq}, batch {args.batch}, "
                            f"{args.dtype}, {args.positions} positions, {args.norm}-norm",
                  "lm_experiment": args.lm_experiment, "repeats": args.repeats,
                  "loss_spread": (max(losses) - min(losses)) if losses else None, "rows": rows}
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / f"{block}_{result['device']}.json").write_text(json.dumps(result, indent=1))
        print(markdown(result))
    if args.update_readme or args.readme_from:
        print(f"updated {update_readme_block(block, markdown(result))}")
    return result


if __name__ == "__main__":
    main()
