"""An Omniglot-like set of handwriting-free glyphs: characters of many scripts rendered from the DejaVu
fonts that matplotlib ships, each "drawn" several times with random distortions.

Omniglot (Lake et al. 2015) cannot be downloaded here. Each of our characters is a Unicode letter
of one of :data:`SCRIPTS`; its "drawings" are renderings in a randomly chosen DejaVu face that
has the glyph (sans, bold, oblique, serif, mono), at a random size and stroke weight, under a
random affine map (rotation, shear, anisotropic scale, translation), on a 28 x 28 canvas as in
the SNAIL paper's Omniglot setup. Glyphs that render blank, or identically to an earlier glyph
(Latin A, Greek Alpha and Cyrillic A), are dropped.

The domain differs from Omniglot's: variation between our drawings of a character is
geometric (fonts, affine maps), not the strokes of 20 different people, and several scripts
(Canadian syllabics) encode vowels by rotating one shape, which rotations partly blur.

Classes split into train and test by character (a random ``test_fraction`` of every script),
or by script (whole scripts held out: :data:`TEST_SCRIPTS`), the harder split.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

SIZE = 28

# script -> code point ranges (inclusive); letters only, no digits, marks or punctuation
SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    "latin": ((0x41, 0x5A),),
    "greek": ((0x391, 0x3A9),),
    "cyrillic": ((0x410, 0x42F), (0x404, 0x40F)),
    "armenian": ((0x531, 0x556), (0x561, 0x586)),
    "georgian": ((0x10D0, 0x10FA),),
    "hebrew": ((0x5D0, 0x5EA),),
    "arabic": ((0x627, 0x64A),),
    "tifinagh": ((0x2D30, 0x2D65),),
    "nko": ((0x7CA, 0x7EA),),
    "lao": ((0xE81, 0xEAE),),
    "canadian": ((0x1401, 0x166C),),
    "lisu": ((0xA4D0, 0xA4F7),),
    "ogham": ((0x1681, 0x169A),),
}
TEST_SCRIPTS = ("armenian", "lao", "lisu", "tifinagh")  # the script split's held-out scripts
FACES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
         "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf")


@dataclasses.dataclass(frozen=True)
class Glyphs:
    """``images [C, D, 28, 28]`` uint8 (C characters x D drawings), ``chars`` (str), ``scripts`` (name per
    character)."""

    images: np.ndarray
    chars: tuple[str, ...]
    scripts: tuple[str, ...]

    def split(self, how: str, test_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the train and test characters: ``how`` = "character" or "script"."""
        if how == "script":
            test = np.array([s in TEST_SCRIPTS for s in self.scripts])
        elif how == "character":
            rng, test = np.random.default_rng(seed), np.zeros(len(self.chars), bool)
            for s in dict.fromkeys(self.scripts):
                idx = np.flatnonzero(np.array(self.scripts) == s)
                test[rng.choice(idx, max(1, round(test_fraction * len(idx))), replace=False)] = True
        else:
            raise ValueError(f"unknown split {how!r}; valid: character, script")
        return np.flatnonzero(~test), np.flatnonzero(test)


def _font_dir() -> str:
    import matplotlib

    return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")


@functools.cache
def _font(face: str):
    from matplotlib import ft2font

    return ft2font.FT2Font(os.path.join(_font_dir(), face))


def _render(char: str, face: str, size: float) -> np.ndarray:
    """The glyph's coverage bitmap (uint8), tight to its ink."""
    font = _font(face)
    font.set_size(size, 72)
    font.set_text(char, 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    return np.asarray(font.get_image())


def _place(bitmap: np.ndarray, rng: np.random.Generator | None, canvas: int = SIZE) -> np.ndarray:
    """Centre the glyph, apply a random affine map (none when ``rng`` is None) and return ``[28, 28]`` float."""
    from scipy import ndimage

    ys, xs = np.nonzero(bitmap > 20)
    if ys.size == 0:
        return np.zeros((canvas, canvas), np.float32)
    g = bitmap[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32) / 255.0
    fit = 20.0 / max(g.shape)  # the ink box's longer side -> 20 px, as Omniglot's centred strokes
    big = max(64, max(g.shape) + 4)
    src = np.zeros((big, big), np.float32)
    h, w = g.shape
    src[(big - h) // 2:(big - h) // 2 + h, (big - w) // 2:(big - w) // 2 + w] = g
    if rng is None:
        rot = shear = dx = dy = 0.0
        sx = sy = 1.0
    else:
        rot, shear = rng.uniform(-0.25, 0.25), rng.uniform(-0.3, 0.3)
        sx, sy = rng.uniform(0.8, 1.15, 2)
        dx, dy = rng.uniform(-2.0, 2.0, 2)
    c, s = np.cos(rot), np.sin(rot)
    forward = np.array([[c, -s], [s, c]]) @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([sy, sx]) * fit
    inverse = np.linalg.inv(forward)  # output (canvas) coords -> input (src) coords
    centre_out = np.array([canvas / 2 - 0.5 + dy, canvas / 2 - 0.5 + dx])
    offset = np.array([big / 2 - 0.5, big / 2 - 0.5]) - inverse @ centre_out
    out = ndimage.affine_transform(src, inverse, offset=offset, output_shape=(canvas, canvas), order=1)
    return np.clip(out, 0.0, 1.0)


def _stroke(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random stroke weight: thicken or thin by one pixel, or leave."""
    from scipy import ndimage

    k = rng.integers(3)
    if k == 1:
        return ndimage.grey_dilation(img, size=(2, 2))
    if k == 2:
        return ndimage.grey_erosion(img, size=(2, 2)) * 0.5 + img * 0.5
    return img


def candidates() -> list[tuple[str, str, tuple[str, ...]]]:
    """(script, character, faces that have it) for every code point of :data:`SCRIPTS` DejaVu covers."""
    maps = {face: _font(face).get_charmap() for face in FACES}
    out = []
    for script, ranges in SCRIPTS.items():
        for a, b in ranges:
            for cp in range(a, b + 1):
                faces = tuple(f for f in FACES if cp in maps[f])
                if faces:
                    out.append((script, chr(cp), faces))
    return out


@functools.lru_cache(maxsize=4)
def load(drawings: int = 20, seed: int = 0) -> Glyphs:
    """Render every character ``drawings`` times (deterministic in ``seed``); a few seconds per 10 drawings."""
    seen, chars, scripts, images = set(), [], [], []
    for script, ch, faces in candidates():
        canon = _place(_render(ch, faces[0], 48.0), None)
        if canon.sum() < 8.0:  # blank or a dot
            continue
        key = (canon > 0.5).tobytes()
        if key in seen:
            continue
        seen.add(key)
        rng = np.random.default_rng((seed, ord(ch)))
        draws = []
        for _ in range(drawings):
            face = faces[rng.integers(len(faces))]
            img = _stroke(_place(_render(ch, face, float(rng.uniform(36.0, 60.0))), rng), rng)
            draws.append(np.round(255 * img).astype(np.uint8))
        chars.append(ch)
        scripts.append(script)
        images.append(np.stack(draws))
    return Glyphs(np.stack(images), tuple(chars), tuple(scripts))


def episode(rng: np.random.Generator, glyphs: Glyphs, classes: np.ndarray, ways: int, shots: int,
            batch: int) -> dict[str, np.ndarray]:
    """``batch`` N-way K-shot episodes: ``images [B, N·K+1, 28, 28]`` float32 in [0, 1] (support in random
    order, the query last), ``labels [B, N·K+1]`` (episode-local 0..N-1; the query's is its target)."""
    t = ways * shots + 1
    images = np.zeros((batch, t, SIZE, SIZE), np.float32)
    labels = np.zeros((batch, t), np.int32)
    d = glyphs.images.shape[1]
    for b in range(batch):
        chosen = rng.choice(classes, ways, replace=False)
        query_class = rng.integers(ways)
        support = []
        for n, c in enumerate(chosen):
            k = shots + 1 if n == query_class else shots
            draws = rng.choice(d, k, replace=False)
            support += [(c, int(x), n) for x in draws[:shots]]
            if n == query_class:
                query = (c, int(draws[shots]), n)
        order = rng.permutation(len(support))
        for i, (c, x, n) in enumerate([support[j] for j in order] + [query]):
            images[b, i] = glyphs.images[c, x] / 255.0
            labels[b, i] = n
    return {"images": images, "labels": labels}
