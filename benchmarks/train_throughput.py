"""Training throughput (images/s) of genlab's U-Net in fp32 and under bf16 autocast.

    python benchmarks/train_throughput.py [--batch 64] [--channels 32,64,64] [--attn 14,7] [--steps 20]

One full training step is measured: sampling t and eps, the eps-MSE loss (L_simple), the
backward pass, gradient clipping and the AdamW step, as genlab's Trainer does it. The
default model is the one issue 2 names: widths (32, 64, 64) on 28x28 inputs with
self-attention at 14x14 and 7x7, two ResBlocks per level, batch 64. It also prints the
loss after a fixed number of steps in each precision from the same initialisation, so
the numerics of the fast path can be checked against fp32.
"""

from __future__ import annotations

import argparse
import time

import torch

from genlab.diffusion import Denoiser, GaussianDiffusion
from genlab.nets import UNet


def run(precision: str, args) -> tuple[float, float]:
    torch.manual_seed(0)
    net = UNet(image_size=args.size, in_channels=1, channels=args.channels, num_res_blocks=args.res_blocks,
               attn_resolutions=args.attn, dropout=0.0)
    diff = GaussianDiffusion.from_schedule("linear", 1000)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(args.batch, 1, args.size, args.size, generator=gen) * 2 - 1
    times, losses = [], []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = diff.training_losses(Denoiser(net), x0, t, noise)["loss"].mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    times.sort()
    median = times[len(times) // 2]
    return args.batch / median, sum(losses[-5:]) / 5


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--channels", type=lambda s: tuple(int(c) for c in s.split(",")), default=(32, 64, 64))
    p.add_argument("--attn", type=lambda s: tuple(int(c) for c in s.split(",") if c), default=(14, 7))
    p.add_argument("--res-blocks", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    n = sum(p.numel() for p in UNet(image_size=args.size, channels=args.channels, num_res_blocks=args.res_blocks,
                                    attn_resolutions=args.attn).parameters())
    print(f"U-Net widths {args.channels}, attention at {args.attn}, {args.res_blocks} ResBlocks/level, "
          f"{n / 1e6:.2f}M parameters, {args.size}x{args.size}, batch {args.batch}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    results = {}
    for precision in ("fp32", "bf16"):
        ips, loss = run(precision, args)
        results[precision] = ips
        print(f"  {precision:5s} {ips:8.1f} images/s   mean loss of the last 5 of {args.warmup + args.steps} steps {loss:.4f}")
    print(f"  bf16 / fp32 = {results['bf16'] / results['fp32']:.2f}x")


if __name__ == "__main__":
    main()
