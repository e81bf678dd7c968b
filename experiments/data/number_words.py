"""English number words -> German or French number words, from num2words.

"three hundred and forty-two" -> "dreihundertzweiundvierzig". German writes a
number below a million as one compound word; :func:`segment_german` splits it
into number morphemes (drei|hundert|zwei|und|vierzig), which are the target
tokens, so alignments and BLEU work on morphemes; a ``_`` token stands for a
space between German words (around "Million", "Milliarde"). German puts units
before tens (zwei|und|vierzig ~ "forty two"), so the alignment is not monotone.
French targets split at spaces and hyphens, the hyphen kept as a token.

Lengths, two ways. By default the training numbers have up to ``train_digits``
digits for the most part (each extra digit halves the probability) and the test
numbers are uniform in their digit count up to ``max_digits``, so the test set
holds longer inputs than most of training, but every length occurs in training.
With ``train_max_tokens`` the split tests length generalisation proper: both
splits draw numbers whose 3-digit groups are each zero with probability 1/2
(so "three billion and five" is as likely as a dense twelve-digit number, and
every word of the vocabulary, "Milliarde" included, occurs in short sources),
the training split keeps only sources of at most ``train_max_tokens`` English
tokens, and the test split keeps every length: its long buckets hold lengths no
training source has. Splits are deterministic in ``seed``; a number (hence a
source string) is never in both.
"""

from __future__ import annotations

import re

import numpy as np
from num2words import num2words

from experiments.data.text import ParallelData

GERMAN_MORPHEMES = (
    "null", "eins", "eine", "ein", "zwei", "drei", "vier", "fünf", "sechs", "sech", "sieben", "sieb", "acht",
    "neun", "zehn", "elf", "zwölf", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig",
    "neunzig", "hundert", "tausend", "und", "Million", "Millionen", "Milliarde", "Milliarden",
)
_BY_LENGTH = sorted(GERMAN_MORPHEMES, key=len, reverse=True)
SPACE = "_"


def segment_german(word: str) -> list[str]:
    """Greedy longest-match split of one German number word into morphemes; a ValueError if it does not cover."""
    out, i = [], 0
    while i < len(word):
        match = next((m for m in _BY_LENGTH if word.startswith(m, i)), None)
        if match is None:
            raise ValueError(f"cannot segment {word!r} at {word[i:]!r}")
        out.append(match)
        i += len(match)
    return out


def english_tokens(n: int) -> tuple[str, ...]:
    """``num2words(n)``, lower-cased, split at spaces and hyphens, commas dropped."""
    return tuple(re.split(r"[\s-]+", num2words(n, lang="en").replace(",", "").lower()))


def german_tokens(n: int) -> tuple[tuple[str, ...], str]:
    text = num2words(n, lang="de")
    tokens: list[str] = []
    for k, word in enumerate(text.split(" ")):
        tokens += ([SPACE] if k else []) + segment_german(word)
    return tuple(tokens), text


def french_tokens(n: int) -> tuple[tuple[str, ...], str]:
    text = num2words(n, lang="fr")
    return tuple(t for t in re.split(r"\s+|(-)", text) if t), text


GERMAN_UNITS = frozenset({"ein", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"})
GERMAN_TENS = frozenset({"zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig", "neunzig"})


def inversion_rate(weights, targets) -> tuple[float, int]:
    """How often the attention follows German's units/tens inversion.

    For every ``<unit> und <tens>`` in a German target (e.g. zwei|und|vierzig
    for "forty two"), the English source has the tens word *before* the units
    word, so a faithful alignment puts the arg-max of the unit's row to the
    right of the arg-max of the tens' row. Returns (that fraction, the number of
    such pairs). ``weights``: per sentence ``[T, S]`` (target row t emits token t).
    """
    inverted = total = 0
    for w, tgt in zip(weights, targets, strict=True):
        for i in range(len(tgt) - 2):
            if tgt[i] in GERMAN_UNITS and tgt[i + 1] == "und" and tgt[i + 2] in GERMAN_TENS:
                total += 1
                inverted += int(np.argmax(w[i])) > int(np.argmax(w[i + 2]))
    return (inverted / total if total else float("nan")), total


def detokenize(tokens, language: str) -> str:
    """Inverse of the target tokenisation: the text chrF is computed on."""
    if language == "de":
        return " ".join("".join(word.split(" ")) for word in " ".join(tokens).split(f" {SPACE} "))
    return " ".join(tokens).replace(" - ", "-")


def _sample(rng: np.random.Generator, count: int, digit_probs: np.ndarray) -> list[int]:
    digits = rng.choice(np.arange(1, len(digit_probs) + 1), size=count, p=digit_probs)
    low = np.where(digits == 1, 0, 10 ** (digits - 1))
    return [int(x) for x in rng.integers(low, 10**digits)]


def _sample_sparse(rng: np.random.Generator, count: int, max_digits: int) -> list[int]:
    """Numbers uniform in their digit count up to ``max_digits``, each 3-digit group below the leading one zero
    with probability 1/2 (short sources for long numbers)."""
    out = []
    for n in _sample(rng, count, np.full(max_digits, 1.0 / max_digits)):
        groups = [(n // 1000**g) % 1000 for g in range((len(str(n)) + 2) // 3)]
        keep = [g == len(groups) - 1 or rng.random() >= 0.5 for g in range(len(groups))]
        out.append(sum(v * 1000**g for g, (v, k) in enumerate(zip(groups, keep, strict=True)) if k))
    return out


def digit_probs(max_digits: int, train_digits: int | None) -> np.ndarray:
    """Probability of each digit count 1..max_digits: uniform, or halving per digit above ``train_digits``."""
    d = np.arange(1, max_digits + 1)
    w = np.ones(max_digits) if train_digits is None else 0.5 ** np.maximum(0, d - train_digits)
    return w / w.sum()


def make_split(language: str, *, train_size: int, test_size: int, max_digits: int = 9, train_digits: int = 6,
               seed: int = 0, train_max_tokens: int = 0) -> tuple[ParallelData, ParallelData]:
    """(train, test) pairs for ``language`` in {"de", "fr"}; ``train_max_tokens`` > 0: the length-generalisation
    split (module docstring)."""
    if language not in ("de", "fr"):
        raise ValueError(f"unknown target language {language!r}; valid: de, fr")
    if not 1 <= train_digits <= max_digits:
        raise ValueError(f"need 1 <= train_digits <= max_digits, got {train_digits=}, {max_digits=}")
    rng = np.random.default_rng(seed)
    if train_max_tokens:
        pool = list(dict.fromkeys(_sample_sparse(rng, 6 * train_size, max_digits)))
        train_numbers = [n for n in pool if len(english_tokens(n)) <= train_max_tokens][:train_size]
        if len(train_numbers) < train_size:
            raise ValueError(f"only {len(train_numbers)} distinct numbers of at most {train_max_tokens} tokens up "
                             f"to {max_digits} digits for train_size {train_size}; lower it or raise the limit")
        taken = set(train_numbers)
        test_numbers = [n for n in dict.fromkeys(_sample_sparse(rng, 4 * test_size, max_digits))
                        if n not in taken][:test_size]
    else:
        train_numbers = list(dict.fromkeys(_sample(rng, 3 * train_size, digit_probs(max_digits, train_digits))))
        train_numbers = train_numbers[:train_size]
        taken = set(train_numbers)
        test_numbers = [n for n in dict.fromkeys(_sample(rng, 4 * test_size, digit_probs(max_digits, None)))
                        if n not in taken][:test_size]
    target = german_tokens if language == "de" else french_tokens

    def pairs(numbers):
        tgt = [target(n) for n in numbers]
        return ParallelData(tuple(english_tokens(n) for n in numbers), tuple(t for t, _ in tgt),
                            tuple(text for _, text in tgt))

    return pairs(train_numbers), pairs(test_numbers)
