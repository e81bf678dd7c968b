"""Date normalisation: dates written in many CLDR locales and formats (babel) -> ISO 8601.

"Samstag, 4. März 2017" -> "2017-03-04". The source is tokenised into single
digits, runs of letters and single punctuation marks; the target is the ten
characters of the ISO date. Each date is rendered field by field from babel's
parsed pattern, so we know which source tokens carry the year, the month and
the day: that gives gold alignments for every target digit (AER, as Luong et
al. 2015 Table 6). Digits of a numeric field align right to left with the
source digits ("4" -> "04": the 4 is a sure link, the leading 0 a possible link
to the whole field); a month written as a name is a possible link for both
month digits. The hyphens have no gold link and are not scored.

Formats "medium", "long" and "full" only (they all carry a four-digit year);
source strings that could mean two dates (numeric formats that differ in field
order between locales) are dropped, as are duplicates; the test split holds no
source string of the training split.
"""

from __future__ import annotations

import datetime as dt
import re

import babel.dates
import numpy as np
from babel import Locale

from experiments.data.text import Gold, ParallelData

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "pt_BR", "nl_NL", "sv_SE", "da_DK", "nb_NO",
           "fi_FI", "pl_PL", "cs_CZ", "hu_HU", "ro_RO", "tr_TR", "id_ID", "vi_VN", "ru_RU", "uk_UA", "el_GR",
           "ja_JP", "zh_CN", "ko_KR", "ca_ES", "hr_HR", "lt_LT")
FORMATS = ("medium", "long", "full")
FIRST, LAST = dt.date(1900, 1, 1), dt.date(2099, 12, 31)
_TOKEN = re.compile(r"\d|[^\W\d_]+|[^\w\s]")
_FIELD = re.compile(r"%\((\w+)\)s")
# ISO target positions of each field
TARGET_SPANS = {"y": range(0, 4), "M": range(5, 7), "L": range(5, 7), "d": range(8, 10)}


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def render(date: dt.date, locale: str, fmt: str) -> tuple[tuple[str, ...], dict[str, list[int]], str]:
    """Source tokens, the token positions of each field ("y", "M", "d"), and the text (checked against babel)."""
    loc = Locale.parse(locale)
    pattern = babel.dates.parse_pattern(babel.dates.get_date_format(fmt, locale=loc).pattern).format
    fields = babel.dates.DateTimeFormat(date, loc)
    tokens: list[str] = []
    spans: dict[str, list[int]] = {}
    pieces: list[str] = []
    pos = 0
    for m in _FIELD.finditer(pattern):
        literal = pattern[pos:m.start()].replace("%%", "%")
        pieces.append(literal)
        tokens += tokenize(literal)
        value = fields[m.group(1)]
        pieces.append(value)
        start = len(tokens)
        tokens += tokenize(value)
        key = m.group(1)[0]
        if key in TARGET_SPANS:
            spans["M" if key == "L" else key] = list(range(start, len(tokens)))
        pos = m.end()
    pieces.append(pattern[pos:].replace("%%", "%"))
    tokens += tokenize(pieces[-1])
    text = "".join(pieces)
    expected = babel.dates.format_date(date, fmt, locale=loc)
    if text != expected or set(spans) != {"y", "M", "d"}:
        raise AssertionError(f"rendering {date} in {locale}/{fmt}: {text!r} != {expected!r} or fields {spans}")
    if any(t.isdigit() and not t.isascii() for t in tokens):
        raise ValueError(f"{locale} writes non-ASCII digits: {text!r}")
    return tuple(tokens), spans, text


def gold_links(tokens: tuple[str, ...], spans: dict[str, list[int]]) -> Gold:
    sure: list[frozenset[int]] = [frozenset()] * 10
    possible: list[frozenset[int]] = [frozenset()] * 10
    for field, positions in spans.items():
        targets = list(TARGET_SPANS[field])
        digits = [p for p in positions if tokens[p].isdigit()]
        for k, t in enumerate(reversed(targets)):
            possible[t] = frozenset(positions)
            if k < len(digits):
                src = digits[len(digits) - 1 - k]
                sure[t] = frozenset({src})
    return Gold(tuple(sure), tuple(possible))


def make_split(*, train_size: int, test_size: int, seed: int = 0,
               locales: tuple[str, ...] = LOCALES) -> tuple[ParallelData, ParallelData]:
    """(train, test) pairs: random dates in 1900-2099, random locale and format each."""
    rng = np.random.default_rng(seed)
    n = int((train_size + test_size) * 1.3) + 16
    days = rng.integers(0, (LAST - FIRST).days + 1, size=n)
    locs = rng.integers(0, len(locales), size=n)
    fmts = rng.integers(0, len(FORMATS), size=n)
    rows, meaning = [], {}
    for day, li, fi in zip(days, locs, fmts, strict=True):
        date = FIRST + dt.timedelta(days=int(day))
        tokens, spans, _ = render(date, locales[li], FORMATS[fi])
        iso = date.isoformat()
        meaning.setdefault(tokens, set()).add(iso)
        rows.append((tokens, iso, gold_links(tokens, spans)))
    unique, seen = [], set()
    for tokens, iso, gold in rows:
        if len(meaning[tokens]) == 1 and tokens not in seen:
            seen.add(tokens)
            unique.append((tokens, iso, gold))
    if len(unique) < train_size + test_size:
        raise ValueError(f"only {len(unique)} distinct dates for {train_size} + {test_size}; lower the sizes")

    def pairs(chunk):
        return ParallelData(tuple(t for t, _, _ in chunk), tuple(tuple(iso) for _, iso, _ in chunk),
                            tuple(iso for _, iso, _ in chunk), tuple(g for _, _, g in chunk))

    return pairs(unique[:train_size]), pairs(unique[train_size:train_size + test_size])
