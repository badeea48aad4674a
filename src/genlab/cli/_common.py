"""What several commands share: config flags, device and precision flags, the run-loading step.

The library raises ValueError (or a GenlabError) in its own words; the CLI checks its flags
first and turns what is wrong into one sentence naming the flag (status 2, see ``main``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from genlab.config import SECTIONS
from genlab.errors import ConfigError

DEVICE_HELP = "where the network runs: auto (default: the first CUDA GPU if torch sees one, else the CPU), cpu, cuda or cuda:N"
COMPILE_HELP = ("diffusion runs: run the network through torch.compile (each batch shape compiles once, 30-60 s on "
                "2 cores, seconds when cached; then 1.4-2.6x faster per evaluation on this CPU): for many steps or samples")
PRECISION_HELP = "no (fp32) or bf16 (default: the run's training precision, fp32 where this CPU or GPU has no native bf16)"


def add_debug(p: argparse.ArgumentParser) -> None:
    """``--debug`` after the command too (``genlab sample RUN --debug``)."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_run_flags(p: argparse.ArgumentParser, device: bool = True, progress: bool = True) -> None:
    """--weights, --mixed-precision, --device and --no-progress of the commands that load a run."""
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights to use (default ema)")
    p.add_argument("--mixed-precision", default=None, help=PRECISION_HELP)
    if progress:
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
    if device:
        p.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_debug(p)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field that has one (metadata "flag"), grouped by section."""
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} options")
        for f in dataclasses.fields(cls):
            flag = f.metadata.get("flag")
            if not flag:
                continue
            default = f.default if f.default is not dataclasses.MISSING else None
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            switch: dict[str, Any] = {"nargs": "?", "const": "true"} if isinstance(default, bool) else {}  # a bare flag means true
            group.add_argument(flag, dest=f"{section}.{f.name}", default=argparse.SUPPRESS, metavar=f.name.upper(),
                               help=f"{f.metadata['help']} (default: {shown}, or the dataset's preset)", **switch)


def cli_overrides(args: argparse.Namespace) -> dict:
    """The config flags given, as {section: {field: value}}."""
    out: dict[str, dict] = {}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            out.setdefault(section, {})[name] = value
    return out


def device(args):
    """The device of --device: auto is the first CUDA GPU if torch sees one, else the CPU."""
    from genlab.evaluate import resolve_device

    name = getattr(args, "device", "auto")
    try:
        return resolve_device(name)
    except ValueError as e:
        text = str(e)
        if "needs a CUDA GPU" in text:
            raise ConfigError(f"--{text}; use --device cpu.") from None
        raise ConfigError(f"{text.replace('device', '--device', 1)}.") from None


def precision(args, cfg) -> str:
    """--mixed-precision, else the run's training precision (fp32 where bf16 is not native: said once)."""
    from genlab.precision import for_sampling

    p = getattr(args, "mixed_precision", None)
    if p is None:
        p, why = for_sampling(cfg.train.mixed_precision, device(args))
        if p != cfg.train.mixed_precision and not getattr(args, "_precision_said", False):
            print(f"genlab: sampling in fp32 ({why}; --mixed-precision bf16 to force it)", file=sys.stderr)
            args._precision_said = True
    if p not in ("no", "bf16"):
        raise ConfigError(f"--mixed-precision must be no or bf16, not {p!r}.")
    return p


def load(args, path: Path | None = None):
    """(config, family, checkpoint, step) of the run ``args.run`` with --weights on --device."""
    from genlab.run import load_run

    return load_run(path or args.run, weights=args.weights, device=device(args))


def names_with(capability) -> list[str]:
    """The registered families whose class satisfies ``capability`` (for messages that list them)."""
    from genlab.family import family_class, family_names

    return [name for name in family_names() if capability(family_class(name))]


def either(names: list[str], word: str = "or") -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {word} {names[-1]}"
