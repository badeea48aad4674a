"""The lecture notes' figures, each drawn from the math or from genlab's own models and runs.

``FIGURES[name](out_dir, **options)`` computes a figure's numbers, writes
``out_dir/name.png`` (matplotlib, Agg) and ``out_dir/name.json`` (the numbers plotted, plus
``png``/``json``: the paths), and returns the numbers. Each figure's keyword options are
its own (see its docstring); :func:`headline` says its key numbers in one line.

| name            | what it shows                                                          | module |
|-----------------|------------------------------------------------------------------------|--------|
| ``marginals``   | marginals q(z_t) of 1-D mixture data over t, with forward paths         | diffusion1d |
| ``kernel``      | the diffusion kernel q(z_t \\| x) for several x and t                  | diffusion1d |
| ``posterior``   | true q(z_s \\| z_t) (Bayes on a grid) against Gaussian posteriors       | diffusion1d |
| ``frequency``   | power spectrum of noised images against its closed form                | noising |
| ``weighting``   | L_simple, P2 and min-SNR weights against log SNR                       | noising |
| ``mode-collapse`` | modes of the 8 Gaussians covered by three GAN losses                 | families |
| ``hopfield``    | Hopfield recall step by step, with its energy                          | families |
| ``trilemma``    | quality, coverage and speed of run directories                         | families |
"""

from __future__ import annotations

from collections.abc import Callable

from genlab.viz.figures.diffusion1d import forward_1d, kernel, posterior
from genlab.viz.figures.families import hopfield, mode_collapse, trilemma
from genlab.viz.figures.noising import spectrum, weighting

FIGURES: dict[str, Callable[..., dict]] = {"marginals": forward_1d, "kernel": kernel, "posterior": posterior, "frequency": spectrum,
                                           "weighting": weighting, "mode-collapse": mode_collapse, "hopfield": hopfield, "trilemma": trilemma}


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def headline(numbers: dict) -> str:
    """A figure's key numbers in one line, from what its function returned."""
    name = numbers["figure"]
    if name == "marginals":
        return "modes of q(z_t): " + ", ".join(f"t={r['t']}: {r['modes']}" for r in numbers["summary"])
    if name == "kernel":
        return "TV between the kernels of the extreme x: " + ", ".join(
            f"t={r['t']}: {r['tv_extremes']:.3f}" for r in numbers["kernels"])
    if name == "posterior":
        return "KL(true || best Gaussian): " + ", ".join(
            f"(s={c['s']}, t={c['t']}, z_t={c['z_t']:g}) {c['kl_nats']:.2g} nats, {c['modes']} mode(s)"
            for c in numbers["cases"])
    if name == "frequency":
        return "; ".join(f"{s}: first drowned at t = {r['drowned_at'][1:]} (lowest to highest frequency), "
                         f"measured within {100 * r['max_rel_error']:.1f}% of the closed form"
                         for s, r in numbers["schedules"].items())
    if name == "weighting":
        return "; ".join(f"{s}: clean-up share " + ", ".join(
            f"{w} {shares['clean-up (SNR > 1)']:.2f}" for w, shares in r["stage_share"].items())
            for s, r in numbers["schedules"].items())
    if name == "mode-collapse":
        return f"modes covered after {numbers['steps']} steps: " + ", ".join(
            f"{loss} {r['modes_covered'][-1]}" for loss, r in numbers["losses"].items())
    if name == "hopfield":
        return "; ".join(f"digit {r['class']}: {'recalled' if r['recalled'] else 'not recalled'} in {r['updates']} updates, "
                         f"energy {r['energy'][0]:.2f} -> {r['energy'][-1]:.2f}" for r in numbers["patterns"])
    if name == "trilemma":
        return "; ".join(f"{r['run']}: FID {_fmt(r['fid'])}, recall {_fmt(r['recall'])}, "
                         f"{_fmt(r['seconds_per_sample'])} s/sample" for r in numbers["runs"])
    return ""


__all__ = ["FIGURES", "forward_1d", "headline", "hopfield", "kernel", "mode_collapse", "posterior", "frequency",
           "trilemma", "weighting"]
