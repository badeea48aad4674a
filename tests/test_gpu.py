"""The CUDA path: the same Trainer, U-Net, samplers and bound on a GPU, under bf16 autocast.

Every test here skips without CUDA (CI has none); run them where a GPU is lent. The
explicit and flash forms of attention must agree on the GPU as on the CPU.
"""

import pytest
import torch

from conftest import TINY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_training_on_the_gpu_uses_it_and_lowers_the_loss(tmp_path):
    import json

    from genlab.cli import main
    from genlab.run import load_run

    out = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "60", "--eval-limit", "8", "--mixed-precision", "bf16", "--out", str(out)]) == 0
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line and '"event"' not in line]
    assert losses[-1] < losses[0]
    cfg, family, _, _ = load_run(out)
    family = family.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        samples = family.sample(8, seed=0, sampler="ddim", steps=5)
    assert next(family.parameters()).device.type == "cuda"
    assert samples.shape == (8, 1, 8, 8) and samples.dtype == torch.uint8
    from genlab.data import load_dataset

    bound = family.bits_per_dim(load_dataset("digits", "test").images[:8], t_samples=5)
    assert 0 < bound["bpd"] < 10


def test_attention_forms_agree_on_the_gpu():
    from genlab.nets.unet import AttentionBlock

    torch.manual_seed(0)
    block = AttentionBlock(64, head_dim=32, groups=8).cuda()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(4, 64, 14, 14, device="cuda")
    with torch.no_grad():
        explicit = block(x)
        block.explicit_max_tokens = 0
        flash = block(x)
    torch.testing.assert_close(explicit, flash, rtol=1e-4, atol=1e-4)


def test_the_cli_samples_and_measures_on_the_gpu(run_dir, tmp_path, capsys):
    """genlab sample / eval put the network on the GPU by default (--device auto) and with --compile."""
    import json

    import numpy as np

    from genlab.cli import main

    for name, extra in (("cpu", ["--device", "cpu"]), ("gpu", []), ("compiled", ["--compile"])):
        assert main(["sample", str(run_dir), "--n", "6", "--sampler", "ddim", "--steps", "4", "--mixed-precision", "no",
                     "--out", str(tmp_path / f"{name}.png"), "--npz", str(tmp_path / f"{name}.npz"), "--no-progress", *extra]) == 0
    cpu, gpu = np.load(tmp_path / "cpu.npz")["samples"].astype(int), np.load(tmp_path / "gpu.npz")["samples"].astype(int)
    assert np.abs(cpu - gpu).max() <= 1  # the same noise (drawn on the CPU), other kernels
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--metrics", "bpd", "--limit", "8", "--t-samples", "5", "--json", "--no-progress"]) == 0
    assert 0 < json.loads(capsys.readouterr().out)["bpd"] < 10
