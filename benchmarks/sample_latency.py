"""Milliseconds per network evaluation when sampling: genlab's U-Net against diffusers', same shape, same run.

    python benchmarks/sample_latency.py --peer diffusers [--peer-python PY] [--batch 64] [--compile] [--device cuda]

One network evaluation is the forward pass a sampler makes per step, with gradients off:
genlab under ``torch.no_grad`` as its samplers run it, in fp32 and, where the CPU does bf16
natively (``genlab.precision.native_bf16``), under bf16 autocast (what ``genlab sample`` uses
for a bf16-trained run there); diffusers' ``UNet2DModel`` likewise (``benchmarks/peer_diffusers.py
sample``). Without native bf16 the bf16 configurations are skipped: emulated, they run 11-14x
slower than fp32 for both libraries (11.5 against 0.81 s per evaluation here). ``--compile``
adds both libraries under ``torch.compile`` (genlab: ``genlab sample --compile``, i.e.
``genlab.run.compile_network``, in the precision ``genlab sample`` picks; diffusers: compiled
in fp32 and, with native bf16, under bf16 autocast); the seconds of the first evaluation,
compiling included, are printed. Each configuration runs in its own process; the median of
``--steps`` evaluations after ``--warmup`` is reported, with the FLOPs of one evaluation
(matmuls and convolutions, ``torch.utils.flop_counter``) as a fraction of the matmul peak;
the ratio is the peer's fastest against genlab's fastest. The convolutions-only floor
(``train_throughput.convolutions_only``: GroupNorm, SiLU and the attention cores free, every
convolution kept) is timed too, eagerly in the precision ``genlab sample`` picks: the fastest an
evaluation of this shape can be with this CPU's convolutions. The shape options and the peer's
environment are those of ``train_throughput.py``.
"""

from __future__ import annotations

import argparse
import json
import sys

from train_throughput import (
    DEFAULT_PEER_PYTHON,
    HERE,
    Path,
    add_shape_args,
    convolutions_only,
    describe_shape,
    run_json,
    shape_args,
    time_steps,
    yardstick,
)


def worker(args) -> None:
    import torch

    from genlab.nets import UNet

    torch.manual_seed(0)
    net = UNet(image_size=args.size, in_channels=1, channels=args.channels, num_res_blocks=args.res_blocks,
               attn_resolutions=args.attn, dropout=0.0, head_dim=args.head_dim).eval()
    if args.worker == "convs-only":
        net = convolutions_only(net)
    device = torch.device(args.device)
    net = net.to(device)
    x = torch.randn(args.batch, 1, args.size, args.size).to(device)
    t = torch.full((args.batch,), 500, device=device)
    from torch.utils.flop_counter import FlopCounterMode

    from genlab.precision import native_bf16

    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # counted eagerly, before any compiling
        net(x, t)
    bf16 = args.worker == "bf16" or (args.worker in ("compiled", "convs-only") and native_bf16(device)[0])  # genlab sample's choice
    if args.worker == "compiled":
        from genlab.run import compile_network

        compile_network(net)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        timing = time_steps(lambda i: net(x, t).float(), args.warmup, args.steps, args.device)
    config = f"{args.worker}-{'bf16' if bf16 else 'fp32'}" if args.worker in ("compiled", "convs-only") else args.worker
    print(json.dumps({"library": "genlab", "config": config, "batch": args.batch, **timing, "ms": timing["seconds"] * 1e3,
                      "gflop_per_eval": counter.get_total_flops() / 1e9,
                      "parameters": sum(p.numel() for p in net.parameters()),
                      "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(p, steps=20)
    p.add_argument("--peer", choices=("diffusers", "none"), default="none")
    p.add_argument("--peer-python", default=DEFAULT_PEER_PYTHON)
    p.add_argument("--compile", action="store_true", help="also time both libraries under torch.compile (a minute or two of compiling)")
    p.add_argument("--worker", choices=("fp32", "bf16", "compiled", "convs-only"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    print(describe_shape(args) + " evaluations")
    native, peak, peak_name = yardstick(args.device)
    rows = []
    for config in ("fp32",) + (("bf16",) if native else ()) + (("compiled",) if args.compile else ()) + ("convs-only",):
        rows += run_json([sys.executable, __file__, "--worker", config, *shape_args(args), "--steps", str(args.steps),
                          "--warmup", str(args.warmup)])
    if args.peer == "diffusers":
        if not Path(args.peer_python).exists():
            raise SystemExit(f"no Python for the peer at {args.peer_python}; see train_throughput.py's docstring, "
                             "or pass --peer-python PATH.")
        configs = ("fp32",) + (("bf16",) if native else ())
        if args.compile:
            configs += ("compile",) + (("compile-bf16",) if native else ())
        for config in configs:  # one process each
            rows += run_json([args.peer_python, str(HERE / "peer_diffusers.py"), "sample", *shape_args(args),
                              "--configs", config, "--steps", str(args.steps), "--warmup", str(args.warmup)])
    print(f"  {'library':18s} {'config':15s} {'params':>7s} {'GFLOP/eval':>10s} {'ms/eval':>8s} {'% ' + peak_name + ' peak':>11s} "
          f"{'1st eval s':>10s} {'peak RSS MiB':>12s}")
    for r in rows:
        gflop = r.get("gflop_per_eval") or r.get("gflop_per_step") or 0
        print(f"  {r.get('library') or r.get('peer'):18s} {r['config']:15s} {r['parameters'] / 1e6:6.2f}M {gflop:10.1f} "
              f"{r['ms']:8.1f} {100 * gflop / (r['ms'] / 1e3) / peak:10.1f}% "
              f"{r['first_step_s']:10.1f} {r['peak_rss_mib']:12.0f}")
    floor = next(r for r in rows if r["config"].startswith("convs-only"))
    ours = min((r for r in rows if r.get("library") and r is not floor), key=lambda r: r["ms"])
    peers = [r for r in rows if r.get("peer")]
    if peers:
        best = min(peers, key=lambda r: r["ms"])
        print(f"  diffusers best ({best['config']}) ms / genlab best ({ours['config']}) ms = {best['ms'] / ours['ms']:.2f}x   "
              "(goal: at least 1.5 times)")
        print(f"  the goal needs {best['ms'] / 1.5:.1f} ms per evaluation; the convolutions alone, with nothing else costing "
              f"time, take {floor['ms']:.1f} ms, and genlab's fastest evaluation spends {ours['ms'] - floor['ms']:.1f} ms "
              "on its GroupNorms, SiLUs and attention cores")


if __name__ == "__main__":
    main()
