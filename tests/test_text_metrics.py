"""BLEU / chrF / exact match / BLEU by length / AER."""

from __future__ import annotations

import numpy as np
import pytest

from attn_jax.train import text_metrics as tm


def test_bleu_chrf_exact_match():
    refs = [["drei", "hundert", "zwei", "und", "vierzig"], ["sieb", "zehn", "tausend", "eins"]]
    assert tm.bleu(refs, refs) == pytest.approx(100.0)
    hyps = [["drei", "hundert", "vier", "und", "vierzig"], ["sieb", "zehn", "tausend", "eins"]]
    assert 0 < tm.bleu(hyps, refs) < 100
    assert tm.bleu([["a"]], [["b"]]) == 0.0
    assert tm.exact_match(hyps, refs) == 0.5
    assert tm.chrf(["dreihundertzweiundvierzig"], ["dreihundertzweiundvierzig"]) == pytest.approx(100.0)
    assert tm.chrf(["dreihundertvierundvierzig"], ["dreihundertzweiundvierzig"]) < 100
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        tm.bleu(hyps, refs[:1])


def test_buckets():
    assert tm.bucket_names((5, 8)) == ["1-5", "6-8", "9+"]
    assert [tm.bucket_of(n, (5, 8)) for n in (1, 5, 6, 8, 9, 30)] == [0, 0, 1, 1, 2, 2]
    refs = [["a", "b", "c", "d"]] * 3
    hyps = [["a", "b", "c", "d"], ["a", "b", "c", "d"], ["x", "y", "z", "w"]]
    out = tm.bleu_by_length(hyps, refs, [3, 4, 12], (5, 8))
    assert out == {"1-5": (pytest.approx(100.0), 2), "9+": (0.0, 1)}


def test_alignment_error_rate():
    sure = [[frozenset({0}), frozenset(), frozenset({2})]]
    possible = [[frozenset({0}), frozenset({1, 2}), frozenset({2})]]
    perfect = [np.eye(3)]
    assert tm.alignment_error_rate(perfect, sure, possible) == 0.0
    wrong = [np.eye(3)[[2, 0, 0]]]  # every arg-max outside the gold links
    assert tm.alignment_error_rate(wrong, sure, possible) == 1.0
    # A = {(0,0), (1,0), (2,2)}: |A∩S| = 2, |A∩P| = 2, |A| = 3, |S| = 2 -> 1 - 4/5
    mixed = [np.eye(3)[[0, 0, 2]]]
    assert tm.alignment_error_rate(mixed, sure, possible) == pytest.approx(0.2)
    # target tokens with no gold link at all are not scored
    none = [[frozenset()] * 3]
    assert np.isnan(tm.alignment_error_rate(perfect, none, none))


def test_bleu_n_by_hand():
    from attn_jax.train.text_metrics import bleu

    h, r = [["a", "b", "c", "d"], ["a", "b"]], [["a", "b", "c", "e"], ["a", "c"]]
    assert bleu(h, r, 1) == pytest.approx(100 * 4 / 6)  # unigram precision 4/6, no brevity penalty
    assert bleu(h, r, 2) == pytest.approx(100 * (4 / 6 * 2 / 4) ** 0.5)  # bigrams: ab, bc of ab bc cd ab
