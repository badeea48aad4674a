"""The trilemma report: quality (FID, KID), coverage (precision, recall), speed and likelihood.

``collect_rows(runs)`` reads each run's ``metrics.jsonl`` and keeps, per sampler setting,
the latest sample-quality evaluation, joined with the run's latest bits/dim on its
whole test split; ``write_report(rows, out)`` writes the Markdown table and, beside it,
a PNG chart of FID against seconds per sample with the point size set by recall.

Figures measured with another feature network than the one this genlab ships are
refused: FIDs from different feature networks are not comparable.
"""

from __future__ import annotations

import math
from pathlib import Path

from genlab.errors import RunError
from genlab.io import atomic_write, atomic_write_text


def _records(run: Path) -> list[dict]:
    """The run's metrics records in the current schema (:meth:`genlab.run.RunDir.records`)."""
    from genlab.run import RunDir

    rd = RunDir(run)
    if not rd.exists():
        raise RunError(f"{run} is not a genlab run (no config.json); pass run directories written by genlab train.")
    return rd.records()


def _setting(r: dict) -> tuple:
    """What makes two quality evaluations the same row."""
    sampler = r.get("sampler")
    eta = float(r.get("eta") or 0.0) if sampler == "ddim" else None  # only DDIM reads eta
    spacing = (r.get("spacing") or "uniform") if sampler in ("ancestral", "ddim", "pc") else None
    return (r.get("samples_file") or "", sampler, r.get("steps"), eta, spacing, r.get("n"),
            r.get("weights"), r.get("ref_split"), r.get("step"), r.get("mixed_precision") == "no",
            r.get("class"), r.get("guidance_type"), r.get("guidance"))


def _conditioning(r: dict) -> str:
    """The class asked for and the guidance, as the label shows them ('' for unconditional sampling)."""
    out = f" class {r['class']}" if r.get("class") not in (None, "all") else ""
    kind = r.get("guidance_type")
    if kind == "classifier":
        out += f" classifier s={r.get('guidance') or 0:g}"
    elif kind:
        out += f" cfg w={r.get('guidance') or 0:g}"
    return out


def _series(r: dict) -> str:
    """The sampler and its settings other than the step count: one line of the NFE chart."""
    if r.get("samples_file") and not r.get("sampler"):
        return Path(r["samples_file"]).name
    names: dict[str | None, str] = {"ddim": "DDIM", "dpmpp-2m": "DPM++2M", "euler": "Euler", "heun": "Heun", "langevin": "Langevin", "pc": "PC"}
    name = names.get(r.get("sampler"), str(r.get("sampler")))
    eta = f" eta={r['eta']:g}" if r.get("eta") and r.get("sampler") == "ddim" else ""
    spacing = f" {r['spacing']}" if r.get("spacing") not in (None, "uniform") else ""
    fp32 = " fp32" if r.get("mixed_precision") == "no" else ""  # the network in float32, not bf16
    return f"{name}{eta}{spacing}{fp32}{_conditioning(r)}"


def _label(r: dict) -> str:
    if r.get("samples_file") and not r.get("sampler"):
        return _series(r)
    name, _, rest = _series(r).partition(" ")
    steps = f" {r['steps']}" if r.get("steps") is not None else ""  # a GAN's generator or a VAE's decoder: no steps
    return f"{name}{steps}" + (f" {rest}" if rest else "")


def _family(run: Path) -> str:
    """The run's family with what sets it apart: 'vae beta=4', 'gan wgan-gp conditional', 'rbm pcd-1' ...

    Each family says this of its own config (``describe``); "?" when the config cannot be read,
    the bare name for a family this genlab does not know (a plugin that is not installed).
    """
    from genlab.errors import GenlabError
    from genlab.family import family_class
    from genlab.run import read_run_config

    try:
        cfg = read_run_config(run)
    except (GenlabError, OSError):
        return "?"
    try:
        cls = family_class(cfg.family)
    except GenlabError:
        return cfg.family
    return cls.describe(cfg)


def training_throughput(records: list[dict]) -> float | None:
    """Training images per second over a run's log lines (their mean), or None if it logged none."""
    rates = [r["images_per_s"] for r in records if "event" not in r and r.get("images_per_s")]
    return sum(rates) / len(rates) if rates else None


def _text_fields(records: list[dict]) -> dict:
    """The latest text alignment (held-out combinations) and latent bound + decoder of a run's evaluations."""
    out: dict = {}
    prompts = [r for r in records if "prompt_guidance" in r and "prompt_held_out_combination_all" in r]
    if prompts:
        p = max(prompts, key=lambda r: (r.get("step", 0), prompts.index(r)))
        out.update({"prompt_all": p["prompt_held_out_combination_all"], "prompt_guidance": p["prompt_guidance"],
                    "prompt_n": p.get("prompt_held_out_combination_n"), "prompt_sampler": p.get("sampler"),
                    "prompt_steps": p.get("steps"), "prompt_clip_score": p.get("prompt_held_out_combination_clip_score")})
    latents = [r for r in records if "latent_bpd_bound" in r]
    if latents:
        lb = max(latents, key=lambda r: (r.get("step", 0), r.get("latent_n", 0)))
        out.update({k: lb.get(k) for k in ("latent_bpd_bound", "latent_bpd_se", "latent_n", "latent_decoder_bpd",
                                           "latent_split")})
    return out


def _draws_nothing(run: Path) -> str | None:
    """The family of a run that draws no samples and has no likelihood (a classifier, a CLIP), else None."""
    from genlab.errors import GenlabError
    from genlab.family import family_class
    from genlab.run import read_run_config

    try:
        cfg = read_run_config(run)
        cls = family_class(cfg.family)
    except (GenlabError, OSError):
        return None
    return None if (cls.sampler_names or cls.has_likelihood) else cfg.family


def training_seconds(records: list[dict]) -> float | None:
    """Seconds of training in a run's log: the last ``time_s`` of each stretch (a resumed run starts a new one)."""
    total, last = 0.0, None
    for r in records:
        if "event" in r or "time_s" not in r:
            continue
        if last is not None and r["time_s"] < last:
            total += last
        last = r["time_s"]
    return None if last is None else total + last


def collect_rows(runs: list[Path]) -> list[dict]:
    """One row per (run, sampler setting), latest evaluation first seen; refuses other feature networks."""
    from genlab.metrics.features import load_feature_network

    rows: list[dict] = []
    shipped: dict[str, str] = {}  # data name -> version of the feature network this genlab ships
    for run in map(Path, runs):
        log = _records(run)
        nothing = _draws_nothing(run)
        if nothing:
            raise RunError(f"{run} is a {nothing} run: it draws no samples and has no likelihood, so it has no row in the "
                           f"trilemma report; genlab eval {run} prints its own figures.")
        records = [r for r in log if r.get("event") == "eval"]
        run_fields = {"family": _family(run), "train_seconds": training_seconds(log),
                      "train_images_per_s": training_throughput(log), **_text_fields(records)}
        quality = [r for r in records if "feature_network" in r]
        bpds = [r for r in records if "bpd" in r]
        bpd = None
        if bpds:  # the latest checkpoint's, on the most images
            top_step = max(r.get("step", 0) for r in bpds)
            at_top = [r for r in bpds if r.get("step", 0) == top_step]
            bpd = max(at_top, key=lambda r: (r["bpd_n"] or 0, at_top.index(r)))
        odes = [r for r in records if "bpd_ode" in r]
        ode = max(odes, key=lambda r: (r.get("step", 0), r.get("bpd_ode_n", 0))) if odes else None
        if not quality and bpd is None and ode is None and not _text_fields(records):
            raise RunError(f"{run} has no evaluations yet; run genlab eval {run} --metrics fid,kid,pr,bpd first.")
        latest: dict[tuple, dict] = {}
        for r in quality:
            latest[_setting(r)] = r
        for r in latest.values():
            data = r.get("data", "")
            if data not in shipped:
                shipped[data] = load_feature_network(data).version
            if r["feature_network"] != shipped[data]:
                raise RunError(f"{run}: the {_label(r)} figures were measured with feature network {r['feature_network']} "
                               f"but this genlab ships {shipped[data]}, and FIDs from different networks are not "
                               f"comparable; measure again with genlab eval {run} --metrics fid,kid,pr.")
        settings = sorted(latest.values(), key=lambda r: (-(r.get("nfe") or 0), r.get("n") or 0))
        bpd_fields = {}
        if bpd is not None:
            bpd_fields = {"bpd": bpd["bpd"], "bpd_n": bpd["bpd_n"], "bpd_split": bpd["bpd_split"],
                          "bpd_weights": bpd["weights"], "bpd_exact": bpd.get("t_samples") is None and "iwae_k" not in bpd
                          and not bpd.get("binarised"), "bpd_se": bpd.get("bpd_se"),
                          **{k: bpd[k] for k in ("iwae_k", "binarised", "nll_nats", "log_z_se", "ais_chains", "ais_betas") if k in bpd}}
        if ode is not None:
            bpd_fields.update({"bpd_ode": ode["bpd_ode"], "bpd_ode_se": ode.get("bpd_ode_se"), "bpd_ode_n": ode.get("bpd_ode_n"),
                               "ode_rtol": ode.get("ode_rtol")})
        if not settings:
            rows.append({"run": str(run), "label": "(no samples measured)", **run_fields, **bpd_fields})
        for r in settings:
            rows.append({"run": str(run), "label": _label(r), "series": _series(r), "guided": bool(r.get("guidance_type")),
                         **run_fields, **{k: r.get(k) for k in (
                "sampler", "fid", "kid", "kid_std", "precision", "recall", "nfe", "seconds_per_sample", "batch_size", "n",
                "weights", "ref_split", "ref_n", "feature_network", "data", "step", "threads", "mixed_precision")},
                **bpd_fields})
    return rows


def best_per_run(rows: list[dict]) -> list[dict]:
    """Each run's row with the lowest FID among its unguided settings (guided ones only where it has no other;
    its only row when it measured no samples), in run order: the model itself against the other families."""
    out: dict[str, dict] = {}
    plain = {r["run"] for r in rows if not r.get("guided")}
    for r in rows:
        if r.get("guided") and r["run"] in plain:
            continue
        kept = out.get(r["run"])
        if kept is None or (r.get("fid") is not None and (kept.get("fid") is None or r["fid"] < kept["fid"])):
            out[r["run"]] = r
    return list(out.values())


def _fmt(v, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _minutes(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 60:.1f} min"


def markdown_table(rows: list[dict]) -> str:
    text = any(r.get("prompt_all") is not None for r in rows)  # a column for text-conditioned runs, only when there are some
    head = ("| run | family | sampler | n | FID | KID | precision | recall | bits/dim | bits/dim (ODE) | NFE | s/sample | training |"
            + (" prompts right (held-out) |" if text else "") + "\n"
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if text else "") + "\n")
    lines = []
    for r in rows:
        kid = f"{r['kid']:.4f} ± {r['kid_std']:.4f}" if r.get("kid") is not None else ""
        bpd = ""
        if r.get("bpd") is not None:
            bpd = f"{r['bpd']:.4f}" + ("" if r.get("bpd_exact") else f" ± {r['bpd_se']:.4f}")
            bpd += " (binary)" if r.get("binarised") else (f" (IWAE k={r['iwae_k']})" if r.get("iwae_k") else "")
        lines.append(f"| {Path(r['run']).name} | {r.get('family', '')} | {r['label']} | {_fmt(r.get('n'), 'd')} | {_fmt(r.get('fid'), '.3f')} | {kid} "
                     f"| {_fmt(r.get('precision'), '.3f')} | {_fmt(r.get('recall'), '.3f')} | {bpd} "
                     + (f"| {r['bpd_ode']:.4f} ± {r['bpd_ode_se']:.4f} " if r.get("bpd_ode") is not None else "| ") +
                     f"| {_fmt(r.get('nfe'), 'g')} | {_fmt(r.get('seconds_per_sample'), '.4f')} | {_minutes(r.get('train_seconds'))} |"
                     + (f" {_fmt(r.get('prompt_all'), '.3f')}{_guided(r)} |" if text else ""))
    return head + "\n".join(lines) + "\n"


def _guided(r: dict) -> str:
    return f" (w={r['prompt_guidance']:g})" if r.get("prompt_all") is not None else ""


def _values(rows: list[dict], key: str) -> str:
    """The distinct values of ``key`` among the rows that measured samples, as 'a' or 'a or b'."""
    return " or ".join(str(v) for v in sorted({r[key] for r in rows if r.get("feature_network") and r.get(key) is not None},
                                               key=str))


def protocol_notes(rows: list[dict]) -> str:
    notes = []
    for run in dict.fromkeys(r["run"] for r in rows):
        rs = [r for r in rows if r["run"] == run]
        q = next((r for r in rs if r.get("feature_network")), None)
        parts = [f"- **{Path(run).name}** ({rs[0].get('family', 'ddpm')}, `{run}`)"]
        if rs[0].get("train_seconds") is not None:
            rate = rs[0].get("train_images_per_s")
            parts.append(f"trained for {_minutes(rs[0]['train_seconds'])}" + (f" at {rate:.0f} images/s" if rate else "")
                         + " (wall-clock of the training loop, as logged, sample grids and monitors included)")
        if q:
            parts.append(f"samples from {q['weights']} weights at step {q['step']}, compared with the {q['data']} "
                         f"{q['ref_split']} split ({q['ref_n']} images) under feature network `{q['feature_network']}`; "
                         f"speed at batch {_values(rs, 'batch_size')} on {_values(rs, 'threads')} threads "
                         f"({_values(rs, 'mixed_precision')})")
        b = rs[0]
        if b.get("binarised"):
            parts.append(f"bits/dim on {b['bpd_n']} {b['bpd_split']} images binarised (pixel u on with probability "
                         f"u/(K-1), seeded), so not comparable with the K-level figures: -log p(v) = {b['nll_nats']:.2f} "
                         f"nats per image, log Z by annealed importance sampling ({b['ais_chains']} chains x "
                         f"{b['ais_betas']} temperatures, ± {b['log_z_se']:.3f} nats); ± is the standard error over images")
        elif b.get("iwae_k"):
            parts.append(f"bits/dim on {b['bpd_n']} {b['bpd_split']} images, {b['bpd_weights']} weights: the importance-weighted "
                         f"bound with k = {b['iwae_k']} samples (an upper bound on -log p; ± standard error over images)")
        elif b.get("bpd") is not None:
            how = "every term of the bound" if b.get("bpd_exact") else "stratified estimate of the bound (± standard error)"
            parts.append(f"bits/dim on {b['bpd_n']} {b['bpd_split']} images, {b['bpd_weights']} weights, {how}")
        if b.get("prompt_all") is not None:
            score = f", CLIP score {b['prompt_clip_score']:.2f}" if b.get("prompt_clip_score") is not None else ""
            parts.append(f"prompts right: class and every stated attribute of one sample per held-out-combination test "
                         f"caption ({b['prompt_n']} captions, {b['prompt_sampler']} {b['prompt_steps']} steps, guidance "
                         f"{b['prompt_guidance']:g}{score})")
        if b.get("latent_bpd_bound") is not None:
            parts.append(f"latent bound + decoder {b['latent_bpd_bound']:.3f} ± {b['latent_bpd_se']:.3f} bits per pixel on "
                         f"{b['latent_n']} {b['latent_split']} images (decoder {b['latent_decoder_bpd']:.3f} of it; an upper "
                         f"bound through the autoencoder, not comparable with a pixel model's bits/dim, so not in that column)")
        if b.get("bpd_ode") is not None:
            parts.append(f"bits/dim (ODE) on {b['bpd_ode_n']} images by the probability-flow ODE (RK45, rtol = atol = "
                         f"{b['ode_rtol']:g}, Hutchinson trace, uniform dequantisation; ± standard error)")
        notes.append("; ".join(parts) + ".")
    return "\n".join(notes) + "\n"


def write_chart(rows: list[dict], path: Path, x: str = "seconds") -> None:
    """FID against speed, point area by recall. ``x``: ``seconds`` (per sample) or ``nfe`` (network
    evaluations per sample; then each run's sampler is a line through its step counts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = {"seconds": "seconds_per_sample", "nfe": "nfe"}[x]
    pts = [r for r in rows if r.get("fid") is not None and r.get(key)]
    fig, ax = plt.subplots(figsize=(7, 4.8) if x == "seconds" else (8, 5.2), dpi=120)
    runs = list(dict.fromkeys(r["run"] for r in pts))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if x == "seconds":
        for i, run in enumerate(runs):
            rs = [r for r in pts if r["run"] == run]
            sizes = [40 + 600 * (r.get("recall") or 0) for r in rs]
            ax.scatter([r[key] for r in rs], [r["fid"] for r in rs], s=sizes, alpha=0.6, color=colors[i % len(colors)],
                       edgecolors="black", linewidths=0.6, label=Path(run).name)
            for r in rs:
                rec = f", recall {r['recall']:.2f}" if r.get("recall") is not None else ""
                who = f"{Path(run).name}: " if len(runs) > 1 else ""  # several runs: say whose point it is
                ax.annotate(f"{who}{r['label']} (n={r['n']}){rec}", (r[key], r["fid"]), textcoords="offset points",
                            xytext=(9, 4), fontsize=7)
    else:
        lines = list(dict.fromkeys((r["run"], r.get("series") or r["label"]) for r in pts))
        for i, (run, series) in enumerate(lines):
            rs = sorted((r for r in pts if r["run"] == run and (r.get("series") or r["label"]) == series),
                        key=lambda r: r[key])
            name = series + ("" if len(runs) == 1 else f" ({Path(run).name})")
            # past the colour cycle, lines differ by dash and marker, so no two look alike
            c, style, marker = colors[i % len(colors)], ("-", "--", ":")[i // len(colors) % 3], "os^"[i // len(colors) % 3]
            ax.plot([r[key] for r in rs], [r["fid"] for r in rs], style, color=c, alpha=0.7, label=name, marker=marker,
                    markersize=4)
            ax.scatter([r[key] for r in rs], [r["fid"] for r in rs], s=[20 + 300 * (r.get("recall") or 0) for r in rs],
                       color=c, alpha=0.6, edgecolors="black", linewidths=0.5, marker=marker)
        if pts:
            ax.legend(fontsize=8, loc="best")
    if pts:
        from matplotlib.ticker import FormatStrFormatter, ScalarFormatter

        ax.set_xscale("log")
        if min(r["fid"] for r in pts) > 0:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
            ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.margins(x=0.35 if x == "seconds" else 0.08, y=0.15)
        if x == "seconds" and len(runs) > 1:
            ax.legend(fontsize=8, loc="best", markerscale=0.4)
    else:
        ax.text(0.5, 0.5, "no sample-quality evaluations with timings yet:\nrun genlab eval RUN --metrics fid,kid,pr",
                ha="center", va="center", transform=ax.transAxes)
    if x == "seconds":
        ax.set_xlabel("seconds per sample (log scale) - faster to the left")
        ax.set_title("Quality against speed; point area grows with recall (mode coverage)", fontsize=10)
    else:
        ax.set_xlabel("network evaluations per sample (log scale) - faster to the left")
        ax.set_title("FID against network evaluations per sampler; point area grows with recall", fontsize=10)
    ax.set_ylabel("FID (lower is better)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def write_report(rows: list[dict], out: str | Path, x: str = "seconds", best: bool = False) -> tuple[Path, Path]:
    """Write ``out`` (Markdown) and ``out`` with suffix ``.png`` (the chart against ``x``: see
    :func:`write_chart`); return both paths."""
    out = Path(out)
    png = out.with_suffix(".png")
    text = ("# genlab report: the generative trilemma\n\n"
            "Sample quality (FID, KID: lower is better), mode coverage (precision, recall: higher is better), "
            "likelihood (bits/dim: lower is better) and sampling speed (network evaluations and seconds per sample).\n\n"
            + ("One row per run: the unguided sampler setting with the lowest FID among its evaluations.\n\n" if best else "")
            + markdown_table(rows) + f"\n![quality against speed]({png.name})\n\n## Protocol\n\n" + protocol_notes(rows))
    write_chart(rows, png, x)
    atomic_write_text(out, text)
    return out, png
