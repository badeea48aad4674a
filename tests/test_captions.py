"""genlab.data.tokenizer and genlab.data.captions: the word tokenizer and the captioned datasets."""

import pytest
import torch

from conftest import SHARED, needs_shared
from genlab.data import ImageDataset, load_dataset
from genlab.data.captions import (
    ATTRIBUTES,
    CLASS_NAMES,
    HELD_OUT_COMBINATIONS,
    MAX_TOKENS,
    TEMPLATES,
    TRAIN_TEMPLATES,
    VALUES,
    attribute_thresholds,
    caption_for,
    caption_tokenizer,
    class_prompt,
    measure_attributes,
    template_says,
)
from genlab.data.tokenizer import BOS, EOS, PAD, Tokenizer, split_words
from genlab.errors import ConfigError, DataError

# ---------------------------------------------------------------- tokenizer


def test_tokenizer_ids_mask_and_round_trip():
    tok = Tokenizer(["a thick 3", "on the left", "ankle boot"])
    assert tok.vocab[:3] == ("<pad>", "<bos>", "<eos>") and (PAD, BOS, EOS) == (0, 1, 2)
    assert len(tok) == 3 + 8  # "ankle boot" is two words
    ids, mask = tok.encode(["A thick 3, on the left.", "", "ankle boot"], max_len=9)
    assert ids.dtype == torch.int64 and mask.dtype == torch.bool and ids.shape == mask.shape == (3, 9)
    assert torch.equal(mask, ids != PAD)
    w = {t: i for i, t in enumerate(tok.vocab)}
    assert ids[0].tolist() == [BOS, w["a"], w["thick"], w["3"], w["on"], w["the"], w["left"], EOS, PAD]
    assert ids[1].tolist() == [BOS, EOS] + [PAD] * 7  # an empty text is [BOS, EOS]
    assert mask.sum(dim=1).tolist() == [8, 2, 4]
    assert tok.decode(ids) == ["a thick 3 on the left", "", "ankle boot"]
    assert tok.decode(ids[2]) == ["ankle boot"]
    # exactly max_len - 2 words fit
    assert tok.encode(["a " * 7], max_len=9)[1].all()


def _one_sentence(message: str) -> bool:
    return message.endswith(".") and ". " not in message[:-1] and "\n" not in message


def test_unknown_word_and_too_long_are_config_errors():
    tok = caption_tokenizer()
    with pytest.raises(ConfigError) as e:
        tok.encode(["a 3", "a purple 3"], max_len=MAX_TOKENS)
    msg = str(e.value)
    assert "unknown word 'purple' in the prompt 'a purple 3'" in msg and _one_sentence(msg)
    assert "0, 1, 2" in msg and "more" in msg  # the first 20 known words, then how many more
    with pytest.raises(ConfigError) as e:
        tok.encode(["a " * (MAX_TOKENS - 1)], max_len=MAX_TOKENS)
    assert f"at most {MAX_TOKENS - 2}" in str(e.value) and _one_sentence(str(e.value))
    with pytest.raises(ConfigError, match="'<bos>'"):
        tok.encode(["<bos>"], max_len=4)  # special tokens are not words


def test_every_caption_and_class_prompt_encodes():
    tok = caption_tokenizer()
    texts = [caption_for(c, {"thickness": th, "size": s, "position": p}, t, names)
             for names in CLASS_NAMES.values() for c in range(10) for th in range(3) for s in range(3)
             for p in range(3) for t in range(len(TEMPLATES))]
    texts += [class_prompt(n) for names in CLASS_NAMES.values() for n in names]
    ids, mask = tok.encode(texts, MAX_TOKENS)
    assert tok.decode(ids) == [" ".join(split_words(t)) for t in texts]
    assert int(mask.sum(dim=1).max()) <= MAX_TOKENS
    assert set(ids.flatten().tolist()) | {PAD} == set(range(len(tok)))  # every word of the vocabulary is used


def test_caption_wording():
    digits, fashion = CLASS_NAMES["mnist"], CLASS_NAMES["fashion-mnist"]
    normal = {"thickness": 1, "size": 1, "position": 1}
    assert caption_for(7, normal, 2, digits) == "a 7"
    assert caption_for(7, {"thickness": 2, "size": 1, "position": 0}, 0, digits) == "a thick 7 on the left"
    assert caption_for(9, {"thickness": 1, "size": 0, "position": 1}, 0, fashion) == "a small ankle boot in the middle"
    assert caption_for(9, normal, 3, fashion) == "a picture of an ankle boot"
    assert caption_for(7, {"thickness": 1, "size": 1, "position": 2}, 1, digits) == "a 7 on the right"
    assert class_prompt("3") == "a 3" and class_prompt("ankle boot") == "an ankle boot"
    assert len(TEMPLATES) >= 6 and TRAIN_TEMPLATES == len(TEMPLATES) - 2
    assert set(template_says(0)) == set(ATTRIBUTES)


def test_held_out_combinations_one_per_class():
    assert (3, "thick", "left") in HELD_OUT_COMBINATIONS  # 3 % 3 = 0: left
    assert sorted(c for c, _, _ in HELD_OUT_COMBINATIONS) == list(range(10))
    assert all(t == "thick" and p == VALUES["position"][c % 3] for c, t, p in HELD_OUT_COMBINATIONS)


# ---------------------------------------------------------------- captioned digits


@pytest.fixture(scope="module")
def digits():
    return {s: load_dataset("digits-captions", s) for s in ("train", "test")}


def _parse(caption: str, class_names) -> dict:
    """The class and the attributes a caption states, read back from its words (None: not said)."""
    words = split_words(caption)
    text = " ".join(words)
    found = {"class": [c for c, n in enumerate(class_names) if f" {n} " in f" {text} "]}  # "t-shirt" is one word
    th = [v for v, w in ((0, "thin"), (2, "thick")) if w in words]
    sz = [v for v, w in ((0, "small"), (2, "large")) if w in words]
    pos = [v for v, w in enumerate(("on the left", "in the middle", "on the right")) if w in text]
    found.update(thickness=th, size=sz, position=pos)
    return found


def _check_captions(d):
    names = d.info.class_names
    for i in range(len(d)):
        got = _parse(d.captions[i], names)
        assert got["class"] == [int(d.labels[i])], d.captions[i]
        says = template_says(int(d.template[i]))
        for a in ATTRIBUTES:
            value = int(d.attributes[a][i])
            if a not in says:
                assert got[a] == [], (d.captions[i], a)
            elif a == "position" or value != 1:
                assert got[a] == [value], (d.captions[i], a, value)
            else:  # a normal thickness or size says nothing
                assert got[a] == [], (d.captions[i], a)


def _held_out(d):
    triples = [(int(c), VALUES["thickness"][int(t)], VALUES["position"][int(p)]) for c, t, p in
               zip(d.labels.tolist(), d.attributes["thickness"].tolist(), d.attributes["position"].tolist(), strict=True)]
    return torch.tensor([t in HELD_OUT_COMBINATIONS for t in triples])


def test_digits_captions_fields(digits):
    tok = caption_tokenizer()
    for split, n in (("train", 1437), ("test", 360)):
        d = digits[split]
        assert isinstance(d, ImageDataset) and len(d) == n and d.split == split
        assert d.images.shape == (n, 1, 12, 12) and d.images.dtype == torch.uint8
        assert (d.info.name, d.info.height, d.info.width, d.info.levels) == ("digits-captions", 12, 12, 17)
        assert d.info.class_names == tuple("0123456789")
        assert d.tokens.shape == (n, MAX_TOKENS) and d.tokens.dtype == torch.int64
        assert torch.equal(d.tokens, tok.encode(d.captions, MAX_TOKENS)[0])
        for a in ATTRIBUTES:
            assert d.attributes[a].dtype == torch.int64 and set(d.attributes[a].tolist()) <= {0, 1, 2}
        _check_captions(d)


def test_digits_captions_placement(digits):
    base = load_dataset("digits", "test")
    d = digits["test"]
    for p, col in enumerate((0, 2, 4)):
        sel = d.attributes["position"] == p
        assert sel.sum() > 50
        assert torch.equal(d.images[sel, :, 2:10, col:col + 8], base.images[sel])
        assert int(d.images[sel].to(torch.int64).sum()) == int(base.images[sel].to(torch.int64).sum())


def test_digits_captions_are_deterministic(digits):
    again = load_dataset("digits-captions", "test")
    d = digits["test"]
    assert torch.equal(again.images, d.images) and again.captions == d.captions
    assert torch.equal(again.template, d.template) and torch.equal(again.tokens, d.tokens)
    assert all(torch.equal(again.attributes[a], d.attributes[a]) for a in ATTRIBUTES)


def test_held_out_templates_and_combinations(digits):
    train, test = digits["train"], digits["test"]
    assert int(train.template.max()) < TRAIN_TEMPLATES and not train.held_out_template.any()
    assert not train.held_out_combination.any() and not _held_out(train).any()
    assert torch.equal(test.held_out_template, test.template >= TRAIN_TEMPLATES)
    assert torch.equal(test.held_out_combination, _held_out(test))
    assert 40 < int(test.held_out_template.sum()) < 140  # about a quarter of 360
    assert 15 < int(test.held_out_combination.sum()) < 80  # about a ninth
    assert set(test.template.tolist()) == set(range(len(TEMPLATES)))


def _check_measures(train, test, thresholds):
    for d in (train, test):
        m = measure_attributes(d.images, d.labels, thresholds)
        assert (m["position"] == d.attributes["position"]).double().mean() > 0.95
        assert torch.equal(m["thickness"], d.attributes["thickness"]) and torch.equal(m["size"], d.attributes["size"])
    for c in range(10):
        counts = torch.bincount(train.attributes["thickness"][train.labels == c], minlength=3)
        share = counts.double() / counts.sum()
        assert ((share > 0.20) & (share < 0.45)).all(), (c, share)


def test_digits_measure_attributes(digits):
    _check_measures(digits["train"], digits["test"], attribute_thresholds("digits-captions"))
    assert attribute_thresholds("digits") is attribute_thresholds("digits-captions")  # one cached copy


def test_size_is_the_bounding_box_area_to_a_fraction_of_a_pixel():
    """Each edge of the box sits where the line maximum crosses half the levels (K/2 = 128), linearly between
    the outermost line at or above it and the line beyond; the area is height times width."""
    from genlab.data.captions import _area, _extent

    half, e = 128.0, (255 - 128) / 255  # one full edge line adds e of a pixel
    x = torch.zeros(3, 1, 28, 28, dtype=torch.uint8)
    x[:, 0, 5:10, 3:11] = 255  # rows 5..9, columns 3..10
    x[1, 0, 4, 3:11] = 192  # a row above at 3/4: the top edge moves to row 4 plus (192 - 128) / 192
    x[2, 0, 5:10, 11] = 128  # a column exactly at half on the right: its edge adds nothing
    h, w = _extent(x, 256, 2), _extent(x, 256, 3)
    assert h.tolist() == pytest.approx([4 + 2 * e, 5 + (192 - half) / 192 + e, 4 + 2 * e])
    assert w.tolist() == pytest.approx([7 + 2 * e, 7 + 2 * e, 8 + e])
    assert torch.equal(_area(x, 256), h * w)
    assert _area(torch.zeros(1, 1, 28, 28, dtype=torch.uint8), 256).item() == 0.0  # no ink, no box


def test_no_such_option_or_dataset():
    with pytest.raises(DataError, match="no option 'download'"):
        load_dataset("digits-captions", download=False)
    with pytest.raises(DataError, match="no captioned dataset 'cifar10'"):
        attribute_thresholds("cifar10")


# ---------------------------------------------------------------- captioned MNIST


@pytest.fixture(scope="module")
def mnist():
    root = None if SHARED is None else SHARED / "mnist"
    return {s: load_dataset("mnist-captions", s, root=root, download=False) for s in ("train", "test")}


@needs_shared
def test_mnist_captions(mnist):
    train, test = mnist["train"], mnist["test"]
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.info.name == "mnist-captions" and train.info.levels == 256
    assert not train.held_out_template.any() and not train.held_out_combination.any()
    assert not _held_out(train).any() and test.held_out_template.any() and test.held_out_combination.any()
    _check_measures(train, test, attribute_thresholds("mnist", SHARED / "mnist", download=False))
    # left/centre/right are the base images shifted by -4/0/+4 px with zero fill
    base = load_dataset("mnist", "test", root=SHARED / "mnist", download=False).images
    p = test.attributes["position"]
    assert torch.equal(test.images[p == 1], base[p == 1])
    assert torch.equal(test.images[p == 0][..., :24], base[p == 0][..., 4:]) and not test.images[p == 0][..., 24:].any()
    assert torch.equal(test.images[p == 2][..., 4:], base[p == 2][..., :24]) and not test.images[p == 2][..., :4].any()
    _check_captions(test)
