"""genlab's command line: ``genlab train | sample | eval | report | features | inpaint | upscale | hopfield | figures | export | serve``.

One module per command, each with ``add_parser(subparsers)`` and ``run(args) -> int``; argparse lives
in this package only. Thin: a command parses, checks its flags, calls the library (``genlab.train``,
``genlab.evaluate``, ``genlab.RunDir``) and prints. Every user error (a GenlabError) is printed as one
sentence with exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from genlab import __version__
from genlab.cli import eval as eval_cmd
from genlab.cli import export, features, figures, hopfield, inpaint, report, sample, serve, train, upscale
from genlab.config import FLAGS
from genlab.errors import GenlabError

COMMANDS = {"train": train, "sample": sample, "eval": eval_cmd, "report": report, "features": features,
            "inpaint": inpaint, "upscale": upscale, "hopfield": hopfield, "figures": figures,
            "export": export, "serve": serve}


def _torch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")  # without importing it: --version answers at once
    except PackageNotFoundError:
        return "not installed"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genlab", description="Train, sample and evaluate deep generative models.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    p.add_argument("--version", action="version", version=f"genlab {__version__} (torch {_torch_version()})")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]  # for genlab train --processes
    try:
        return COMMANDS[args.command].run(args)
    except GenlabError as e:
        if args.debug:
            raise
        print(f"genlab: error: {e.render(FLAGS)}", file=sys.stderr)  # settings said as their flags
        return 2
    except OSError as e:  # a write no genlab module caught: the disk's refusal is still one sentence
        from genlab.io import storage_errno, storage_error

        code = storage_errno(e)
        if code is None or args.debug:
            raise
        print(f"genlab: error: {storage_error(e.filename or 'a file', code).render(FLAGS)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genlab: interrupted; resume with --resume --out RUN", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
