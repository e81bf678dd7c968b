"""A performance model of the Mosaic TPU flash kernel (``attn_jax.kernels.flash_tpu``), for TPUs we cannot time.

For each chip and candidate (block_q, block_k) the model counts, for the forward
pass of one attention problem:

* FLOPs: 4·B·N·T·S·H (FlashAttention's count), halved for causal;
* HBM bytes: Q, O read/written once; K and V re-read once per query block
  (T / block_q times) because the key axis is the inner grid loop;
* VMEM per grid step: the double-buffered q, k, v, o tiles (inputs/outputs are
  pipelined by Pallas) plus the float32 scratch (m, l lane-replicated, acc) and
  the float32 ``[block_q, block_k]`` logits/probabilities;
* time bound = max(FLOPs / peak, bytes / HBM bandwidth) + grid steps x a fixed
  per-step overhead (assumed 0.35 us, ``--step-overhead-us``), and which term binds.
  MXU efficiency of small tiles is not modelled.

It suggests the blocks with the lowest bound that fit the VMEM budget. Chip
figures are public spec-sheet numbers (bf16 dense peak, HBM bandwidth); the VMEM
budget is Mosaic's default scoped-VMEM limit as we understand it, an assumption
(``--vmem-mib`` overrides it). Nothing here is a measurement.

    python -m benchmarks.tpu_model                      # default problem: B=1, N=16, T=S=8192, H=128, bf16
    python -m benchmarks.tpu_model --seq-len 32768 --head-dim 256 --causal
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks._common import RESULTS


@dataclass(frozen=True)
class Chip:
    name: str
    bf16_tflops: float  # dense bf16 peak, spec sheet
    hbm_gb_per_s: float  # spec sheet
    vmem_budget_mib: float  # assumed default scoped-VMEM limit for a kernel


CHIPS = (
    Chip("v5e", 197.0, 819.0, 16.0),
    Chip("v5p", 459.0, 2765.0, 16.0),
    Chip("v6e", 918.0, 1640.0, 32.0),
)


def model(chip: Chip, b, n, k_heads, t, s, h, bq, bk, causal, itemsize=2, step_overhead_s=0.35e-6) -> dict:
    flops = 4.0 * b * n * t * s * h / (2.0 if causal else 1.0)
    q_blocks = -(-t // bq)
    kv_fraction = 0.5 if causal else 1.0  # causal skips ~half the key blocks (their DMA too, if the index map clamps)
    bytes_q_o = 2 * b * n * t * h * itemsize
    bytes_kv = 2 * b * k_heads * s * h * itemsize * q_blocks * (n // k_heads) * kv_fraction
    hbm = bytes_q_o + bytes_kv
    vmem = (
        2 * (bq * h + 2 * bk * h + bq * h) * itemsize  # double-buffered q, k, v, o tiles
        + (2 * bq * 128 + bq * h) * 4  # m, l (lane-replicated) and acc scratch, float32
        + 2 * bq * bk * 4  # logits and probabilities, float32
    )
    t_compute = flops / (chip.bf16_tflops * 1e12)
    t_memory = hbm / (chip.hbm_gb_per_s * 1e9)
    steps = b * n * q_blocks * -(-s // bk) * kv_fraction
    t_steps = steps * step_overhead_s
    return dict(chip=chip.name, block_q=bq, block_k=bk, flops=flops, hbm_bytes=hbm, vmem_bytes=vmem,
                fits_vmem=vmem <= chip.vmem_budget_mib * 2**20, bound_s=max(t_compute, t_memory) + t_steps,
                step_overhead_s=t_steps,
                binding="compute" if t_compute >= t_memory else "hbm",
                arithmetic_intensity=flops / hbm, ridge_point=chip.bf16_tflops * 1e12 / (chip.hbm_gb_per_s * 1e9),
                tflops_at_bound=flops / (max(t_compute, t_memory) + t_steps) / 1e12)


def suggest(args) -> dict:
    out = {}
    for chip in CHIPS:
        if args.vmem_mib:
            chip = Chip(chip.name, chip.bf16_tflops, chip.hbm_gb_per_s, args.vmem_mib)
        rows = [model(chip, args.batch, args.heads, args.kv_heads, args.seq_len, args.seq_len, args.head_dim,
                      bq, bk, args.causal, step_overhead_s=args.step_overhead_us * 1e-6)
                for bq, bk in itertools.product((128, 256, 512, 1024, 2048), (128, 256, 512, 1024, 2048))]
        fitting = [r for r in rows if r["fits_vmem"]]
        best = min(fitting, key=lambda r: (r["bound_s"], r["vmem_bytes"])) if fitting else None
        out[chip.name] = dict(chip=asdict(chip), best=best, candidates=rows)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=8192)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--vmem-mib", type=float, default=None, help="override the assumed VMEM budget")
    ap.add_argument("--step-overhead-us", type=float, default=0.35, help="assumed fixed cost per grid step")
    ap.add_argument("--out", type=Path, default=RESULTS / "tpu_model.json")
    args = ap.parse_args(argv)
    result = dict(problem=vars(args) | {"out": str(args.out)}, chips=suggest(args),
                  note="a model from spec-sheet numbers, not a measurement")
    print(f"problem: B={args.batch} N={args.heads} K={args.kv_heads} T=S={args.seq_len} H={args.head_dim} "
          f"causal={args.causal} bf16 (model, not a measurement)")
    print(f"{'chip':<5}{'block_q':>8}{'block_k':>8}{'VMEM MiB':>10}{'bound':>9}{'AI':>8}{'ridge':>7}{'TFLOP/s':>9}")
    for name, c in result["chips"].items():
        r = c["best"]
        if r is None:
            print(f"{name:<5} no candidate fits {c['chip']['vmem_budget_mib']} MiB")
            continue
        print(f"{name:<5}{r['block_q']:>8}{r['block_k']:>8}{r['vmem_bytes'] / 2**20:>10.1f}{r['binding']:>9}"
              f"{r['arithmetic_intensity']:>8.0f}{r['ridge_point']:>7.0f}{r['tflops_at_bound']:>9.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
