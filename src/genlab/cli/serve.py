"""``genlab serve RUN [RUN ...]``: the browser demo (Gradio, ``pip install 'genlab[demo]'``) on 127.0.0.1."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from genlab.cli._common import DEVICE_HELP, add_debug, device
from genlab.errors import ConfigError


def add_parser(sub) -> None:
    s = sub.add_parser("serve", help="the browser demo of runs (Gradio; pip install 'genlab[demo]')",
                       description="Serve a page to sample from the runs (sampler, steps, seed, guidance, class or "
                                   "prompt), see the denoising path, compare samplers at equal network evaluations, "
                                   "inpaint with a drawn mask, super-resolve, translate (CycleGAN) and see the report. "
                                   "Bound to 127.0.0.1 unless --host says otherwise; Gradio's analytics are off.")
    s.add_argument("runs", type=Path, nargs="+", help="run directories (or folders written by genlab export)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_debug(s)


def run(args) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise ConfigError("genlab serve needs Gradio, which is not installed; pip install 'genlab[demo]'.")
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must lie in 1..65535, not {args.port}.")
    dev = str(device(args))
    from genlab.demo.app import serve  # its Demo reads every run first: a folder that is not one is said before serving

    print(f"genlab: serving {len(args.runs)} run(s) on http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    try:
        serve(args.runs, host=args.host, port=args.port, device=dev)
    except OSError as e:
        raise ConfigError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e}); choose another --port.") from None
    return 0
