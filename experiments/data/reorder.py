"""A synthetic reordering language with known alignments: clauses reversed word by word, some words of two tokens.

    source: "bo ka | ri tu ne"      target: "KA BO | NE TU RI"       (clause by clause, each reversed)

The source is 2-5 clauses of 2-6 words from a vocabulary of ``vocab`` pseudo-words, separated by ``|``.
Each source word has one target word (a fixed random bijection), written in capitals; a quarter of the
words are "compounds" that the target writes as two tokens (``KA`` ``=KA``). The target keeps the clause
order and reverses the words inside each clause, so the alignment is not monotone: within a clause it runs
against the diagonal, and where it runs depends on where the clause boundaries are, which only the content
(the ``|`` tokens) tells. Gold links are exact: every target token has one sure source position (both
tokens of a compound link to their word; ``|`` links to its ``|``), so the alignment error rate and the
share of target tokens whose attention arg-max lands on the right source token
(:func:`attn_jax.train.text_metrics.alignment_accuracy`) are defined for every token.

Why this task: a score that sees only positions (Luong's location) or a window that moves monotonically
(local-m) cannot follow a reversal whose extent changes from sentence to sentence; content-based scores
and a predicted window (local-p) can. Splits are deterministic in ``seed``; no source string is in both.
"""

from __future__ import annotations

import numpy as np

from experiments.data.text import Gold, ParallelData

SEPARATOR = "|"
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def lexicon(vocab: int, seed: int = 1234) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """``vocab`` source pseudo-words (consonant-vowel pairs) and each one's target tokens (a random bijection to
    the capitalised words; every fourth word in the shuffled order a compound of two tokens)."""
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    if vocab > len(syllables) ** 2:
        raise ValueError(f"vocab {vocab} is more than the {len(syllables) ** 2} pseudo-words available")
    words = tuple(syllables[:vocab]) if vocab <= len(syllables) else tuple(
        a + b for a in syllables for b in syllables)[:vocab]
    rng = np.random.default_rng(seed)
    images = [words[i].upper() for i in rng.permutation(vocab)]
    return words, {w: ((t, "=" + t) if i % 4 == 0 else (t,)) for i, (w, t) in enumerate(zip(words, images,
                                                                                           strict=True))}


def translate(source: tuple[str, ...], table: dict[str, tuple[str, ...]]) -> tuple[tuple[str, ...], Gold]:
    """The target of a source sentence and its gold links (per target token: the one sure source position)."""
    target: list[str] = []
    links: list[int] = []
    start = 0
    bounds = [i for i, tok in enumerate(source) if tok == SEPARATOR] + [len(source)]
    for end in bounds:
        for pos in range(end - 1, start - 1, -1):  # the clause, reversed
            for tok in table[source[pos]]:
                target.append(tok)
                links.append(pos)
        if end < len(source):
            target.append(SEPARATOR)
            links.append(end)
        start = end + 1
    sure = tuple(frozenset({p}) for p in links)
    return tuple(target), Gold(sure=sure, possible=sure)


def make_split(*, train_size: int, test_size: int, vocab: int = 48, clauses: tuple[int, int] = (2, 5),
               clause_length: tuple[int, int] = (2, 6), seed: int = 0) -> tuple[ParallelData, ParallelData]:
    """(train, test) pairs with gold links; the clause count and length are uniform in the inclusive ranges."""
    words, table = lexicon(vocab)
    rng = np.random.default_rng(seed)
    seen: set[tuple[str, ...]] = set()
    sources: list[tuple[str, ...]] = []
    tries = 0
    while len(sources) < train_size + test_size:
        tries += 1
        if tries > 20 * (train_size + test_size):
            raise ValueError(f"cannot draw {train_size + test_size} distinct sentences from this grammar; "
                             "raise vocab or the clause ranges")
        sentence: list[str] = []
        for c in range(int(rng.integers(clauses[0], clauses[1] + 1))):
            if c:
                sentence.append(SEPARATOR)
            sentence += [words[i] for i in rng.integers(0, vocab, int(rng.integers(clause_length[0],
                                                                                    clause_length[1] + 1)))]
        s = tuple(sentence)
        if s not in seen:
            seen.add(s)
            sources.append(s)

    def pairs(chunk):
        rows = [translate(s, table) for s in chunk]
        return ParallelData(tuple(chunk), tuple(t for t, _ in rows), tuple(" ".join(t) for t, _ in rows),
                            tuple(g for _, g in rows))

    return pairs(sources[:train_size]), pairs(sources[train_size:])
