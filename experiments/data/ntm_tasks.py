"""The Neural Turing Machine tasks of Graves et al. (2014) §4: copy, repeat copy, associative recall.

Every generator takes a numpy ``Generator`` and returns fixed-shape float32
arrays, so a batch is a pure function of its seed (the harness replays steps):
``inputs [B, T, I]``, ``targets [B, T, O]`` and ``mask [B, T]`` (1 where the
target counts). T is the padded length for the largest example the settings
allow; steps after an example's end are zero inputs with mask 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np

TASKS = ("copy", "repeat_copy", "associative_recall")


@dataclasses.dataclass(frozen=True)
class Batch:
    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"inputs": self.inputs, "targets": self.targets, "mask": self.mask}


def copy(rng: np.random.Generator, batch: int, *, width: int = 8, min_length: int = 1, max_length: int = 20,
         lengths: np.ndarray | None = None) -> Batch:
    """Copy: ``L`` random binary vectors, a delimiter (extra channel), then reproduce them. T = 2·max_length + 1."""
    lengths = rng.integers(min_length, max_length + 1, batch) if lengths is None else np.asarray(lengths)
    t = 2 * max_length + 1
    x = np.zeros((batch, t, width + 1), np.float32)
    y = np.zeros((batch, t, width), np.float32)
    mask = np.zeros((batch, t), np.float32)
    for b, n in enumerate(lengths):
        bits = rng.integers(0, 2, (n, width)).astype(np.float32)
        x[b, :n, :width] = bits
        x[b, n, width] = 1.0
        y[b, n + 1:2 * n + 1] = bits
        mask[b, n + 1:2 * n + 1] = 1.0
    return Batch(x, y, mask)


def repeat_copy(rng: np.random.Generator, batch: int, *, width: int = 8, min_length: int = 1, max_length: int = 10,
                min_repeats: int = 1, max_repeats: int = 10, length: int | None = None, repeats: int | None = None,
                repeat_scale: int | None = None) -> Batch:
    """Repeat copy: a sequence, then the repeat count (divided by ``repeat_scale``, default ``max_repeats``) on its
    own channel; output the sequence that many times and an end marker (extra output channel). ``length`` /
    ``repeats`` fix them for every example (generalisation tests: keep ``repeat_scale`` at the training
    ``max_repeats`` so counts beyond it read as values above 1, as in the paper)."""
    if length is not None:
        min_length = max_length = length
    if repeats is not None:
        min_repeats = max_repeats = repeats
    scale = repeat_scale or max_repeats
    t = max_length + 1 + max_length * max_repeats + 1
    x = np.zeros((batch, t, width + 1), np.float32)
    y = np.zeros((batch, t, width + 1), np.float32)
    mask = np.zeros((batch, t), np.float32)
    for b in range(batch):
        n, r = int(rng.integers(min_length, max_length + 1)), int(rng.integers(min_repeats, max_repeats + 1))
        bits = rng.integers(0, 2, (n, width)).astype(np.float32)
        x[b, :n, :width] = bits
        x[b, n, width] = r / scale
        start = n + 1
        y[b, start:start + n * r, :width] = np.tile(bits, (r, 1))
        y[b, start + n * r, width] = 1.0
        mask[b, start:start + n * r + 1] = 1.0
    return Batch(x, y, mask)


def associative_recall(rng: np.random.Generator, batch: int, *, width: int = 6, item_length: int = 3,
                       min_items: int = 2, max_items: int = 6) -> Batch:
    """Associative recall: items (``item_length`` vectors each, each preceded by a delimiter on channel ``width``),
    then a query item between two delimiters on channel ``width + 1``; output the item that followed the query."""
    k = item_length
    t = max_items * (k + 1) + 1 + k + 1 + k
    x = np.zeros((batch, t, width + 2), np.float32)
    y = np.zeros((batch, t, width), np.float32)
    mask = np.zeros((batch, t), np.float32)
    for b in range(batch):
        n = int(rng.integers(min_items, max_items + 1))
        items = rng.integers(0, 2, (n, k, width)).astype(np.float32)
        for i in range(n):
            x[b, i * (k + 1), width] = 1.0
            x[b, i * (k + 1) + 1:(i + 1) * (k + 1), :width] = items[i]
        q = int(rng.integers(0, n - 1))
        pos = n * (k + 1)
        x[b, pos, width + 1] = 1.0
        x[b, pos + 1:pos + 1 + k, :width] = items[q]
        x[b, pos + 1 + k, width + 1] = 1.0
        out = pos + 2 + k
        y[b, out:out + k] = items[q + 1]
        mask[b, out:out + k] = 1.0
    return Batch(x, y, mask)


GENERATORS = {"copy": copy, "repeat_copy": repeat_copy, "associative_recall": associative_recall}


def channels(task: str) -> tuple[int, int]:
    """(input features, output features) at the default widths."""
    b = GENERATORS[task](np.random.default_rng(0), 1)
    return b.inputs.shape[-1], b.targets.shape[-1]
