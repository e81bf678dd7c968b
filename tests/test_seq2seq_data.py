"""The seq2seq datasets: German morphemes, deterministic disjoint splits, length shift, dates with gold links."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from num2words import num2words

from experiments.data import dates, number_words
from experiments.data.text import EOS, PAD, UNK, Vocab, check_disjoint, pad_ids


@pytest.mark.parametrize("n,expected", [
    (342, "drei|hundert|zwei|und|vierzig"), (16, "sech|zehn"), (17, "sieb|zehn"), (60, "sechzig"),
    (71, "ein|und|siebzig"), (101, "ein|hundert|eins"), (30, "dreißig"), (1_001, "ein|tausend|eins"),
    (2_000_017, "zwei|_|Millionen|_|sieb|zehn"), (1_000_000_000, "eine|_|Milliarde"), (0, "null"),
])
def test_german_morphemes(n, expected):
    tokens, text = number_words.german_tokens(n)
    assert "|".join(tokens) == expected
    assert text == num2words(n, lang="de") and number_words.detokenize(tokens, "de") == text


def test_every_german_number_segments_and_round_trips():
    rng = np.random.default_rng(0)
    numbers = list(range(0, 1200)) + [int(x) for x in rng.integers(0, 10**12, 3000)]
    for n in numbers:
        tokens, text = number_words.german_tokens(n)
        assert set(tokens) <= set(number_words.GERMAN_MORPHEMES) | {number_words.SPACE}, n
        assert number_words.detokenize(tokens, "de") == text
        fr_tokens, fr_text = number_words.french_tokens(n)
        assert number_words.detokenize(fr_tokens, "fr") == fr_text
    with pytest.raises(ValueError, match="cannot segment"):
        number_words.segment_german("dreiviertel")


def test_number_words_split_is_deterministic_disjoint_and_longer_at_test():
    a_train, a_test = number_words.make_split("de", train_size=3000, test_size=400, seed=1)
    b_train, b_test = number_words.make_split("de", train_size=3000, test_size=400, seed=1)
    assert a_train == b_train and a_test == b_test
    assert number_words.make_split("de", train_size=3000, test_size=400, seed=2)[0] != a_train
    check_disjoint(a_train, a_test)
    assert not set(a_train.target_text) & set(a_test.target_text)
    assert len(a_train) == 3000 and len(a_test) == 400
    train_len = np.array([len(s) for s in a_train.source])
    test_len = np.array([len(s) for s in a_test.source])
    assert np.median(test_len) > np.median(train_len)
    assert np.mean(test_len > np.percentile(train_len, 90)) > 0.15  # many test inputs beyond most of training
    with pytest.raises(ValueError, match="valid: de, fr"):
        number_words.make_split("es", train_size=10, test_size=10)


def test_vocab_from_train_only_and_padding():
    vocab = Vocab.build([("drei", "hundert"), ("zwei",)])
    assert vocab.tokens[:4] == ("<pad>", "<bos>", "<eos>", "<unk>") and len(vocab) == 7
    assert vocab.encode(["zwei", "vierzig"]) == [vocab.index["zwei"], UNK]
    assert vocab.decode([vocab.index["drei"], PAD, EOS, vocab.index["zwei"]]) == ["drei"]
    ids, lengths = pad_ids([[5, 6], [7]], 4, eos=True)
    assert ids.tolist() == [[5, 6, EOS, PAD], [7, EOS, PAD, PAD]] and lengths.tolist() == [3, 2]
    with pytest.raises(ValueError, match="more than the padded length"):
        pad_ids([[1, 2, 3]], 2)


def test_date_rendering_and_gold_links():
    tokens, spans, text = dates.render(dt.date(2017, 3, 4), "de_DE", "long")
    assert text == "4. März 2017" and tokens == ("4", ".", "März", "2", "0", "1", "7")
    assert spans == {"d": [0], "M": [2], "y": [3, 4, 5, 6]}
    gold = dates.gold_links(tokens, spans)
    assert [sorted(s) for s in gold.sure] == [[3], [4], [5], [6], [], [], [], [], [], [0]]
    assert gold.possible[5] == gold.possible[6] == frozenset({2})  # month name: possible for both digits
    assert gold.possible[8] == frozenset({0})  # the 0 of "04" has no source digit: possible only
    tokens, spans, _ = dates.render(dt.date(2017, 3, 14), "ja_JP", "medium")
    assert tokens == ("2", "0", "1", "7", "/", "0", "3", "/", "1", "4")
    assert [sorted(s) for s in dates.gold_links(tokens, spans).sure] == [[0], [1], [2], [3], [], [5], [6], [],
                                                                        [8], [9]]


def test_dates_split():
    train, test = dates.make_split(train_size=800, test_size=200, seed=3)
    assert (train, test) == dates.make_split(train_size=800, test_size=200, seed=3)
    check_disjoint(train, test)
    assert all(len(t) == 10 and "".join(t) == x for t, x in zip(test.target, test.target_text, strict=True))
    assert all(len(g.sure) == 10 for g in test.gold)
    assert len({loc for loc in dates.LOCALES}) >= 20


def test_inversion_rate():
    target = ("drei", "hundert", "zwei", "und", "vierzig")  # "three hundred and forty two"
    inverted = np.eye(5)[[0, 1, 4, 2, 3]]  # zwei -> "two" (pos 4), vierzig -> "forty" (pos 3)
    monotone = np.eye(5)[[0, 1, 2, 3, 4]]
    assert number_words.inversion_rate([inverted], [target]) == (1.0, 1)
    assert number_words.inversion_rate([monotone, inverted], [target, target]) == (0.5, 2)
    rate, n = number_words.inversion_rate([monotone], [("sieb", "zehn")])
    assert np.isnan(rate) and n == 0


def test_reorder_reverses_each_clause_with_exact_gold_links():
    from experiments.data import reorder

    words, table = reorder.lexicon(8)
    source = (words[0], words[1], "|", words[2], words[3], words[4])
    target, gold = reorder.translate(source, table)
    links = [min(s) for s in gold.sure]
    # clause 1 reversed, the separator, clause 2 reversed (a compound's two tokens share their word's link)
    assert [p for i, p in enumerate(links) if i == 0 or links[i - 1] != p] == [1, 0, 2, 5, 4, 3]
    assert len(target) == len(source) + sum(len(table[w]) - 1 for w in source if w != "|")
    for tok, p in zip(target, links, strict=True):  # every target token is its source word's image
        assert tok == "|" if source[p] == "|" else tok.lstrip("=") == table[source[p]][0]
    assert gold.sure == gold.possible and all(len(s) == 1 for s in gold.sure)
    assert sum(len(t) == 2 for t in table.values()) == 2  # every fourth word is a compound of two tokens


def test_reorder_split_is_deterministic_disjoint_and_not_monotone():
    from experiments.data import reorder
    from experiments.data.text import check_disjoint

    a_train, a_test = reorder.make_split(train_size=300, test_size=50, seed=3)
    b_train, _ = reorder.make_split(train_size=300, test_size=50, seed=3)
    assert a_train == b_train and len(a_test) == 50
    check_disjoint(a_train, a_test)
    links = [[min(s) for s in g.sure] for g in a_train.gold]
    assert all(any(b < a for a, b in zip(ls, ls[1:], strict=False)) for ls in links)  # every pair goes backwards


def test_alignment_accuracy_counts_arg_max_hits_on_sure_links():
    from attn_jax.train.text_metrics import alignment_accuracy

    sure = [(frozenset({1}), frozenset({0}), frozenset())]
    right = np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]])
    assert alignment_accuracy([right], sure) == 1.0
    assert alignment_accuracy([right[:, ::-1]], sure) == 0.0
    assert alignment_accuracy([np.array([[0.1, 0.9], [0.3, 0.7], [1, 0]])], sure) == 0.5
    assert np.isnan(alignment_accuracy([right], [(frozenset(), frozenset(), frozenset())]))
