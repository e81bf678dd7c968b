"""Token-level parallel data: pairs, vocabularies, padded id arrays, deterministic splits.

A :class:`ParallelData` holds tokenised source/target pairs plus what the
metrics need: the detokenised target text (for chrF) and, where the data
defines them, gold alignments (for AER). Vocabularies are built from the
training split only; ids 0-3 are ``<pad> <bos> <eos> <unk>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


@dataclasses.dataclass(frozen=True)
class Gold:
    """Gold links of one pair: per target token, the ``sure`` and ``possible`` source positions (sure ⊆ possible)."""

    sure: tuple[frozenset[int], ...]
    possible: tuple[frozenset[int], ...]


@dataclasses.dataclass(frozen=True)
class ParallelData:
    source: tuple[tuple[str, ...], ...]
    target: tuple[tuple[str, ...], ...]
    target_text: tuple[str, ...]
    gold: tuple[Gold, ...] | None = None

    def __len__(self) -> int:
        return len(self.source)

    def subset(self, index: Sequence[int]) -> ParallelData:
        pick = lambda xs: tuple(xs[i] for i in index)  # noqa: E731
        return ParallelData(pick(self.source), pick(self.target), pick(self.target_text),
                            None if self.gold is None else pick(self.gold))


@dataclasses.dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]

    @classmethod
    def build(cls, sequences) -> Vocab:
        seen = sorted({tok for seq in sequences for tok in seq})
        return cls(SPECIALS + tuple(seen))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def encode(self, seq) -> list[int]:
        index = self.index
        return [index.get(t, UNK) for t in seq]

    def decode(self, ids) -> list[str]:
        """Ids up to (not including) the first EOS; pads and BOS dropped."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i not in (PAD, BOS):
                out.append(self.tokens[i] if i < len(self.tokens) else SPECIALS[UNK])
        return out


def pad_ids(seqs: Sequence[Sequence[int]], length: int, *, eos: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``[N, length]`` int32 ids (right-padded with PAD, optional EOS appended) and ``[N]`` lengths."""
    out = np.full((len(seqs), length), PAD, np.int32)
    lengths = np.zeros(len(seqs), np.int32)
    for i, seq in enumerate(seqs):
        seq = list(seq) + ([EOS] if eos else [])
        if len(seq) > length:
            raise ValueError(f"sequence {i} has {len(seq)} tokens, more than the padded length {length}")
        out[i, :len(seq)] = seq
        lengths[i] = len(seq)
    return out, lengths


def check_disjoint(train: ParallelData, test: ParallelData) -> None:
    """No source string of the test split may appear in training."""
    overlap = set(train.source) & set(test.source)
    if overlap:
        raise AssertionError(f"{len(overlap)} test sources also occur in training, e.g. {next(iter(overlap))}")
