"""``genlab figures NAME [NAME ...] --out DIR``: the lecture notes' figures, each drawn from the math (genlab.viz.figures)."""

from __future__ import annotations

import inspect
from pathlib import Path

from genlab.errors import ConfigError

# genlab.viz.figures.FIGURES's names, here so that building the parser imports no torch (a test keeps them equal)
NAMES = ("marginals", "kernel", "posterior", "frequency", "weighting", "mode-collapse", "hopfield", "trilemma")
# flag -> the keyword of the figure functions that take it
OPTIONS = {"--data-dir": "data_dir", "--runs": "runs", "--steps": "steps", "--seed": "seed", "--schedule": "schedule",
           "--timesteps": "timesteps"}


def add_parser(sub) -> None:
    f = sub.add_parser("figures", help="draw the lecture notes' figures (PNG + the numbers as JSON)",
                       description="Draw each figure NAME as DIR/NAME.png with the numbers plotted in DIR/NAME.json. "
                                   f"Figures: {', '.join(NAMES)}; 'all' draws every one (trilemma only with --runs).")
    f.add_argument("names", nargs="+", metavar="NAME", help="figures to draw, or all")
    f.add_argument("--out", type=Path, default=Path("figures"), help="folder to write into (default figures)")
    f.add_argument("--data-dir", default=None,
                   help="frequency: folder holding MNIST's files (default: scikit-learn's 8x8 digits, no files needed)")
    f.add_argument("--runs", nargs="+", type=Path, default=None, help="trilemma: run directories to compare")
    f.add_argument("--steps", type=int, default=None, help="mode-collapse: training steps per GAN loss (default 1000)")
    f.add_argument("--seed", type=int, default=None, help="seed of the random parts: sample paths, noise, GANs (default 0)")
    f.add_argument("--schedule", default=None, help="marginals, kernel, posterior: beta schedule (default linear)")
    f.add_argument("--timesteps", type=int, default=None, help="number of diffusion steps T (default 1000)")


def _given(args) -> dict[str, object]:
    """The options the user passed, by flag."""
    return {flag: getattr(args, key) for flag, key in OPTIONS.items() if getattr(args, key) is not None}


def _check(args, names: list[str], given: dict) -> None:
    """Refuse bad input before anything is computed or written."""
    from genlab.diffusion.schedules import SCHEDULES, make_betas
    from genlab.run import RunDir

    if "trilemma" in names and "--runs" not in given:
        raise ConfigError("the trilemma figure reads run directories; pass them with --runs RUN [RUN ...].")
    for run in given.get("--runs", []):
        if not RunDir(run).exists():
            raise ConfigError(f"--runs {run} is not a genlab run (no config.json); pass run directories written by "
                              "genlab train.")
    if "--steps" in given and args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, not {args.steps}.")
    if "--schedule" in given and args.schedule not in SCHEDULES:
        raise ConfigError(f"--schedule {args.schedule!r} is unknown; choose one of {', '.join(SCHEDULES)}.")
    if "--timesteps" in given:
        if args.timesteps < 2:
            raise ConfigError(f"--timesteps must be at least 2, not {args.timesteps}.")
        for schedule in {args.schedule or "linear", "linear", "cosine"}:
            make_betas(schedule, args.timesteps)  # a ConfigError naming --timesteps if T is too small for it


def run(args) -> int:
    from genlab.viz.figures import FIGURES, headline

    names = list(dict.fromkeys(args.names))
    unknown = [n for n in names if n not in FIGURES and n != "all"]
    if unknown:
        raise ConfigError(f"no figure named {unknown[0]!r}; choose from {', '.join(FIGURES)}, or all.")
    given = _given(args)
    everything = "all" in names
    if everything:
        names = [n for n in FIGURES if n != "trilemma" or "--runs" in given]
    _check(args, names, given)
    takes = {n: set(inspect.signature(FIGURES[n]).parameters) for n in names}
    if not everything:
        for flag, key in OPTIONS.items():
            if flag in given and not any(key in takes[n] for n in names):
                users = [n for n in FIGURES if key in inspect.signature(FIGURES[n]).parameters]
                raise ConfigError(f"{flag} does not apply to {', '.join(names)}; it is an option of {', '.join(users)}.")
    for name in names:
        options = {OPTIONS[flag]: value for flag, value in given.items() if OPTIONS[flag] in takes[name]}
        numbers = FIGURES[name](args.out, **options)
        print(f"genlab: {name}: {headline(numbers)}")
        print(f"genlab: wrote {numbers['png']} and {numbers['json']}")
    return 0
