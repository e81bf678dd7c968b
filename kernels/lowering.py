"""Lower a kernel for an accelerator this machine does not have (``jax.export`` on an abstract device).

``jax.export(platforms=["cuda"])`` runs Pallas' Triton lowering without a GPU.
jax 0.10 assumed compute capability 9.0 when no GPU was present; jax 0.11 raises
("No supported GPU devices found") unless an abstract device says what to lower
for. Exporting inside ``use_abstract_mesh`` with an ``AbstractDevice`` works on
both, and the same route lowers the Mosaic TPU kernel for a TPU on a CPU host.
"""

from __future__ import annotations

import jax
from jax import export
from jax.sharding import AbstractDevice, AbstractMesh, use_abstract_mesh

TRITON_CALL = "__gpu$xla.gpu.triton"
TPU_CALL = "tpu_custom_call"


def export_for(platform: str, fn, *args, device_kind: str | None = None) -> export.Exported:
    """``jax.export`` of ``jax.jit(fn)`` at ``args`` (ShapeDtypeStructs) for ``platform`` ("cuda" or "tpu").

    ``device_kind``: the abstract device's kind (default "NVIDIA H200" / "TPU v5 lite").
    The kernels' custom calls are allowed through ``disabled_checks``.
    """
    if platform == "cuda":
        kind, dev_platform, call = device_kind or "NVIDIA H200", "gpu", TRITON_CALL
    elif platform == "tpu":
        kind, dev_platform, call = device_kind or "TPU v5 lite", "tpu", TPU_CALL
    else:
        raise ValueError(f"platform must be 'cuda' or 'tpu', got {platform!r}")
    device = AbstractDevice(device_kind=kind, num_cores=None, platform=dev_platform)
    checks = [export.DisabledSafetyCheck.custom_call(call)]
    with use_abstract_mesh(AbstractMesh((), (), abstract_device=device)):
        return export.export(jax.jit(fn), platforms=[platform], disabled_checks=checks)(*args)
