"""Editing: RePaint inpainting against oracles, super-resolution conditioning, PSNR, and the CLI."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import genlab.diffusion
from conftest import TINY
from genlab.cli import main
from genlab.config import from_dict
from genlab.diffusion import Denoiser, GaussianDiffusion, per_sample_generators
from genlab.diffusion.inpaint import inpaint, inpaint_images, named_mask, repaint_network_calls, repaint_schedule
from genlab.diffusion.superres import bicubic, check_factor, condition, downsample
from genlab.errors import ConfigError
from genlab.metrics.psnr import psnr
from genlab.nets import UNet
from genlab.run import load_run
from test_cli import assert_one_sentence_error, run_cli


def x0_oracle(x0: torch.Tensor) -> Denoiser:
    """A denoiser that knows the whole image: it predicts x0 whatever x_t."""
    return Denoiser(lambda xt, t: x0.expand_as(xt), "x0")


def counting(denoiser_fn, parameterization="eps"):
    calls = []

    def net(xt, t):
        calls.append(int(t[0]))
        return denoiser_fn(xt, t)

    return Denoiser(net, parameterization), calls


@pytest.fixture(scope="module")
def diff():
    return GaussianDiffusion.from_schedule("linear", 1000)


# ----- RePaint ---------------------------------------------------------------------------------


def test_genlab_diffusion_inpaint_is_the_function():
    assert genlab.diffusion.inpaint is inpaint


@pytest.mark.parametrize("steps,resample,jump", [(50, 3, 5), (20, 1, 10), (None, 2, 10)])
def test_known_pixels_are_kept_exactly_and_an_x0_oracle_fills_the_rest(steps, resample, jump):
    diffusion = GaussianDiffusion.from_schedule("linear", 50)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 2, 8, 8, generator=gen) * 2 - 1
    mask = named_mask("center", 8, 8)  # [1, 1, 8, 8], broadcast over the batch and channels
    x_known = torch.where(mask.bool(), x0, torch.full_like(x0, 7.0))  # unknown pixels must never be read
    x = inpaint(x0_oracle(x0), diffusion, x_known, mask, gen, steps=steps, jump_length=jump, resample=resample)
    known = mask.bool().expand_as(x0)
    assert torch.equal(x[known], x0[known])
    assert torch.allclose(x[~known], x0[~known], atol=1e-5)


def gaussian_2d_oracle(diff, rho, s):
    """The exact eps-denoiser of x0 ~ N(0, s^2 [[1, rho], [rho, 1]]) laid out as [B, 1, 1, 2] images:
    E[eps | x_t] = sqrt(1 - ab) (ab Sigma + (1 - ab) I)^-1 x_t."""
    sigma = s**2 * torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)

    def net(xt, t):
        ab = diff.alpha_bar[t[0]]
        cov_t = ab * sigma + (1 - ab) * torch.eye(2, dtype=torch.float64)
        return (1 - ab).sqrt() * (xt.reshape(-1, 2) @ torch.linalg.inv(cov_t).T).reshape(xt.shape)

    return Denoiser(net, "eps")


def test_resampling_moves_the_unknown_part_toward_the_conditional_of_gaussian_data(diff):
    """Known x_a = a, so x_b | a ~ N(rho a, (1 - rho^2) s^2). Plain replacement (resample=1) is
    biased toward the prior mean (RePaint, Sec. 4.2); resampling harmonises the two parts and
    removes most of the bias (not all of it, at r = 10: about 15% is left here)."""
    rho, s, a, n = 0.9, 0.5, 0.8, 1000
    oracle = gaussian_2d_oracle(diff, rho, s)
    x_known = torch.tensor([a, 0.0], dtype=torch.float64).reshape(1, 1, 1, 2).expand(n, 1, 1, 2)
    mask = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    bias, std = {}, {}
    for r in (1, 10):
        x = inpaint(oracle, diff, x_known, mask, torch.Generator().manual_seed(r), steps=50, jump_length=5,
                    resample=r, clip_denoised=False)
        assert torch.equal(x[:, 0, 0, 0], x_known[:, 0, 0, 0])
        bias[r] = rho * a - x[:, 0, 0, 1].mean().item()
        std[r] = x[:, 0, 0, 1].std().item()
    assert bias[1] > 0.2 and abs(bias[10]) < 0.5 * bias[1], bias
    assert std[10] == pytest.approx(math.sqrt(1 - rho**2) * s, rel=0.1), std


def test_the_jump_schedule_has_the_documented_number_of_network_calls():
    ts = repaint_schedule(25, jump_length=5, resample=3)
    assert ts[0] == 24 and ts[-1] == -1
    assert all(abs(b - a) == 1 for a, b in zip(ts, ts[1:], strict=False))
    # jump points 0, 5, 10, 15 (< T - j = 20), each resampled r - 1 = 2 times j = 5 steps back
    assert repaint_network_calls(25, 5, 3) == 25 + 2 * 5 * 4 == 65
    assert repaint_network_calls(250, 10, 10) == 2410  # RePaint's setting
    assert repaint_network_calls(40, 10, 1) == 40  # no resampling: one call per step
    for T, steps, j, r in ((25, None, 5, 3), (50, 10, 3, 4), (30, 30, 10, 1)):
        denoiser, calls = counting(lambda xt, t: torch.zeros_like(xt))
        diffusion = GaussianDiffusion.from_schedule("linear", T)
        inpaint(denoiser, diffusion, torch.zeros(2, 1, 4, 4), torch.ones(1, 1, 4, 4), torch.Generator(),
                steps=steps, jump_length=j, resample=r)
        assert len(calls) == repaint_network_calls(steps or T, j, r)
        assert max(calls) == T - 1 and min(calls) == 0  # respaced steps still span the original schedule
    with pytest.raises(ConfigError):
        repaint_schedule(10, jump_length=0)


def test_same_seed_same_result_whatever_the_batch_split():
    diffusion = GaussianDiffusion.from_schedule("linear", 30)
    denoiser = Denoiser(lambda xt, t: 0.3 * xt * torch.cos(t.float()).reshape(-1, 1, 1, 1), "eps")
    x_known = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mask = torch.stack([named_mask(m, 6, 6)[0] for m in ("left", "top", "random", "half")])
    full = inpaint(denoiser, diffusion, x_known, mask, per_sample_generators(7, 0, 4), jump_length=4, resample=3)
    parts = [inpaint(denoiser, diffusion, x_known[i:i + 2], mask[i:i + 2], per_sample_generators(7, i, 2),
                     jump_length=4, resample=3) for i in (0, 2)]
    assert torch.equal(full, torch.cat(parts))
    other = inpaint(denoiser, diffusion, x_known, mask, per_sample_generators(8, 0, 4), jump_length=4, resample=3)
    assert not torch.equal(full, other)


def test_masks_follow_the_convention_and_bad_masks_are_refused():
    m = named_mask("left", 4, 4)
    assert m.shape == (1, 1, 4, 4) and m[..., :2].sum() == 0 and m[..., 2:].sum() == 8  # left half generated
    assert named_mask("center", 8, 8).sum() == 64 - 16 and named_mask("half", 4, 4)[0, 0, 1].sum() == 0
    with pytest.raises(ConfigError, match="unknown mask"):
        named_mask("circle", 4, 4)
    diffusion = GaussianDiffusion.from_schedule("cosine", 10)
    with pytest.raises(ConfigError, match="mask has shape"):
        inpaint(x0_oracle(torch.zeros(1)), diffusion, torch.zeros(2, 1, 4, 4), torch.ones(1, 1, 4, 5), None)


# ----- super-resolution ------------------------------------------------------------------------


def test_unet_with_cond_channels_concatenates_the_low_res_image():
    torch.manual_seed(0)
    net = UNet(image_size=8, in_channels=3, channels=(8, 16), num_res_blocks=1, norm_groups=4, cond_channels=3)
    assert net.input.in_channels == 6 and net.out[-1].out_channels == 3
    torch.nn.init.normal_(net.out[-1].weight)  # the output layer starts at zero; wake it to see the input
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 5])
    a = net(x, t, low_res=torch.zeros(2, 3, 8, 8))
    b = net(x, t, low_res=torch.ones(2, 3, 8, 8))
    assert a.shape == (2, 3, 8, 8) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="low_res"):
        net(x, t)
    assert UNet(image_size=8, channels=(8,), norm_groups=4).input.in_channels == 1  # default: unchanged


def test_low_res_conditioning_is_the_area_mean_upsampled_to_full_size():
    images = torch.tensor([[1, 3, 0, 0], [5, 7, 16, 16], [2, 2, 0, 1], [2, 2, 1, 0]], dtype=torch.uint8)[None, None]
    low = downsample(images, 2)
    assert torch.equal(low, torch.tensor([[4, 8], [2, 0]], dtype=torch.uint8)[None, None])  # 4, 8, 2, 0.5 -> 0 (half to even)
    cond = condition(low, 2, 17)
    assert cond.shape == (1, 1, 4, 4) and cond.dtype == torch.float32
    flat = condition(torch.full((2, 3, 2, 2), 16, dtype=torch.uint8), 2, 17)
    assert torch.equal(flat, torch.ones(2, 3, 4, 4))  # a constant image stays constant (and white is +1)
    assert bicubic(low, 2, 17).shape == (1, 1, 4, 4) and bicubic(low, 2, 17).dtype == torch.uint8
    with pytest.raises(ConfigError, match="divide the image size"):
        check_factor((1, 8, 8), 3)
    assert from_dict({"diffusion": {"timesteps": 10}}).diffusion.super_resolution == 0  # old config.json files


def test_psnr_against_a_hand_computation():
    a = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    b = a.clone()
    b[0, 0, 0, 0] = 16  # one of 4 pixels off by the full range: MSE 1/4
    b[1, 0, 1, 1] = 4  # one of 4 pixels off by 4/16: MSE (1/4)^2 / 4 = 1/64
    assert psnr(a, b, 17).tolist() == pytest.approx([10 * math.log10(4), 10 * math.log10(64)], rel=1e-12)
    assert psnr(a, a, 17).isinf().all()


# ----- CLI -------------------------------------------------------------------------------------


def write_png(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def test_inpaint_cli_writes_the_grid_and_keeps_the_known_pixels(run_dir, tmp_path, capsys):
    out = tmp_path / "in.png"
    code, text, _ = run_cli(capsys, "inpaint", run_dir, "--image", "test:3", "--mask", "center", "--n", "2",
                            "--steps", "6", "--resample", "2", "--jump", "3", "--out", out, "--no-progress")
    assert code == 0 and "network calls" in text
    grid = Image.open(out)
    scale = 48 // 8
    assert grid.size == ((5 * 9 + 1) * scale, (9 + 1) * scale)  # input, mask, masked input, 2 completions
    image = write_png(tmp_path / "img.png", np.arange(64).reshape(8, 8) * 4)
    mask = write_png(tmp_path / "mask.png", np.where(np.arange(64).reshape(8, 8) % 8 < 4, 255, 0))
    code, _, _ = run_cli(capsys, "inpaint", run_dir, "--image", image, "--mask", mask, "--steps", "4", "--resample", "1",
                         "--out", tmp_path / "file.png", "--no-progress")
    assert code == 0 and (tmp_path / "file.png").is_file()
    # the library helper: known pixels come back unchanged, whatever the batch size
    _, family, _, _ = load_run(run_dir)
    images = torch.randint(0, 17, (3, 1, 8, 8), dtype=torch.uint8)
    m = named_mask("right", 8, 8)
    a = inpaint_images(family, images, m, seed=3, n=2, steps=5, jump_length=2, resample=2)
    b = inpaint_images(family, images, m, seed=3, n=2, steps=5, jump_length=2, resample=2, batch_size=4)
    assert a.shape == (6, 1, 8, 8) and torch.equal(a, b)
    assert torch.equal(a[:, :, :, :4], images.repeat_interleave(2, 0)[:, :, :, :4])


@pytest.mark.parametrize("argv,words", [
    (["--image", "big.png", "--mask", "center"], ["10x10", "8x8"]),
    (["--image", "test:0", "--mask", "small.png"], ["mask", "8x8"]),
    (["--image", "test:100000", "--mask", "left"], ["test split"]),
    (["--image", "test:0", "--mask", "circle"], ["named mask", "center"]),
    (["--image", "missing.png", "--mask", "left"], ["does not exist"]),
])
def test_inpaint_bad_inputs_exit_2_and_write_nothing(run_dir, tmp_path, capsys, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    write_png(tmp_path / "big.png", np.zeros((10, 10)))
    write_png(tmp_path / "small.png", np.zeros((4, 4)))
    code, _, err = run_cli(capsys, "inpaint", run_dir, *argv, "--out", "out.png", "--no-progress")
    assert_one_sentence_error(code, err, *words)
    assert not (tmp_path / "out.png").exists()


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sr") / "sr"
    assert main(["train", *TINY, "--super-res", "2", "--steps", "30", "--lr", "2e-3", "--warmup", "5",
                 "--mixed-precision", "no", "--eval-limit", "4", "--out", str(out)]) == 0
    return out


def test_a_tiny_super_resolution_run_learns_reloads_and_upscales(sr_run, tmp_path, capsys):
    from genlab.data import load_dataset
    from genlab.run import build_family, read_run_config

    cfg = read_run_config(sr_run)
    assert cfg.diffusion.super_resolution == 2
    digits = load_dataset("digits", "train").images[:256]

    def fixed_batch_loss(family):
        with torch.no_grad():
            return family.losses(digits, torch.Generator().manual_seed(123))["loss"].mean().item()

    torch.manual_seed(cfg.train.seed)
    before = fixed_batch_loss(build_family(cfg))  # the same initialisation as genlab train
    _, trained, _, _ = load_run(sr_run, weights="model")
    assert trained.net.input.in_channels == 2
    assert fixed_batch_loss(trained) < 0.8 * before
    out = tmp_path / "up.png"
    code, text, _ = run_cli(capsys, "upscale", sr_run, "--image", "test:0", "--steps", "3", "--out", out, "--no-progress")
    assert code == 0 and "truth" in text and Image.open(out).size == ((4 * 9 + 1) * 6, (9 + 1) * 6)
    low = write_png(tmp_path / "low.png", np.full((4, 4), 255))
    code, _, _ = run_cli(capsys, "upscale", sr_run, "--image", low, "--sampler", "ancestral", "--steps", "3",
                         "--out", tmp_path / "low-up.png", "--no-progress")
    assert code == 0 and Image.open(tmp_path / "low-up.png").size == ((3 * 9 + 1) * 6, (9 + 1) * 6)
    code, text, _ = run_cli(capsys, "upscale", sr_run, "--psnr-test", "4", "--steps", "2", "--no-progress")
    assert code == 0 and "bicubic" in text
    record = json.loads((sr_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["metric"] == "psnr" and record["n"] == 4 and record["factor"] == 2
    assert 0 < record["psnr_bicubic"] < 100 and record["psnr"] > 0


def test_editing_commands_refuse_the_wrong_kind_of_run(run_dir, sr_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "upscale", run_dir, "--image", "test:0", "--out", "u.png")
    assert_one_sentence_error(code, err, "not a super-resolution run")
    code, _, err = run_cli(capsys, "inpaint", sr_run, "--image", "test:0", "--mask", "left", "--out", "i.png")
    assert_one_sentence_error(code, err, "super-resolution")
    write_png(tmp_path / "odd.png", np.zeros((6, 6)))
    code, _, err = run_cli(capsys, "upscale", sr_run, "--image", "odd.png", "--out", "u.png")
    assert_one_sentence_error(code, err, "6x6", "4x4")
    code, _, err = run_cli(capsys, "sample", sr_run, "--out", "s.png")
    assert_one_sentence_error(code, err, "genlab upscale")
    assert [p.name for p in tmp_path.glob("*.png")] == ["odd.png"]  # nothing written
