"""The peer: diffusers' UNet2DModel at genlab's benchmark shape, timed the same way.

Run by the benchmark scripts in diffusers' own virtual environment (``--peer-python``),
never imported by genlab. Prints one JSON object per configuration on stdout:

    python benchmarks/peer_diffusers.py train --batch 64 --configs fp32,bf16 --steps 10
    python benchmarks/peer_diffusers.py sample --batch 64 --configs fp32,bf16

train: one step is what diffusers' train_unconditional example does per batch: sample
t and noise, add_noise, UNet forward, eps-MSE, backward, clip_grad_norm_(1.0), AdamW
step, zero_grad. sample: one network evaluation (forward, no grad) at batch B.

ttq (time to quality; needs genlab importable, e.g. PYTHONPATH=src, and its dependencies
in this environment): trains on MNIST with the train_unconditional example's defaults
(batch 16, AdamW lr 1e-4 with betas (0.95, 0.999), weight decay 1e-6, 500 warm-up steps
then cosine decay over its 100 epochs, gradient clipping at 1, EMA with inv_gamma 1,
power 3/4, max decay 0.9999, fp32, linear 1000-step DDPM schedule, eps-prediction; no
random flip, which its script leaves off unless asked) for ``--minutes``, then measures
the EMA network with genlab's own yardsticks: the bound on test images in bits/dim, and
samples (genlab's ancestral sampler) written to an .npz for genlab eval --samples.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from train_throughput import add_shape_args, time_steps  # this folder: the same timing as genlab's side


def build(args):
    from diffusers import UNet2DModel

    levels = len(args.channels)
    down = ["DownBlock2D" if r not in args.attn else "AttnDownBlock2D"
            for r in (args.size // 2 ** i for i in range(levels))]
    up = ["DownBlock2D" if b == "DownBlock2D" else "AttnUpBlock2D" for b in reversed(down)]
    up = ["UpBlock2D" if b == "DownBlock2D" else b for b in up]
    kw = {}
    if args.head_dim:
        kw["attention_head_dim"] = args.head_dim
    return UNet2DModel(sample_size=args.size, in_channels=args.in_channels, out_channels=args.in_channels,
                       layers_per_block=args.res_blocks, block_out_channels=tuple(args.channels),
                       down_block_types=tuple(down), up_block_types=tuple(up), **kw), down, up


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("train", "sample", "ttq"))
    add_shape_args(p, steps=10, head_dim=0, head_help="attention_head_dim (0: diffusers' default, 8)")
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--configs", default="fp32,bf16")
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="peer-ttq")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--bpd-images", type=int, default=500)
    args = p.parse_args()
    if args.mode == "ttq":
        return time_to_quality(args)
    import diffusers
    from diffusers import DDPMScheduler

    for config in args.configs.split(","):
        torch.manual_seed(0)
        device = torch.device(args.device)
        net, down, up = build(args)
        net = net.to(device)
        eager = net  # the same module uncompiled: FLOPs are counted on it
        if config.startswith("compile"):
            net = torch.compile(net)
        sched = DDPMScheduler(num_train_timesteps=1000)
        gen = torch.Generator().manual_seed(1)
        x0 = (torch.rand(args.batch, args.in_channels, args.size, args.size, generator=gen) * 2 - 1).to(device)
        amp = config in ("bf16", "compile-bf16")
        if args.mode == "train":
            opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

            def step(i):
                noise = torch.randn(x0.shape, generator=gen).to(device)
                t = torch.randint(0, 1000, (args.batch,), generator=gen).to(device)
                xt = sched.add_noise(x0, noise, t)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    pred = net(xt, t).sample
                loss = torch.nn.functional.mse_loss(pred.float(), noise)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                loss.item()

            timing = time_steps(step, args.warmup, args.steps, args.device)
        else:
            net.eval()
            t_eval = torch.full((args.batch,), 500, device=device)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                timing = time_steps(lambda i: net(x0, t_eval).sample.float(), args.warmup, args.steps, args.device)
        median = timing["seconds"]
        gflop = None
        if args.mode == "train":
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:  # matmuls and convolutions of one step
                t = torch.randint(0, 1000, (args.batch,), generator=gen).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    pred = eager(x0, t).sample
                torch.nn.functional.mse_loss(pred.float(), x0).backward()
            opt.zero_grad(set_to_none=True)
            gflop = counter.get_total_flops() / 1e9
        else:
            from torch.utils.flop_counter import FlopCounterMode

            with torch.no_grad(), FlopCounterMode(display=False) as counter:  # one evaluation
                eager(x0, t_eval)
            gflop = counter.get_total_flops() / 1e9
        print(json.dumps({"peer": f"diffusers {diffusers.__version__}", "config": config, "mode": args.mode,
                          "gflop_per_step": gflop, "batch": args.batch, **timing, "images_per_s": args.batch / median,
                          "ms": median * 1e3, "parameters": sum(q.numel() for q in net.parameters()),
                          "down_blocks": down, "up_blocks": up, "torch": torch.__version__,
                          "threads": torch.get_num_threads()}), flush=True)


class _EpsNet(torch.nn.Module):
    """diffusers' UNet2DModel with genlab's network signature net(x, t) -> eps."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, y=None, low_res=None):
        return self.unet(x, t).sample


def time_to_quality(args) -> None:
    import math
    from pathlib import Path

    import numpy as np
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    from genlab.data import load_dataset
    from genlab.diffusion import GaussianDiffusion
    from genlab.diffusion.model import DDPM

    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = load_dataset("mnist", "train", root=args.data_dir).images
    test = load_dataset("mnist", "test", root=args.data_dir).images[:args.bpd_images]
    net, _, _ = build(args)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    batch, epochs, warmup = 16, 100, 500
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    total = epochs * (len(train) // batch)
    lr_at = lambda s: 1e-4 * (s / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))
    ema = EMAModel(net.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    gen = torch.Generator().manual_seed(1)
    step, t_start, losses = 0, time.perf_counter(), []
    while time.perf_counter() - t_start < args.minutes * 60:
        idx = torch.randint(0, len(train), (batch,), generator=gen)
        x0 = train[idx].float() / 127.5 - 1
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = torch.nn.functional.mse_loss(net(sched.add_noise(x0, noise, t), t).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.step(net.parameters())
        losses.append(loss.item())
        step += 1
    train_s = time.perf_counter() - t_start
    ema.copy_to(net.parameters())
    net.eval()
    family = DDPM(_EpsNet(net), GaussianDiffusion.from_schedule("linear", 1000), "eps", "simple", (1, args.size, args.size), 256)
    t0 = time.perf_counter()
    bound = family.bits_per_dim(test, t_samples=50)
    bpd_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    samples = family.sample(args.n, seed=0, sampler="ancestral", steps=args.sample_steps, batch_size=250)
    sample_s = time.perf_counter() - t0
    np.savez(out / "samples.npz", samples=samples.numpy(), levels=np.array(256), protocol=np.array(json.dumps(
        {"sampler": "ancestral", "steps": args.sample_steps, "n": args.n, "weights": "ema", "peer": "diffusers"})))
    print(json.dumps({"peer": "diffusers", "steps": step, "batch": batch, "train_seconds": train_s,
                      "images_per_s": step * batch / train_s, "loss_last_100": sum(losses[-100:]) / len(losses[-100:]),
                      "bpd": bound["bpd"], "bpd_se": bound.get("bpd_se"), "bpd_seconds": bpd_s, "sample_seconds": sample_s,
                      "samples": str(out / "samples.npz"), "parameters": sum(q.numel() for q in net.parameters())}),
          flush=True)


if __name__ == "__main__":
    main()
