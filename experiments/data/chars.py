"""Character-level text for language models: the Python documentation that ships with CPython.

``pydoc_data.topics`` (the text behind ``help('topic')``, about 0.8 MB of English prose and code)
is in every Python install, so nothing is downloaded. The first 90% (topics in sorted order) trains,
the rest is held out; the vocabulary is the training split's characters plus ``<unk>`` (id 0). For choosing
hyper-parameters without the test text, ``split="val"`` holds out the last ``eval_chars + 1`` characters of
the training part instead (and trains on what precedes them).
"""

from __future__ import annotations

import functools
import math

import numpy as np

SOURCE = "pydoc_data.topics"


@functools.lru_cache(maxsize=1)
def corpus() -> str:
    """The Python documentation topics bundled with CPython (``pydoc_data.topics``), in sorted topic order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


class CharCorpus:
    """``vocab`` (list of str), ``train_ids`` and ``test_ids`` (int32; ``eval_chars + 1`` held-out characters:
    of the test text, or with ``split="val"`` the training part's last ones, which then do not train)."""

    def __init__(self, eval_chars: int, split: str = "test"):
        if split not in ("test", "val"):
            raise ValueError(f"unknown split {split!r}; valid: test, val")
        text = corpus()
        cut = int(0.9 * len(text))
        self.vocab = ["<unk>"] + sorted(set(text[:cut]))  # the same vocabulary for both splits
        self.index = {c: i for i, c in enumerate(self.vocab)}
        start, train_end = (cut, cut) if split == "test" else (cut - eval_chars - 1, cut - eval_chars - 1)
        self.train_ids = self.encode(text[:train_end])
        self.test_ids = self.encode(text[start:start + eval_chars + 1])
        self.test_text = text[start:start + eval_chars + 1]

    def encode(self, text: str) -> np.ndarray:
        return np.array([self.index.get(c, 0) for c in text], np.int32)

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def windows(self, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
        """``[batch, length + 1]`` random training windows (inputs are ``[:, :-1]``, targets ``[:, 1:]``)."""
        starts = rng.integers(0, len(self.train_ids) - length - 1, batch)
        return np.stack([self.train_ids[s:s + length + 1] for s in starts])

    def eval_windows(self, length: int) -> np.ndarray:
        """Non-overlapping held-out windows ``[n, length + 1]`` covering the first ``n·length`` test targets."""
        n = (len(self.test_ids) - 1) // length
        return np.stack([self.test_ids[i * length:i * length + length + 1] for i in range(n)])

    def bits_per_char(self, nll, length: int, batch: int, limit: int | None = None) -> float:
        """Held-out bits per character: ``nll(windows [b, length + 1]) -> [b, length]`` natural-log losses,
        summed over :meth:`eval_windows` in batches of ``batch`` (only the first ``limit`` characters' windows, at
        least one, when given)."""
        windows = self.eval_windows(length)
        if limit is not None:
            windows = windows[:max(limit // length, 1)]
        n = windows.shape[0]
        total = sum(float(np.sum(nll(windows[s:s + batch]))) for s in range(0, n, batch))
        return total / (n * length) / math.log(2.0)
