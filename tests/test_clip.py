"""CLIP: the InfoNCE loss against a hand-computed case, the padding mask, retrieval recall, a tiny training run."""

import json
import math

import pytest
import torch

from genlab.clip import CLIP, info_nce, recall_at
from genlab.config import resolve
from genlab.nets.text import TextTransformer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_info_nce_by_hand():
    # two pairs in 2-D: u = (e1, e2), v = (e1, (e1 + e2)/sqrt 2), temperature scale exp(0) = 1
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    r = 1 / math.sqrt(2)
    v = torch.tensor([[1.0, 0.0], [r, r]])
    s = u @ v.T  # [[1, r], [0, r]]
    # image 0: -log(e^1 / (e^1 + e^r)); caption 0 (column 0): -log(e^1 / (e^1 + e^0))
    row0 = -math.log(math.e / (math.e + math.exp(r)))
    col0 = -math.log(math.e / (math.e + 1))
    # image 1: -log(e^r / (e^0 + e^r)); caption 1 (column 1): -log(e^r / (e^r + e^r))
    row1 = -math.log(math.exp(r) / (1 + math.exp(r)))
    col1 = math.log(2)
    assert s[1, 1].item() == pytest.approx(r)
    got = info_nce(u, v, torch.tensor(0.0))
    assert got.tolist() == pytest.approx([(row0 + col0) / 2, (row1 + col1) / 2], abs=1e-6)
    # the scale is clipped at 100: a huge temperature logit changes nothing past it
    assert torch.allclose(info_nce(u, v, torch.tensor(50.0)), info_nce(u, v, torch.tensor(math.log(100.0))))


def test_padding_is_invisible_to_the_text_tower():
    torch.manual_seed(0)
    tower = TextTransformer(vocab_size=12, max_len=10, width=16, layers=2, heads=4).eval()
    ids = torch.tensor([[1, 5, 7, 2]])  # BOS, two words, EOS
    padded = torch.tensor([[1, 5, 7, 2, 0, 0, 0]])
    other_pad = torch.tensor([[1, 5, 7, 2, 9, 3, 4]])  # junk where the mask says padding
    mask_padded = padded != 0
    with torch.no_grad():
        tokens, pooled = tower(ids, ids != 0)
        tokens_p, pooled_p = tower(padded, mask_padded)
        tokens_q, pooled_q = tower(other_pad, mask_padded)
    assert torch.allclose(pooled, pooled_p, atol=1e-6) and torch.allclose(tokens, tokens_p[:, :4], atol=1e-6)
    assert torch.equal(pooled_p, pooled_q) and torch.equal(tokens_p, tokens_q)  # what is masked never counts
    assert torch.equal(tokens_p[:, 4:], torch.zeros_like(tokens_p[:, 4:]))


def test_recall_counts_a_hit_among_the_top_k():
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.1, 0.7, 0.6]])
    same = torch.eye(3, dtype=torch.bool)
    assert recall_at(sim, same, 1) == pytest.approx(1 / 3)  # row 0 only
    assert recall_at(sim, same, 2) == pytest.approx(1.0)
    same[1, 2] = True  # pair 1's caption is word for word pair 2's
    assert recall_at(sim, same, 1) == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    from genlab.train import train

    run = tmp_path_factory.mktemp("clip") / "run"
    cfg = resolve("digits-captions", {"model": {"channels": (16, 32), "norm_groups": 8},
                                      "text": {"embed_dim": 32, "width": 32, "layers": 1, "heads": 4},
                                      "train": {"steps": 150, "batch_size": 128, "lr": 2e-3, "warmup": 10,
                                                "log_every": 10, "checkpoint_every": 150}}, family="clip")
    return run, train(cfg, run, progress=False, say=lambda text: None)


def test_a_tiny_clip_learns_the_captioned_digits(clip_run):
    run, summary = clip_run
    (result,) = summary["evaluations"]
    assert result["zero_shot_accuracy"] > 0.5  # chance is 0.1
    assert result["image_to_text_r5"] > 0.3 and result["text_to_image_r5"] > 0.3
    from genlab.run import RunDir

    losses = [r["loss"] for r in RunDir(run).records() if "loss" in r and "event" not in r]
    assert losses[-1] < losses[0] - 1.0
    cfg2, family, _, _ = RunDir(run).load()
    assert isinstance(family, CLIP) and cfg2.family == "clip"


def test_the_cli_refuses_what_clip_cannot_do(clip_run, tmp_path, capsys):
    from genlab.cli import main

    run, _ = clip_run
    assert main(["train", "clip", "--data", "digits", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no captions" in err and "--data" in err
    assert not (tmp_path / "r").exists()
    assert main(["sample", str(run), "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not draw images" in err and "encode_prompts" in err and not (tmp_path / "s.png").exists()


def test_genlab_eval_measures_a_clip_run_on_a_split(clip_run, capsys):
    from genlab.cli import main
    from genlab.run import RunDir

    run, _ = clip_run
    assert main(["eval", str(run), "--limit", "50", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["n"] == 50 and record["split"] == "test" and 0 <= record["zero_shot_accuracy"] <= 1
    assert RunDir(run).evaluations()[-1]["zero_shot_accuracy"] == record["zero_shot_accuracy"]
    assert main(["eval", str(run), "--metrics", "fid"]) == 2


def test_the_clip_score_by_hand():
    from genlab.metrics.text import clip_score

    class Fixed:  # unit embeddings chosen so the cosines are 0.6, -0.8 (clamped to 0) and 1
        def encode_image(self, images):
            return torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])[images[:, 0, 0, 0].long()]

        def encode_prompts(self, prompts):
            return torch.tensor([{"a": [0.6, 0.8], "b": [0.6, -0.8], "c": [0.6, 0.8]}[p] for p in prompts])

    images = torch.tensor([0, 1, 2], dtype=torch.uint8).view(3, 1, 1, 1)
    assert clip_score(Fixed(), images, ["a", "b", "c"], batch_size=2).tolist() == pytest.approx([60.0, 0.0, 100.0])
    with pytest.raises(ValueError, match="3 images for 2 prompts"):
        clip_score(Fixed(), images, ["a", "b"])


def test_real_images_score_higher_with_their_own_captions(clip_run):
    from genlab.data import load_dataset
    from genlab.metrics.text import clip_score
    from genlab.run import RunDir

    run, _ = clip_run
    _, clip, _, _ = RunDir(run).load()
    test = load_dataset("digits-captions", "test")
    images, captions = test.images[:200], list(test.captions[:200])
    own = clip_score(clip, images, captions)
    shuffled = clip_score(clip, images, captions[100:] + captions[:100])
    assert own.shape == (200,) and (own >= 0).all() and (own <= 100).all()
    assert own.mean() > shuffled.mean() + 5


def test_the_report_says_why_a_clip_run_has_no_row(clip_run, tmp_path, capsys):
    from genlab.cli import main

    run, _ = clip_run
    assert main(["report", str(run), "--out", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is a clip run: it draws no samples and has no likelihood" in err
    assert not (tmp_path / "r.md").exists()
