"""Captioned digits, MNIST and Fashion-MNIST: each image with a caption of its class and attributes.

The caption says more than the class: three attributes are measured from (or put into)
the pixels, each with three values ``0 / 1 / 2``:

============  ======================  ==================================================
attribute     values                  how
============  ======================  ==================================================
thickness     thin / normal / thick   ink mass (sum of pixel values) against the per-class
                                      terciles of the base TRAIN split
size          small / normal / large  bounding-box area, height x width (rows and columns
                                      whose max is at least half the levels; each edge
                                      placed to a fraction of a pixel where the line max
                                      crosses half) against the per-class terciles
position      left / centre / right   a horizontal shift put into the image: MNIST and
                                      Fashion-MNIST by -4, 0, +4 px (zero fill, 28x28);
                                      digits placed in a 12x12 canvas at row 2, column 0, 2, 4
============  ======================  ==================================================

A value below the lower tercile is 0, above the upper one 2, else 1 (so ties, common in
whole-pixel extents, count as normal). :func:`measure_attributes` measures all three on
any images (position as the ink's centre-of-mass column against the image centre plus
the class's median offset on the base train split, ``+-2`` px for 28 wide, ``+-1`` for
12 wide), so generated samples can be scored the same way; on the captioned test
images it gives back the shift for 100% of digits and MNIST and 95% of Fashion-MNIST
(sandals 78%, sneakers 88%: little ink, and a shift clips the wide ones).

Image ``i`` of a split draws its position and template from a generator seeded by
``(CAPTION_SEED, split, i)`` (the same on every load, whatever else is loaded).

Templates (each "a"/"an" agrees with the word after it; a *normal* thickness or size says
nothing; centre is "in the middle"; Fashion-MNIST's classes are said as
:data:`CLASS_NAMES`, "t-shirt" .. "ankle boot")::

    0  a {thickness} {size} {class} {position}        all three
    1  a {class} {position}, {thickness}             no size
    2  a {thickness} {size} {class}                  no position
    3  a picture of a {size} {class}                 size only
    4  a {thickness} {class} drawn {position}        no size
    5  the {size} {class} {position}                 no thickness
    6  an image of a {size} {thickness} {class} {position}   all three, adjectives swapped (held out)
    7  {position} there is a {thickness} {class}     no size (held out)

The train split uses templates 0..5 only; the test split draws from all eight and marks
``held_out_template``. One (class, thick, position) triple per class is held out
(:data:`HELD_OUT_COMBINATIONS`, position ``c % 3``: "a thick 3 on the left"): a training
image that would show it gets the next position instead (nothing is dropped); the test
split keeps them and marks ``held_out_combination``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from genlab.data.core import DatasetInfo, ImageDataset, check_split
from genlab.data.digits import load_digits
from genlab.data.idx import load_idx_dataset
from genlab.data.tokenizer import Tokenizer, split_words
from genlab.errors import ConfigError, DataError

ATTRIBUTES = ("thickness", "size", "position")
VALUES = {"thickness": ("thin", "normal", "thick"), "size": ("small", "normal", "large"),
          "position": ("left", "centre", "right")}
# what a caption says for each value ("" = nothing)
PHRASES = {"thickness": ("thin", "", "thick"), "size": ("small", "", "large"),
           "position": ("on the left", "in the middle", "on the right")}
TEMPLATES = (
    "a {thickness} {size} {class} {position}",
    "a {class} {position}, {thickness}",
    "a {thickness} {size} {class}",
    "a picture of a {size} {class}",
    "a {thickness} {class} drawn {position}",
    "the {size} {class} {position}",
    "an image of a {size} {thickness} {class} {position}",  # held out
    "{position} there is a {thickness} {class}",  # held out
)
TRAIN_TEMPLATES = len(TEMPLATES) - 2  # templates 0..TRAIN_TEMPLATES-1 are for training
MAX_TOKENS = 16  # the longest caption ("an image of a large thick ankle boot on the right") needs 13

# caption class names: lower-case words a prompt can contain (Fashion-MNIST's loader says "T-shirt/top")
CLASS_NAMES = {
    "digits": tuple(str(i) for i in range(10)),
    "mnist": tuple(str(i) for i in range(10)),
    "fashion-mnist": ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                      "ankle boot"),
}
NUM_CLASSES = 10
HELD_OUT_COMBINATIONS = frozenset((c, "thick", VALUES["position"][c % 3]) for c in range(NUM_CLASSES))

CAPTION_SEED = 8  # issue 8
_SPLIT_INDEX = {"train": 0, "test": 1}
_SHIFT = 4  # px, MNIST and Fashion-MNIST
_DIGITS_CANVAS, _DIGITS_ROW, _DIGITS_COLUMNS = 12, 2, (0, 2, 4)


def caption_words() -> list[str]:
    """Every word a caption or class prompt can contain (the caption tokenizer's vocabulary)."""
    words = [w for t in TEMPLATES for w in split_words(re.sub(r"\{\w+\}", " ", t))]
    words += [w for phrases in PHRASES.values() for p in phrases for w in split_words(p)] + ["a", "an"]
    return words + [w for names in CLASS_NAMES.values() for n in names for w in split_words(n)]


def require_captions(cfg, what: str) -> None:
    """Raise a ConfigError unless the run ``cfg`` (a RunConfig) trains on captioned images; ``what``: who needs them."""
    if not cfg.data.name.endswith("-captions") or len(tuple(cfg.data.shape)) != 3 or not cfg.data.levels:
        raise ConfigError(f"{what} trains on captioned images, and {cfg.data.name} has no captions; use "
                          f"{{{{data.name}}}} mnist-captions, fashion-mnist-captions or digits-captions.")


@lru_cache(maxsize=1)
def caption_tokenizer() -> Tokenizer:
    """The tokenizer of every word the captions (and class prompts) can contain."""
    return Tokenizer(caption_words())


def _with_articles(words: list[str]) -> list[str]:
    """Each "a"/"an" agreeing with the sound of the word after it ("an ankle boot", "an 8", "a 7")."""
    out = list(words)
    for k, w in enumerate(out[:-1]):
        if w in ("a", "an"):
            out[k] = "an" if out[k + 1][0] in "aeiou8" else "a"  # 8 is said "eight"
    return out


def class_prompt(class_name: str) -> str:
    """The zero-shot prompt of a class: "a 3", "an ankle boot"."""
    return " ".join(_with_articles(["a", *class_name.split()]))


def caption_for(class_index: int, attributes: Mapping[str, int], template_index: int,
                class_names: tuple[str, ...]) -> str:
    """The caption of template ``template_index`` for a class and its attribute values (``{"thickness": 2, ...}``)."""
    fill = {a: PHRASES[a][int(attributes[a])] for a in ATTRIBUTES}
    text = TEMPLATES[template_index].format(**fill, **{"class": class_names[class_index]})
    text = " ".join(_with_articles(text.split()))  # also drops the gaps a normal value leaves
    return text.rstrip(",")  # "a 7 on the left," when the thickness is normal


def template_says(template_index: int) -> tuple[str, ...]:
    """The attributes template ``template_index`` can state (the others it leaves out on purpose)."""
    return tuple(a for a in ATTRIBUTES if "{" + a + "}" in TEMPLATES[template_index])


# ---------------------------------------------------------------- attributes

@dataclass(frozen=True)
class AttributeThresholds:
    """Per-class terciles of the base train split and the position margin (see the module docstring)."""

    thickness: torch.Tensor  # float64 [num_classes, 2]: ink mass terciles, in summed levels
    size: torch.Tensor  # float64 [num_classes, 2]: bounding-box area terciles, in square px (see _area)
    centre: torch.Tensor  # float64 [num_classes]: median centre-of-mass column - (W-1)/2 of each class, in px
    levels: int  # K of the images (a row or column counts for the box when its max is >= K/2)
    position_px: float  # |centre-of-mass column - (W-1)/2 - centre[class]| beyond this is left or right


def _column_ink(images: torch.Tensor) -> torch.Tensor:
    """The ink (summed levels) of each column, float64 [N, W].

    Summed in float32, which is exact while a column holds less than 2^24 (C*H*255 for 8-bit images) and
    twice as fast as an int64 sum.
    """
    return images.to(torch.float32).sum(dim=(1, 2)).to(torch.float64)


def _column_offset(ink: torch.Tensor) -> torch.Tensor:
    """The centre-of-mass column of ``ink`` [N, W] minus the image centre (W-1)/2, in px ([N], 0 without ink)."""
    total = ink.sum(dim=1)
    columns = torch.arange(ink.shape[1], dtype=torch.float64)
    com = (ink * columns).sum(dim=1) / total.clamp(min=1e-12)
    return torch.where(total > 0, com - (ink.shape[1] - 1) / 2, 0.0)


def _extent(images: torch.Tensor, levels: int, dim: int) -> torch.Tensor:
    """Bounding-box extent along rows (``dim=2``) or columns (``dim=3``) at half the levels, to a fraction of a
    pixel ([N] float64, 0 without ink).

    The lines whose max reaches K/2 span lines ``first..last``; each edge moves out by where the line maximum
    crosses K/2 between that line and the next one out (linear, zero beyond the image), so that extents are
    not whole numbers: MNIST's digits are scaled to 20 rows, and whole rows would tie most of them.
    """
    other = 3 if dim == 2 else 2
    r = images.amax(dim=(1, other)).to(torch.float64)  # [N, L] line maxima
    n, h = r.shape
    half = levels / 2
    rows = r >= half
    first = rows.to(torch.int8).argmax(dim=1)  # [N]
    last = h - 1 - rows.flip(1).to(torch.int8).argmax(dim=1)
    padded = torch.nn.functional.pad(r, (1, 1))  # padded[:, j + 1] = r[:, j]
    i = torch.arange(n)
    v_top, out_top = r[i, first], padded[i, first]  # out_top = the line before first (< K/2)
    v_bot, out_bot = r[i, last], padded[i, last + 2]
    extent = (last - first) + (v_top - half) / (v_top - out_top) + (v_bot - half) / (v_bot - out_bot)
    return torch.where(rows.any(dim=1), extent, 0.0)


def _area(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Bounding-box area, height times width (see :func:`_extent`), in square pixels ([N] float64)."""
    return _extent(images, levels, 2) * _extent(images, levels, 3)


def _terciles(x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    q = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)
    out = torch.zeros(num_classes, 2, dtype=torch.float64)
    for c in range(num_classes):
        xc = x[labels == c]
        if len(xc):
            out[c] = torch.quantile(xc, q)
    return out


def _tercile_class(x: torch.Tensor, labels: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    lo, hi = t[labels, 0], t[labels, 1]
    return torch.where(x < lo, 0, torch.where(x > hi, 2, 1)).to(torch.int64)


def thresholds_from(train: ImageDataset, position_px: float) -> AttributeThresholds:
    """The terciles of a (base, unshifted) train split."""
    k, labels = train.info.num_classes, train.labels
    ink = _column_ink(train.images)
    offset = _column_offset(ink)
    centre = torch.stack([offset[labels == c].median() if (labels == c).any() else offset.new_zeros(())
                          for c in range(k)])
    return AttributeThresholds(thickness=_terciles(ink.sum(dim=1), labels, k),
                               size=_terciles(_area(train.images, train.info.levels), labels, k),
                               centre=centre, levels=train.info.levels, position_px=position_px)


def measure_attributes(images: torch.Tensor, labels: torch.Tensor,
                       thresholds: AttributeThresholds) -> dict[str, torch.Tensor]:
    """Thickness, size and position (int64 ``[N]`` each, values 0/1/2) of uint8 images ``[N, C, H, W]``.

    ``labels`` ``[N]`` pick the class terciles. Position: the ink's centre-of-mass column
    minus the image centre ``(W-1)/2`` and minus the class's usual offset ``centre`` (an
    ankle boot's mass sits 3 px right of the middle of its unshifted image), left below
    ``-position_px``, right above ``+position_px`` (an empty image is centre).
    """
    labels = labels.to(torch.int64)
    ink = _column_ink(images)  # [N, W]
    offset = _column_offset(ink) - thresholds.centre[labels]
    m = thresholds.position_px
    position = torch.where(offset < -m, 0, torch.where(offset > m, 2, 1)).to(torch.int64)
    return {"thickness": _tercile_class(ink.sum(dim=1), labels, thresholds.thickness),
            "size": _tercile_class(_area(images, thresholds.levels), labels, thresholds.size),
            "position": position}


def _base_name(name: str) -> str:
    base = name.removesuffix("-captions")
    if base not in CLASS_NAMES:
        raise DataError(f"no captioned dataset {name!r}; choose one of: "
                        f"{', '.join(n + '-captions' for n in CLASS_NAMES)}.")
    return base


def _position_px(base: str) -> float:
    return 1.0 if base == "digits" else 2.0


def _load_base(base: str, split: str, root, download: bool, timeout: float) -> ImageDataset:
    if base == "digits":
        return load_digits(split, root)
    return load_idx_dataset(base, split, root, download=download, timeout=timeout)


def attribute_thresholds(name: str, root=None, *, download: bool = True, timeout: float = 30.0) -> AttributeThresholds:
    """The thresholds of dataset ``name`` ("mnist" or "mnist-captions", ...), from its base train split.

    Cached per (name, root): loading test splits reads the train split once per process. The tensors are
    shared between callers: do not change them.
    """
    return _cached_thresholds(_base_name(name), root, download, timeout)


@lru_cache(maxsize=8)
def _cached_thresholds(base: str, root, download: bool, timeout: float) -> AttributeThresholds:
    return thresholds_from(_load_base(base, "train", root, download, timeout), _position_px(base))


# ---------------------------------------------------------------- the datasets

@dataclass
class CaptionedDataset(ImageDataset):
    """An :class:`ImageDataset` with a caption, its tokens and the attributes it states, per image.

    Indexing still gives ``(image, label)``; the caption of image ``i`` is ``captions[i]`` / ``tokens[i]``.
    """

    captions: list[str]
    tokens: torch.Tensor  # int64 [N, MAX_TOKENS], caption_tokenizer() ids (mask = tokens != PAD)
    attributes: dict[str, torch.Tensor]  # "thickness", "size", "position": int64 [N] in 0..2
    template: torch.Tensor  # int64 [N]: index into TEMPLATES
    held_out_template: torch.Tensor  # bool [N]: template >= TRAIN_TEMPLATES (test split only)
    held_out_combination: torch.Tensor  # bool [N]: (class, thick, position) in HELD_OUT_COMBINATIONS (test only)

    def __post_init__(self) -> None:
        super().__post_init__()
        n = self.images.shape[0]
        if len(self.captions) != n or self.tokens.dtype != torch.int64 or self.tokens.shape != (n, MAX_TOKENS):
            raise ValueError(f"captions must be {n} and tokens int64 [{n}, {MAX_TOKENS}], got {len(self.captions)} "
                             f"and {self.tokens.dtype} {tuple(self.tokens.shape)}")
        if sorted(self.attributes) != sorted(ATTRIBUTES):
            raise ValueError(f"attributes must be {ATTRIBUTES}, got {tuple(self.attributes)}")
        for what, t, dtype in [*((a, v, torch.int64) for a, v in self.attributes.items()),
                               ("template", self.template, torch.int64),
                               ("held_out_template", self.held_out_template, torch.bool),
                               ("held_out_combination", self.held_out_combination, torch.bool)]:
            if t.dtype != dtype or t.shape != (n,):
                raise ValueError(f"{what} must be {dtype} [{n}], got {t.dtype} {tuple(t.shape)}")


def _draws(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Position (0..2) and template (0..len(TEMPLATES)-1 on test, ..TRAIN_TEMPLATES-1 on train) of images 0..n-1."""
    s = _SPLIT_INDEX[split]
    words = np.array([np.random.SeedSequence([CAPTION_SEED, s, i]).generate_state(2) for i in range(n)],
                     dtype=np.int64).reshape(n, 2)
    templates = len(TEMPLATES) if split == "test" else TRAIN_TEMPLATES
    return torch.from_numpy(words[:, 0] % 3), torch.from_numpy(words[:, 1] % templates)


def _held_out_table() -> torch.Tensor:
    """bool [class, thickness, position]: True on the triples of HELD_OUT_COMBINATIONS."""
    table = torch.zeros(NUM_CLASSES, 3, 3, dtype=torch.bool)
    for c, thickness, position in HELD_OUT_COMBINATIONS:
        table[c, VALUES["thickness"].index(thickness), VALUES["position"].index(position)] = True
    return table


def _place(images: torch.Tensor, position: torch.Tensor, base: str) -> torch.Tensor:
    """The images moved to their positions, zero fill: [N, C, 12, 12] for digits, same size otherwise."""
    n, c, h, w = images.shape
    if base == "digits":
        out = torch.zeros(n, c, _DIGITS_CANVAS, _DIGITS_CANVAS, dtype=images.dtype)
        for p, col in enumerate(_DIGITS_COLUMNS):
            sel = position == p
            out[sel, :, _DIGITS_ROW:_DIGITS_ROW + h, col:col + w] = images[sel]
        return out
    out = torch.zeros_like(images)
    sel_left, sel_right = position == 0, position == 2
    out[position == 1] = images[position == 1]
    out[sel_left, :, :, :w - _SHIFT] = images[sel_left, :, :, _SHIFT:]  # ink moves left by _SHIFT
    out[sel_right, :, :, _SHIFT:] = images[sel_right, :, :, :w - _SHIFT]
    return out


def _captioned(base: str, data: ImageDataset, thresholds: AttributeThresholds) -> CaptionedDataset:
    split, labels = data.split, data.labels
    position, template = _draws(split, len(labels))
    held = _held_out_table()
    if split == "train":
        # move a would-be held-out triple to the next position; the thickness measured after the shift can only
        # drop (a shift only clips ink), so no training image ends up showing a held-out triple
        thick = measure_attributes(data.images, labels, thresholds)["thickness"]
        position = torch.where(held[labels, thick, position], (position + 1) % 3, position)
    images = _place(data.images, position, base)
    measured = measure_attributes(images, labels, thresholds)
    attributes = {"thickness": measured["thickness"], "size": measured["size"], "position": position}
    class_names = CLASS_NAMES[base]

    # at most 10 * 3^3 * 8 distinct captions: build and encode each once
    key = (((labels * 3 + attributes["thickness"]) * 3 + attributes["size"]) * 3 + position) * len(TEMPLATES) + template
    unique, inverse = torch.unique(key, return_inverse=True)
    texts = []
    for k in unique.tolist():
        k, t = divmod(k, len(TEMPLATES))
        k, p = divmod(k, 3)
        k, s = divmod(k, 3)
        c, th = divmod(k, 3)
        texts.append(caption_for(c, {"thickness": th, "size": s, "position": p}, t, class_names))
    tokens, _ = caption_tokenizer().encode(texts, MAX_TOKENS)

    info = DatasetInfo(name=f"{base}-captions", channels=images.shape[1], height=images.shape[2],
                       width=images.shape[3], levels=data.info.levels, num_classes=len(class_names),
                       class_names=class_names)
    return CaptionedDataset(images=images, labels=labels, info=info, split=split,
                            captions=[texts[j] for j in inverse.tolist()], tokens=tokens[inverse],
                            attributes=attributes, template=template,
                            held_out_template=template >= TRAIN_TEMPLATES,
                            held_out_combination=held[labels, attributes["thickness"], position])


def _load(base: str, split: str, root, download: bool = True, timeout: float = 30.0) -> CaptionedDataset:
    check_split(split)
    data = _load_base(base, split, root, download, timeout)
    if split == "train":  # the same numbers as attribute_thresholds, without reading the files twice
        thresholds = thresholds_from(data, _position_px(base))
    else:
        thresholds = attribute_thresholds(base, root, download=download, timeout=timeout)
    return _captioned(base, data, thresholds)


def load_digits_captions(split: str, root=None) -> CaptionedDataset:
    """Captioned digits: 12x12, 17 levels, 1437 train / 360 test (the digits' split). ``root`` is unused."""
    return _load("digits", split, root)


def load_idx_captions(name: str, split: str, root=None, *, download: bool = True,
                      timeout: float = 30.0) -> CaptionedDataset:
    """Captioned MNIST or Fashion-MNIST (``name`` "mnist" or "fashion-mnist"): 28x28, found as the base dataset is."""
    return _load(name, split, root, download, timeout)


__all__ = ["CaptionedDataset", "AttributeThresholds", "measure_attributes", "attribute_thresholds", "caption_for",
           "class_prompt", "template_says", "caption_words", "TEMPLATES", "TRAIN_TEMPLATES",
           "HELD_OUT_COMBINATIONS", "MAX_TOKENS", "ATTRIBUTES", "VALUES", "PHRASES", "CLASS_NAMES"]
