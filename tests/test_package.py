"""Packaging: attn_jax.kernels is importable from a built wheel (pip install .), and public names exist."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import attn_jax

ROOT = Path(__file__).resolve().parent.parent
# what only the experiments import (the ``experiments`` extra), by distribution and by module name
EXPERIMENT_PACKAGES = {"scipy": "scipy", "matplotlib": "matplotlib", "num2words": "num2words", "babel": "babel",
                       "sacrebleu": "sacrebleu", "scikit-learn": "sklearn"}


def test_public_api_names():
    for name in ("dot_product_attention", "additive_attention", "local_attention_weights", "predictive_center",
                 "scores", "masks", "UnsupportedError", "positions", "sharding", "ring_attention"):
        assert hasattr(attn_jax, name), name
    for name in ("dot", "scaled_dot", "general", "additive", "cosine", "location"):
        assert callable(getattr(attn_jax.scores, name))
    import attn_jax.kernels as kernels

    assert Path(kernels.__file__).parent.name == "kernels"


def test_wheel_maps_kernels_into_attn_jax(tmp_path):
    """`pip install .` builds a wheel; kernels/ must land inside it as attn_jax/kernels/."""
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr
    wheel = next(tmp_path.glob("attn_jax-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "attn_jax/kernels/__init__.py" in names
    assert "attn_jax/__init__.py" in names
    assert not any(n.startswith(("tests/", "experiments/", "benchmarks/")) for n in names)
    assert "attn_jax/py.typed" in names and any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta
    core = {line.split(":", 1)[1].strip() for line in meta.splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line}
    core_names = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in core}
    assert core_names == {"jax", "flax", "optax", "orbax-checkpoint", "numpy", "jaxtyping", "tqdm"}, core_names
    assert not core_names & set(EXPERIMENT_PACKAGES)
    # And it imports from the installed location, not the source tree.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True)
    code = "import attn_jax, attn_jax.kernels; print(attn_jax.kernels.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": ""})
    assert str(target) in out.stdout


def test_library_imports_none_of_the_experiments_packages():
    """The core install is enough for the library: importing it (and using BLEU only when asked) pulls in none
    of the ``experiments`` extra's packages, and a missing one names the extra."""
    code = ("import sys, attn_jax, attn_jax.nn, attn_jax.kernels, attn_jax.train, attn_jax.train.text_metrics; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:])))")
    out = subprocess.run([sys.executable, "-c", code, *EXPERIMENT_PACKAGES.values()], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout
    code = ("import sys; sys.modules['sacrebleu'] = None; from attn_jax.train import text_metrics; "
            "text_metrics.bleu([['a']], [['a']])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode != 0 and "attn-jax[experiments]" in res.stderr, res.stderr


def test_docstring_examples_run():
    import doctest

    import attn_jax.attention.dispatch
    import attn_jax.memory
    import attn_jax.nn.attention
    import attn_jax.nn.flax_adapter
    import attn_jax.nn.ntm
    import attn_jax.nn.pointer
    import attn_jax.nn.seq2seq
    import attn_jax.nn.transformer
    import attn_jax.positions

    for module in (attn_jax.attention.dispatch, attn_jax.memory, attn_jax.nn.attention, attn_jax.nn.flax_adapter,
                   attn_jax.nn.ntm,
                   attn_jax.nn.pointer, attn_jax.nn.seq2seq, attn_jax.nn.transformer, attn_jax.positions):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
