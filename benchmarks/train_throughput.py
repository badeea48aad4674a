"""Training throughput (images/s) of genlab's U-Net against diffusers' UNet2DModel, same shape, same run.

    python benchmarks/train_throughput.py --peer diffusers [--peer-python PY] [--batch 64] [--memory 64,256]
    python benchmarks/train_throughput.py --check-steps 300 --data-dir ../shared/data/mnist
    python benchmarks/train_throughput.py --peer diffusers --device cuda   # on a GPU machine

One training step is what each library's own training loop does per batch. genlab: t and
eps drawn, the eps-MSE loss (L_simple), backward, gradient clipping at 1, AdamW, EMA update,
as its Trainer does; "fp32" is the network in float32, "fast" under bf16 autocast (the
Trainer's default). diffusers: its train_unconditional example's step
(``benchmarks/peer_diffusers.py``), in fp32 and under bf16 autocast, and with
``--peer-compile`` also torch.compile'd. Every configuration runs in its own process, so
peak resident memory (ru_maxrss) is its own; the resident memory after the warm-up and
at the end is printed too, so growth with the number of steps shows. The ratio is
genlab's fastest against the peer's fastest.

The peer runs in diffusers' own virtual environment (genlab never depends on it):

    python3 -m venv benchmarks/.venv-diffusers
    benchmarks/.venv-diffusers/bin/pip install torch==2.13.0 && benchmarks/.venv-diffusers/bin/pip install diffusers

Every run also times the **convolutions-only floor**: the same network, step and precision with
every GroupNorm and SiLU made the identity and each attention block's core (q k^T, softmax,
weights v) skipped, every convolution (the 1x1 q/k/v and output projections included) kept at
its shape. That is the step as fast as it can be if everything but the convolutions took no
time: the ceiling this CPU's oneDNN convolutions put on any U-Net of this shape.

``--check-steps N`` trains the same shape on real data with ``genlab train`` for N steps
in fp32 and in the fast path from the same seed and compares the loss curves and the test
bits/dim (the fast path must match fp32 within 1%).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
def _default_peer_python() -> str:
    """$GENLAB_PEER_PYTHON, else benchmarks/.venv-diffusers, else this Python if diffusers is importable here."""
    import importlib.util

    if os.environ.get("GENLAB_PEER_PYTHON"):
        return os.environ["GENLAB_PEER_PYTHON"]
    venv = HERE / ".venv-diffusers" / "bin" / "python"
    if not venv.exists() and importlib.util.find_spec("diffusers") is not None:
        return sys.executable
    return str(venv)


DEFAULT_PEER_PYTHON = _default_peer_python()


def rss_mib() -> float:
    """Resident memory of this process now (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronizer(device: str):
    """What ends a timed call on ``device``: CUDA kernels run asynchronously, so the clock stops
    after torch.cuda.synchronize(); on the CPU nothing is pending."""
    import torch

    return torch.cuda.synchronize if on_cuda(device) else lambda: None


def on_cuda(device: str) -> bool:
    import torch

    return torch.device(device).type == "cuda"


def time_steps(step, warmup: int, steps: int, device: str = "cpu") -> dict:
    """Call ``step(i)`` for i < warmup + steps; the median seconds of the last ``steps`` calls (or of the
    seconds they return, when a call times only part of itself), the
    first call's seconds (start-up and compiling included) and resident memory after the warm-up,
    at the end and at its peak; on a GPU each call is waited for and the peak GPU memory is added.
    Every benchmark, genlab's and the peer's, is timed by this."""
    import torch

    sync = synchronizer(device)
    times, rss_warm, first = [], None, None
    t_start = time.perf_counter()
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        own = step(i)
        sync()
        now = time.perf_counter()
        if first is None:
            first = now - t_start
        if i >= warmup:
            times.append(own if isinstance(own, float) else now - t0)
        if i + 1 == warmup:
            rss_warm = rss_mib()
    gpu = {"peak_gpu_mib": torch.cuda.max_memory_allocated() / 2 ** 20} if on_cuda(device) else {}
    return {"seconds": statistics.median(times), "first_step_s": first, "rss_warm_mib": rss_warm,
            "rss_end_mib": rss_mib(), "peak_rss_mib": peak_rss_mib(), **gpu}


def add_shape_args(p: argparse.ArgumentParser, steps: int, head_dim: int = 32,
                   head_help: str = "channels per attention head, both libraries (default 32)") -> None:
    """The model shape and timing flags every benchmark shares (shape_args passes them on)."""
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--channels", type=lambda s: [int(c) for c in s.split(",")], default=[32, 64, 64])
    p.add_argument("--attn", type=lambda s: [int(c) for c in s.split(",") if c], default=[14, 7])
    p.add_argument("--res-blocks", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=head_dim, help=head_help)
    p.add_argument("--steps", type=int, default=steps, help="timed steps per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu",
                   help="cpu or cuda: the networks, the data and the matmul yardstick on it (default cpu)")


def describe_shape(args) -> str:
    import torch

    where = "" if args.device == "cpu" else f"on {args.device}, "
    return (f"{where}U-Net widths {tuple(args.channels)}, attention at {tuple(args.attn)} ({args.head_dim} channels per head), "
            f"{args.res_blocks} ResBlocks per level, {args.size}-by-{args.size} pixels, 1 channel, batch {args.batch}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.steps} timed after "
            f"{args.warmup} warm-up")


def matmul_peak_gflops(dtype_name: str, n: int = 2048, reps: int = 10, device: str = "cpu") -> float:
    """What this CPU (or GPU) does on a large square matmul, GFLOP/s: the yardstick for the fraction of peak."""
    import torch

    dtype = getattr(torch, dtype_name)
    sync = synchronizer(device)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def yardstick(device: str = "cpu") -> tuple[bool, float, str]:
    """Measure and print this CPU's matmul peak: (native bf16?, GFLOP/s of the faster dtype, its name).

    Without native bf16 a bf16 matmul runs at a few GFLOP/s (minutes for this yardstick): not measured there.
    """
    import torch

    from genlab.precision import native_bf16

    native, why = native_bf16(device)
    n = 8192 if on_cuda(device) else 2048  # a GPU needs a larger matmul to reach its peak
    peak = {d: matmul_peak_gflops(d, n=n, device=device) for d in (("float32", "bfloat16") if native else ("float32",))}
    best_dtype = max(peak, key=lambda d: peak[d])
    peak_name = {"float32": "fp32", "bfloat16": "bf16"}[best_dtype]
    name = torch.cuda.get_device_name(device) if on_cuda(device) else cpu_name()
    print(f"{name}: {n}^3 matmul {peak['float32']:.0f} GFLOP/s in fp32, "
          + (f"{peak['bfloat16']:.0f} in bf16" if native else f"bf16 not measured ({why})")
          + f" (the fraction of peak below is against the {peak_name} figure)")
    return native, peak[best_dtype], peak_name


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def shape_args(args) -> list[str]:
    return ["--batch", str(args.batch), "--size", str(args.size), "--channels", ",".join(map(str, args.channels)),
            "--attn", ",".join(map(str, args.attn)), "--res-blocks", str(args.res_blocks), "--head-dim", str(args.head_dim),
            "--device", args.device]


def convolutions_only(net):
    """``net`` with everything but its convolutions and linear layers made free: GroupNorm and SiLU
    the identity, each attention block's core (q k^T, softmax, weights v) skipped, x + proj(first
    C channels of qkv(x)). Same shapes, same convolutions; the output means nothing. Changes
    this ``net`` only (its modules and their bound ``forward``), so it can be timed beside an
    unchanged one in the same process."""
    import types

    from torch import nn

    from genlab.nets import unet

    def resblock(self, x, emb):  # ResBlock.forward without its three SiLUs (its norms are the identity below)
        h = self.conv1(self.norm1(x))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        return self.skip(x) + self.conv2(self.dropout(self.norm2(h) * (1 + scale) + shift))

    def attention(self, x):
        return x + self.proj(self.qkv(x)[:, : x.shape[1]])

    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, (nn.GroupNorm, nn.SiLU)):
                setattr(module, name, nn.Identity())
            elif isinstance(child, unet.ResBlock):
                child.forward = types.MethodType(resblock, child)
            elif isinstance(child, unet.AttentionBlock):
                child.forward = types.MethodType(attention, child)
    return net


def genlab_step(args, amp: bool, floor: bool = False):
    """genlab's training step at the benchmark's shape: (one_step() -> loss, the EMA update after step i, the net).
    ``floor``: the convolutions-only network (:func:`convolutions_only`)."""
    import torch

    from genlab.diffusion import Denoiser, GaussianDiffusion
    from genlab.nets import UNet
    from genlab.training.ema import EMA

    torch.manual_seed(0)
    device = torch.device(args.device)
    net = UNet(image_size=args.size, in_channels=1, channels=args.channels, num_res_blocks=args.res_blocks,
               attn_resolutions=args.attn, dropout=0.0, head_dim=args.head_dim)
    if floor:
        net = convolutions_only(net)
    net = net.to(device)
    diff = GaussianDiffusion.from_schedule("linear", 1000)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4)
    ema = EMA(net, 0.999)
    gen = torch.Generator().manual_seed(1)
    x0 = (torch.rand(args.batch, 1, args.size, args.size, generator=gen) * 2 - 1).to(device)

    def one_step():  # t and noise drawn on the CPU from one generator, on every device the same
        t = torch.randint(0, 1000, (args.batch,), generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = diff.training_losses(Denoiser(net), x0, t, noise)["loss"].float().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return one_step, lambda i: ema.update(net, i + 1), net


def worker(args) -> None:
    """Time genlab's training step in one configuration; print one JSON line. "convs-only" times the
    fast step and its convolutions-only floor in one process, alternating steps, so that the
    difference between the two is not the drift of a shared machine between two processes."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    floor = args.worker == "convs-only"
    one_step, ema_update, net = genlab_step(args, amp=args.worker in ("fast", "convs-only"), floor=floor)
    if floor:
        paired_step, paired_ema, _ = genlab_step(args, amp=True)
    losses, paired = [], []

    def timed(i):
        if floor:
            t0 = time.perf_counter()
            paired_step().item()
            paired_ema(i)
            if i >= args.warmup:
                paired.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        losses.append(one_step().item())
        ema_update(i)
        return time.perf_counter() - t0

    timing = time_steps(timed, args.warmup, args.steps, args.device)
    with FlopCounterMode(display=False) as counter:  # matmuls and convolutions of one step, forward and backward
        one_step()
    extra = {"paired_fast_seconds": statistics.median(paired)} if floor else {}
    print(json.dumps({"library": "genlab", "config": args.worker, "batch": args.batch, **timing, **extra,
                      "gflop_per_step": counter.get_total_flops() / 1e9, "images_per_s": args.batch / timing["seconds"],
                      "parameters": sum(p.numel() for p in net.parameters()), "loss_last": losses[-1],
                      "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)


def profile(args) -> None:
    """The fast step under torch.profiler: milliseconds per step and the operators by their own time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    cuda = on_cuda(args.device)
    one_step, ema_update, _ = genlab_step(args, amp=True)
    for i in range(args.warmup):
        one_step()
        ema_update(i)
    t0 = time.perf_counter()
    with profiler(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for i in range(args.steps):
            one_step()
            ema_update(i)
    print(describe_shape(args) + f" steps; genlab fast, profiled: {(time.perf_counter() - t0) / args.steps * 1000:.0f} ms per step "
          "(with the profiler's own overhead)")
    print(prof.key_averages().table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=25,
                                    max_name_column_width=45))


def run_json(cmd: list[str], env=None) -> list[dict]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"benchmark step failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def peer_rows(args, batch: int) -> list[dict]:
    py = Path(args.peer_python)
    if not py.exists():
        raise SystemExit(f"no Python for the peer at {py}; create diffusers' environment as this script's docstring "
                         "says, or pass --peer-python PATH.")
    configs = "fp32,bf16" + (",compile,compile-bf16" if args.peer_compile else "")
    a = argparse.Namespace(**{**vars(args), "batch": batch})
    return [row for config in configs.split(",")  # one process each: its peak memory is its own
            for row in run_json([str(py), str(HERE / "peer_diffusers.py"), "train", *shape_args(a), "--configs", config,
                                 "--steps", str(args.steps), "--warmup", str(args.warmup)])]


def genlab_rows(args, batch: int) -> list[dict]:
    a = argparse.Namespace(**{**vars(args), "batch": batch})
    rows = []
    for config in ("fp32", "fast", "convs-only"):
        rows += run_json([sys.executable, __file__, "--worker", config, *shape_args(a), "--steps", str(args.steps),
                          "--warmup", str(args.warmup)])
    return rows


def check_numerics(args) -> None:
    """Train with genlab train in fp32 and in the fast path; compare loss curves and test bits/dim."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("no", "bf16"):
            run = Path(tmp) / precision
            cmd = [sys.executable, "-m", "genlab", "train", "--data", args.data, "--channels", ",".join(map(str, args.channels)),
                   "--attn", ",".join(map(str, args.attn)), "--res-blocks", str(args.res_blocks), "--head-dim", str(args.head_dim),
                   "--dropout", "0", "--batch-size", str(args.batch), "--steps", str(args.check_steps), "--log-every", "25",
                   "--mixed-precision", precision, "--eval-limit", "500", "--eval-t-samples", "50", "--sample-every", "0",
                   "--no-progress", "--out", str(run)]
            if args.data_dir:
                cmd += ["--data-dir", args.data_dir]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            curve = [r["loss"] for r in recs if "loss" in r and "step" in r and r.get("event") is None]
            bpd = [r for r in recs if "bpd" in r][-1]
            out[precision] = {"curve": curve, "bpd": bpd["bpd"], "bpd_se": bpd.get("bpd_se"), "seconds": time.perf_counter() - t0,
                              "ips": statistics.median(r["images_per_s"] for r in recs if "images_per_s" in r)}
    a, b = out["no"], out["bf16"]
    tail = max(1, len(a["curve"]) // 4)
    la, lb = statistics.mean(a["curve"][-tail:]), statistics.mean(b["curve"][-tail:])
    print(f"\n{args.check_steps} steps of genlab train on {args.data}, batch {args.batch}, same seed; "
          f"loss = mean of the last {tail} logged windows of 25 steps; bits/dim on 500 test images, 50 timesteps each")
    print(f"  {'':10s} {'loss':>8s} {'bits/dim':>16s} {'images/s':>9s} {'seconds':>8s}")
    for name, r, loss in (("fp32", a, la), ("fast bf16", b, lb)):
        print(f"  {name:10s} {loss:8.4f} {r['bpd']:9.4f} +- {r['bpd_se'] or 0:.4f} {r['ips']:9.1f} {r['seconds']:8.0f}")
    print(f"  fast / fp32: loss {lb / la - 1:+.2%}, bits/dim {b['bpd'] / a['bpd'] - 1:+.2%}, "
          f"loss curve max relative gap {max(abs(y / x - 1) for x, y in zip(a['curve'], b['curve'], strict=True)):.2%}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(p, steps=10)
    p.add_argument("--peer", choices=("diffusers", "none"), default="none")
    p.add_argument("--peer-python", default=DEFAULT_PEER_PYTHON,
                   help="Python of diffusers' environment (default: $GENLAB_PEER_PYTHON, benchmarks/.venv-diffusers, "
                        "or this Python when it has diffusers)")
    p.add_argument("--peer-compile", action="store_true", help="also time torch.compile'd diffusers, in fp32 and under bf16 autocast (minutes of compiling)")
    p.add_argument("--memory", type=lambda s: [int(c) for c in s.split(",") if c], default=[],
                   help="also measure at these batch sizes (peak memory), e.g. 64,256")
    p.add_argument("--check-steps", type=int, default=0, help="compare fp32 and fast training on real data over N steps")
    p.add_argument("--data", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--worker", choices=("fp32", "fast", "convs-only"), help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true",
                   help="profile genlab's fast step instead (torch.profiler over --steps steps after --warmup): where the time goes")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.profile:
        return profile(args)
    print(describe_shape(args) + " steps")
    _, peak, peak_name = yardstick(args.device)
    for batch in [args.batch] + [b for b in args.memory if b != args.batch]:
        rows = genlab_rows(args, batch)
        if args.peer == "diffusers":
            rows += peer_rows(args, batch)
        print(f"\nbatch {batch}")
        print(f"  {'library':18s} {'config':12s} {'params':>7s} {'GFLOP/step':>10s} {'images/s':>9s} {'ms/step':>8s} "
              f"{'% ' + peak_name + ' peak':>11s} {'1st step s':>10s} {'peak RSS MiB':>12s} {'RSS warm->end':>14s}")
        for r in rows:
            lib = r.get("library") or r.get("peer")
            growth = f"{r['rss_warm_mib']:.0f}->{r['rss_end_mib']:.0f}" if r.get("rss_warm_mib") else ""
            gflop = r.get("gflop_per_step") or 0
            print(f"  {lib:18s} {r['config']:12s} {r['parameters'] / 1e6:6.2f}M {gflop:10.1f} {r['images_per_s']:9.1f} "
                  f"{r['seconds'] * 1e3:8.0f} {100 * gflop / r['seconds'] / peak:10.1f}% "
                  f"{r['first_step_s']:10.1f} {r['peak_rss_mib']:12.0f} {growth:>14s}")
        floor = next(r for r in rows if r.get("config") == "convs-only")
        ours = max((r for r in rows if r.get("library") == "genlab" and r is not floor), key=lambda r: r["images_per_s"])
        fp32 = next(r for r in rows if r.get("library") == "genlab" and r["config"] == "fp32")
        fast = next(r for r in rows if r.get("config") == "fast" and r.get("library"))
        print(f"  genlab fast runs {fast['images_per_s'] / fp32['images_per_s']:.2f} times the images/s of genlab fp32; "
              f"the convolutions-only floor (the fast step with GroupNorm, SiLU and the attention cores free) "
              f"{floor['paired_fast_seconds'] / floor['seconds']:.2f} times the fast step timed beside it")
        peers = [r for r in rows if r.get("peer")]
        if peers:
            best = max(peers, key=lambda r: r["images_per_s"])
            print(f"  genlab best ({ours['config']}) / diffusers best ({best['config']}) = "
                  f"{ours['images_per_s'] / best['images_per_s']:.2f}x   (goal: at least 2 times)")
            goal = 2 * best["images_per_s"]
            print(f"  the goal needs {goal:.1f} images/s ({args.batch * 1e3 / goal:.0f} ms per step); the convolutions alone, "
                  f"with nothing else costing time, run {floor['images_per_s']:.1f} ({floor['seconds'] * 1e3:.0f} ms per step, "
                  f"against {floor['paired_fast_seconds'] * 1e3:.0f} ms for the fast step timed beside it): that leaves "
                  f"{max(0.0, args.batch * 1e3 / goal - floor['seconds'] * 1e3):.0f} ms per step for every GroupNorm, SiLU "
                  f"and attention core, forward and backward, which take "
                  f"{(floor['paired_fast_seconds'] - floor['seconds']) * 1e3:.0f} ms in the fast step")
    if args.check_steps:
        check_numerics(args)


if __name__ == "__main__":
    main()
