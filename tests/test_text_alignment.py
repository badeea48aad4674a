"""Text alignment: a caption states what it says, and real images score as their own captions ask."""

import torch

from conftest import SHARED, needs_shared
from genlab.data import load_dataset
from genlab.data.captions import attribute_thresholds
from genlab.metrics.features import load_feature_network
from genlab.metrics.text import GROUPS, alignment, asked_attributes, prompt_groups


def test_a_caption_states_only_what_its_words_say():
    # template 0 states all three; 3 ("a picture of a {size} {class}") only the size; "normal" says nothing
    templates = torch.tensor([0, 0, 3, 3])
    attributes = {"thickness": torch.tensor([2, 1, 2, 0]), "size": torch.tensor([0, 1, 1, 2]),
                  "position": torch.tensor([1, 0, 2, 2])}
    asked = asked_attributes(templates, attributes)
    assert asked["thickness"].tolist() == [2, -1, -1, -1]
    assert asked["size"].tolist() == [0, -1, -1, 2]
    assert asked["position"].tolist() == [1, 0, -1, -1]  # "in the middle" is said


@needs_shared
def test_test_images_match_their_own_captions():
    root = SHARED / "mnist"
    test = load_dataset("mnist-captions", "test", root=root)
    groups = prompt_groups(test, 150)
    assert set(groups) == set(GROUPS) and all(len(i) == 150 for i in groups.values())
    assert test.held_out_combination[groups["held_out_combination"]].all()
    assert not test.held_out_template[groups["seen"]].any()
    fnet, thresholds = load_feature_network("mnist-captions"), attribute_thresholds("mnist-captions", root=root)
    for idx in groups.values():
        asked = asked_attributes(test.template[idx], {a: v[idx] for a, v in test.attributes.items()})
        r = alignment(test.images[idx], test.labels[idx], asked, fnet, thresholds)
        # the attributes were measured from these very pixels; only the classifier can be wrong
        assert all(r[a] == 1.0 for a in asked if r[f"{a}_n"] > 0) and sum(r[f"{a}_n"] for a in asked) > 0
        assert r["class"] > 0.97 and r["all"] == r["class"]
    # a wrong image for the caption: shifted the other way, its position is wrong
    idx = groups["seen"]
    asked = asked_attributes(test.template[idx], {a: v[idx] for a, v in test.attributes.items()})
    moved = torch.roll(test.images[idx], shifts=8, dims=-1)
    r = alignment(moved, test.labels[idx], asked, fnet, thresholds)
    assert r["position"] < 0.5
