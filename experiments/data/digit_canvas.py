"""Captioned canvases of handwritten digits (scikit-learn's bundled UCI digits, 1797 images of 8 x 8).

Each canvas (default 32 x 64) holds 2-5 digits at random positions, each drawn small (16 px) or
large (24 px); boxes never overlap. Its caption names the digits from left to right (by the left
edge), each with its size, and joins consecutive digits by a relation: "above" / "below" when
the two overlap horizontally (the first is higher / lower), else "and"::

    large three and small seven above small one

Splits are by source image: a test canvas only uses digit images that no training canvas uses.
Everything is generated from a seed; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPECIAL = ("<pad>", "<bos>", "<eos>")
VOCAB = SPECIAL + NUMBERS + ("small", "large", "and", "above", "below")
PAD, BOS, EOS = 0, 1, 2
INDEX = {w: i for i, w in enumerate(VOCAB)}
SCALES = {"small": 2, "large": 3}  # integer upscaling of the 8 x 8 digits


@dataclasses.dataclass(frozen=True)
class CanvasConfig:
    height: int = 32  # canvas height in pixels
    width: int = 64  # canvas width in pixels
    min_digits: int = 2  # digits per canvas: uniform in min_digits..max_digits
    max_digits: int = 5  # most digits per canvas (fewer when they do not fit its width)
    test_fraction: float = 0.2  # of the source digit images


@functools.lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """``images [1797, 8, 8]`` float32 in [0, 1] and ``labels [1797]``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int32)


def source_split(test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and test source images (disjoint, stratified by nothing: a random cut)."""
    n = len(digits()[1])
    order = np.random.default_rng((seed, 99)).permutation(n)
    cut = int(round(n * (1 - test_fraction)))
    return np.sort(order[:cut]), np.sort(order[cut:])


@dataclasses.dataclass(frozen=True)
class Placed:
    digit: int
    size: str
    top: int
    left: int
    extent: int  # side in pixels


def _layout(rng: np.random.Generator, cfg: CanvasConfig, count: int) -> list[tuple[str, int, int, int]]:
    """(size, top, left, side) of ``count`` non-overlapping boxes, in columns: a column holds one digit, or two
    small ones stacked (slightly offset, so they overlap horizontally). Large digits shrink, and then digits are
    dropped, until the columns fit the width; the slack becomes random gaps."""
    small, large = 8 * SCALES["small"], 8 * SCALES["large"]
    columns, left_to_place = [], count
    while left_to_place:
        if left_to_place >= 2 and 2 * small <= cfg.height and rng.random() < 0.35:
            shift = int(rng.integers(1, 5))
            columns.append([("small", shift), ("small", 0)] if rng.random() < 0.5 else [("small", 0), ("small", shift)])
            left_to_place -= 2
        else:
            size = "large" if rng.random() < 0.4 and large <= cfg.height else "small"
            columns.append([(size, 0)])
            left_to_place -= 1

    def width(col):
        return max(8 * SCALES[sz] + sh for sz, sh in col)

    for col in columns:  # shrink large digits while too wide
        if sum(map(width, columns)) > cfg.width and col[0][0] == "large":
            col[0] = ("small", 0)
    while columns and sum(map(width, columns)) > cfg.width:
        columns.pop(int(rng.integers(len(columns))))
    slack = cfg.width - sum(map(width, columns))
    gaps = np.diff(np.sort(rng.integers(0, slack + 1, len(columns))), prepend=0)
    boxes, x = [], 0
    for col, gap in zip(columns, gaps, strict=True):
        x += int(gap)
        if len(col) == 1:
            side = 8 * SCALES[col[0][0]]
            boxes.append((col[0][0], int(rng.integers(0, cfg.height - side + 1)), x, side))
        else:
            top = int(rng.integers(0, cfg.height - 2 * small + 1))
            for k, (sz, sh) in enumerate(col):
                boxes.append((sz, top + k * small, x + sh, small))
        x += width(col)
    return boxes


def caption(placed: list[Placed]) -> list[str]:
    """Words, left to right by the left edge: ``size digit (relation size digit)*``."""
    order = sorted(placed, key=lambda p: (p.left, p.top))
    words = []
    for i, p in enumerate(order):
        if i:
            q = order[i - 1]
            overlap = p.left < q.left + q.extent and q.left < p.left + p.extent
            words.append(("above" if q.top < p.top else "below") if overlap else "and")
        words += [p.size, NUMBERS[p.digit]]
    return words


def canvas(rng: np.random.Generator, cfg: CanvasConfig, sources: np.ndarray) -> tuple[np.ndarray, list[Placed]]:
    """One ``[H, W]`` canvas from the source images ``sources`` and what was placed on it."""
    images, labels = digits()
    count = int(rng.integers(cfg.min_digits, cfg.max_digits + 1))
    img = np.zeros((cfg.height, cfg.width), np.float32)
    placed = []
    for size, top, left, side in _layout(rng, cfg, count):
        k = int(rng.choice(sources))
        img[top:top + side, left:left + side] = np.kron(images[k], np.ones((SCALES[size],) * 2, np.float32))
        placed.append(Placed(int(labels[k]), size, top, left, side))
    return img, placed


def encode(words: list[str], length: int) -> np.ndarray:
    """``<bos> words <eos>`` padded to ``length + 2`` token ids."""
    ids = [BOS] + [INDEX[w] for w in words] + [EOS]
    if len(ids) > length + 2:
        raise ValueError(f"caption of {len(words)} words exceeds max length {length}")
    return np.array(ids + [PAD] * (length + 2 - len(ids)), np.int32)


def max_words(cfg: CanvasConfig) -> int:
    return 3 * cfg.max_digits - 1


def batch(rng: np.random.Generator, cfg: CanvasConfig, sources: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """``images [B, H, W]``, ``captions [B, L + 2]`` (with <bos>/<eos>, padded), ``lengths [B]`` (words + 2)."""
    imgs, caps, lens = [], [], []
    for _ in range(size):
        img, placed = canvas(rng, cfg, sources)
        words = caption(placed)
        imgs.append(img)
        caps.append(encode(words, max_words(cfg)))
        lens.append(len(words) + 2)
    return {"images": np.stack(imgs), "captions": np.stack(caps), "lengths": np.array(lens, np.int32)}


def decode(ids) -> list[str]:
    """Token ids -> words, stopping at <eos> and skipping <bos>/<pad>."""
    out = []
    for i in ids:
        if int(i) == EOS:
            break
        if int(i) not in (PAD, BOS):
            out.append(VOCAB[int(i)])
    return out
