"""Captioned digit canvases: captions describe what was drawn; train and test use disjoint source images."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.data import digit_canvas as dc


def test_captions_name_the_digits_left_to_right_with_sizes_and_relations():
    placed = [dc.Placed(7, "small", 0, 30, 16), dc.Placed(3, "large", 4, 2, 24), dc.Placed(1, "small", 16, 36, 16)]
    assert dc.caption(placed) == ["large", "three", "and", "small", "seven", "above", "small", "one"]
    assert dc.caption(list(reversed(placed[:1])) + [dc.Placed(2, "small", 16, 20, 16)]) == [
        "small", "two", "below", "small", "seven"]


def test_canvases_hold_the_digits_their_captions_name():
    cfg = dc.CanvasConfig()
    train, test = dc.source_split(cfg.test_fraction)
    assert not set(train) & set(test) and len(train) + len(test) == 1797
    rng = np.random.default_rng(0)
    images, labels = dc.digits()
    for _ in range(50):
        img, placed = dc.canvas(rng, cfg, test)
        assert 1 <= len(placed) <= cfg.max_digits
        assert img.shape == (32, 64) and 0 <= img.min() and img.max() <= 1
        ink = np.zeros_like(img, bool)
        for p in placed:
            box = img[p.top:p.top + p.extent, p.left:p.left + p.extent]
            assert box.shape == (p.extent, p.extent) and box.sum() > 0
            # the box holds an upscaled test image of the named digit
            small = box[::dc.SCALES[p.size], ::dc.SCALES[p.size]]
            match = [k for k in test if np.array_equal(images[k], small)]
            assert match and all(labels[k] == p.digit for k in match)
            assert not ink[p.top:p.top + p.extent, p.left:p.left + p.extent].any()  # no overlap
            ink[p.top:p.top + p.extent, p.left:p.left + p.extent] = True
        assert np.all(img[~ink] == 0)


def test_batches_encode_and_decode():
    cfg = dc.CanvasConfig()
    b = dc.batch(np.random.default_rng(1), cfg, dc.source_split(0.2)[0], 16)
    assert b["images"].shape == (16, 32, 64) and b["captions"].shape == (16, dc.max_words(cfg) + 2)
    for cap, n in zip(b["captions"], b["lengths"], strict=True):
        assert cap[0] == dc.BOS and cap[n - 1] == dc.EOS and np.all(cap[n:] == dc.PAD)
        words = dc.decode(cap)
        assert len(words) == n - 2 and words[1] in dc.NUMBERS
    many = dc.batch(np.random.default_rng(2), cfg, np.arange(100), 64)
    assert {"above", "below", "and", "small", "large"} <= {w for c in many["captions"] for w in dc.decode(c)}
    assert set(np.unique(many["lengths"] - 2)) >= {5, 8, 11}  # 2, 3 and 4 digits
    with pytest.raises(ValueError, match="exceeds"):
        dc.encode(["one"] * 20, 14)
