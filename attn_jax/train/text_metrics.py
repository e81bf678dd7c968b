"""Metrics for sequence outputs: BLEU and chrF (sacrebleu), exact match, BLEU by source length, AER.

sacrebleu is imported when BLEU or chrF is computed; it comes with the ``experiments`` extra.

BLEU is computed on the given tokens as they are (``tokenize="none"``): the
caller decides the tokenisation (e.g. German number morphemes). chrF works on
detokenised text. AER follows Och & Ney (2003) with one link per target token,
the arg-max of its attention row, as Luong et al. (2015) extract it:
``AER = 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|)``, scored over the target tokens
that have a gold link.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attn_jax.errors import require


def bleu(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]], max_order: int = 4) -> float:
    """Corpus BLEU (0-100) over pre-tokenised sequences; ``max_order`` n gives BLEU-n (cumulative: the geometric
    mean of the 1..n-gram precisions, as captioning papers report BLEU-1..4)."""
    BLEU = require("sacrebleu.metrics", "experiments").BLEU

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        return float("nan")
    metric = BLEU(tokenize="none", max_ngram_order=max_order)
    return float(metric.corpus_score([" ".join(h) for h in hypotheses], [[" ".join(r) for r in references]]).score)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (0-100) over detokenised strings."""
    sacrebleu = require("sacrebleu", "experiments")

    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


def exact_match(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> float:
    return float(np.mean([tuple(h) == tuple(r) for h, r in zip(hypotheses, references, strict=True)]))


def bucket_names(edges: Sequence[int]) -> list[str]:
    """``(5, 8)`` -> ``["1-5", "6-8", "9+"]``."""
    names, low = [], 1
    for e in edges:
        names.append(f"{low}-{e}")
        low = e + 1
    return names + [f"{low}+"]


def bucket_of(length: int, edges: Sequence[int]) -> int:
    return int(np.searchsorted(np.asarray(edges), length, side="left"))


def bleu_by_length(hypotheses, references, source_lengths, edges: Sequence[int]) -> dict[str, tuple[float, int]]:
    """BLEU per source-length bucket: name -> (BLEU, number of sentences); empty buckets omitted."""
    out = {}
    buckets = [bucket_of(n, edges) for n in source_lengths]
    for k, name in enumerate(bucket_names(edges)):
        idx = [i for i, b in enumerate(buckets) if b == k]
        if idx:
            out[name] = (bleu([hypotheses[i] for i in idx], [references[i] for i in idx]), len(idx))
    return out


def alignment_accuracy(weights: Sequence[np.ndarray], sure: Sequence[Sequence[frozenset]]) -> float:
    """The share of target tokens with sure links whose arg-max attention lands on one of them (did attention
    look at the right source token?). ``weights``: per sentence ``[T, S]``; ``sure``: per sentence and target
    token, the gold source positions (tokens without any are not counted). NaN when none is counted."""
    hits = total = 0
    for w, s_links in zip(weights, sure, strict=True):
        w = np.asarray(w)
        for t, s_set in enumerate(s_links):
            if s_set:
                total += 1
                hits += int(np.argmax(w[t])) in s_set
    return hits / total if total else float("nan")


def alignment_error_rate(weights: Sequence[np.ndarray], sure: Sequence[Sequence[frozenset]],
                         possible: Sequence[Sequence[frozenset]]) -> float:
    """AER of arg-max alignments.

    Args:
      weights: per sentence ``[T, S]`` attention weights (row t: target token t).
      sure, possible: per sentence and target token, the gold source positions.
    """
    a_total = s_total = a_and_s = a_and_p = 0
    for w, s_links, p_links in zip(weights, sure, possible, strict=True):
        w = np.asarray(w)
        for t, (s_set, p_set) in enumerate(zip(s_links, p_links, strict=True)):
            if not p_set and not s_set:
                continue
            a = int(np.argmax(w[t]))
            a_total += 1
            s_total += len(s_set)
            a_and_s += a in s_set
            a_and_p += a in p_set or a in s_set
    if a_total == 0:
        return float("nan")
    return 1.0 - (a_and_s + a_and_p) / (a_total + s_total)
