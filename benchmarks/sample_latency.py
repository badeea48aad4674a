"""Milliseconds per network evaluation when sampling: genlab's U-Net against diffusers', same shape, same run.

    python benchmarks/sample_latency.py --peer diffusers [--peer-python PY] [--batch 64] [--compile]

One network evaluation is the forward pass a sampler makes per step, with gradients off:
genlab under ``torch.no_grad`` as its samplers run it, in fp32 and under bf16 autocast
(what ``genlab sample`` uses for a bf16-trained run); diffusers' ``UNet2DModel`` likewise
(``benchmarks/peer_diffusers.py sample``). ``--compile`` adds both libraries under
``torch.compile`` (genlab: ``genlab sample --compile``, i.e. ``genlab.run.compile_network``,
with bf16 autocast; diffusers: compiled in fp32 and under bf16 autocast); the seconds of the
first evaluation, compiling included, are printed. Each configuration runs in its own
process; the median of ``--steps`` evaluations after ``--warmup`` is reported, and the
ratio is the peer's fastest against genlab's fastest. The shape options and the peer's environment
are those of ``train_throughput.py``.
"""

from __future__ import annotations

import argparse
import json
import sys

from train_throughput import DEFAULT_PEER_PYTHON, HERE, Path, add_shape_args, describe_shape, run_json, shape_args, time_steps


def worker(args) -> None:
    import torch

    from genlab.nets import UNet

    torch.manual_seed(0)
    net = UNet(image_size=args.size, in_channels=1, channels=args.channels, num_res_blocks=args.res_blocks,
               attn_resolutions=args.attn, dropout=0.0, head_dim=args.head_dim).eval()
    x = torch.randn(args.batch, 1, args.size, args.size)
    t = torch.full((args.batch,), 500)
    if args.worker == "compiled":
        from genlab.run import compile_network

        compile_network(net)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.worker != "fp32"):
        timing = time_steps(lambda i: net(x, t).float(), args.warmup, args.steps)
    print(json.dumps({"library": "genlab", "config": args.worker, "batch": args.batch, **timing, "ms": timing["seconds"] * 1e3,
                      "parameters": sum(p.numel() for p in net.parameters()),
                      "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(p, steps=20)
    p.add_argument("--peer", choices=("diffusers", "none"), default="none")
    p.add_argument("--peer-python", default=DEFAULT_PEER_PYTHON)
    p.add_argument("--compile", action="store_true", help="also time both libraries under torch.compile (a minute or two of compiling)")
    p.add_argument("--worker", choices=("fp32", "fast", "compiled"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    print(describe_shape(args) + " evaluations")
    rows = []
    for config in ("fp32", "fast") + (("compiled",) if args.compile else ()):
        rows += run_json([sys.executable, __file__, "--worker", config, *shape_args(args), "--steps", str(args.steps),
                          "--warmup", str(args.warmup)])
    if args.peer == "diffusers":
        if not Path(args.peer_python).exists():
            raise SystemExit(f"no Python for the peer at {args.peer_python}; see train_throughput.py's docstring, "
                             "or pass --peer-python PATH.")
        for config in ("fp32", "bf16") + (("compile", "compile-bf16") if args.compile else ()):  # one process each
            rows += run_json([args.peer_python, str(HERE / "peer_diffusers.py"), "sample", *shape_args(args),
                              "--configs", config, "--steps", str(args.steps), "--warmup", str(args.warmup)])
    print(f"  {'library':18s} {'config':12s} {'params':>7s} {'ms/eval':>8s} {'1st eval s':>10s} {'peak RSS MiB':>12s}")
    for r in rows:
        print(f"  {r.get('library') or r.get('peer'):18s} {r['config']:12s} {r['parameters'] / 1e6:6.2f}M {r['ms']:8.1f} "
              f"{r['first_step_s']:10.1f} {r['peak_rss_mib']:12.0f}")
    ours = min((r for r in rows if r.get("library")), key=lambda r: r["ms"])
    peers = [r for r in rows if r.get("peer")]
    if peers:
        best = min(peers, key=lambda r: r["ms"])
        print(f"  diffusers best ({best['config']}) ms / genlab best ({ours['config']}) ms = {best['ms'] / ours['ms']:.2f}x   (goal: at least 5 times)")


if __name__ == "__main__":
    main()
