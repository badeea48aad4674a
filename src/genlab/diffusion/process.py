"""The Gaussian diffusion process of Ho et al. 2020 (DDPM) and its variational bound.

Conventions (used everywhere in genlab):

* **Timesteps run 0..T-1.** Index ``t`` here is the paper's ``t + 1``: ``x_t`` in code
  is the paper's x_{t+1}, ``betas[t]`` is the paper's beta_{t+1}. The data is x0
  (paper x_0). So ``t = 0`` is the first noisy latent (paper x_1), whose reverse step
  is the decoder p(x_0 | x_1), and ``t = T - 1`` is the last (paper x_T).
* **Units**: every likelihood term is in nats per example (summed over dimensions)
  inside this module; :func:`genlab.distributions.nats_to_bpd` converts at the edges.
* Shapes: ``x0``, ``xt``, ``eps`` are ``[B, *D]``; ``t`` is an integer tensor ``[B]``.

Notation (paper -> code): beta_t -> betas, alpha_t -> alphas, bar(alpha)_t ->
alpha_bar, tilde(beta)_t -> posterior_variance, tilde(mu)_t -> posterior mean.

The process is not the network: :class:`GaussianDiffusion` owns the schedule and the
math and is handed a :class:`Denoiser` (STYLE.md, "Take" 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from genlab.diffusion.schedules import make_betas
from genlab.distributions import (  # noqa: F401 - re-exported
    discretized_gaussian_log_likelihood,
    gaussian_log_density,
    nats_to_bpd,
    normal_kl,
)
from genlab.errors import ConfigError

PARAMETERIZATIONS = ("eps", "x0", "v")
VARIANCES = ("fixed_small", "fixed_large", "learned_range")
LOSSES = ("simple", "hybrid", "vlb")
WEIGHTINGS = ("none", "p2", "min-snr")
# gamma of each weighting when none is given: P2 (Choi et al. 2022) use gamma = 1 with k = 1;
# min-SNR-gamma (Hang et al. 2023) recommend gamma = 5
DEFAULT_WEIGHTING_GAMMA = {"none": 0.0, "p2": 1.0, "min-snr": 5.0}
P2_K = 1.0


@dataclass
class Denoiser:
    """A network ``net(x_t, t, **cond) -> output`` plus what it predicts (eps, x0 or v).

    ``t`` passed to ``net`` is always the index into the *original* schedule (0..T-1),
    even when sampling a respaced process.
    """

    net: Callable[..., torch.Tensor]
    parameterization: str = "eps"

    def __post_init__(self):
        if self.parameterization not in PARAMETERIZATIONS:
            raise ConfigError(
                f"unknown parameterization {self.parameterization!r}; choose one of {', '.join(PARAMETERIZATIONS)}."
            )

    def __call__(self, xt: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        return self.net(xt, t, **cond)


def _extract(table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """table[t] as x's dtype, shaped [B, 1, 1, ...] to broadcast against x."""
    out = table.to(x.device)[t].to(x.dtype)
    return out.reshape(t.shape[0], *([1] * (x.dim() - 1)))


class GaussianDiffusion:
    """Forward process q, reverse process p, training losses and the variational bound.

    Args:
        betas: float64 array ``[T]`` of forward variances (see :mod:`schedules`).
        variance: the reverse variance Sigma_t: fixed to ``"fixed_small"`` (tilde(beta)_t,
            the posterior variance) or ``"fixed_large"`` (beta_t), DDPM Sec. 3.2; or
            ``"learned_range"``, learned between the two (Nichol & Dhariwal 2021, eq. (15)):
            the network then outputs twice the data's channels, the second half being v.
        timestep_map: for a respaced process, the original-schedule index of each of
            its steps (passed to the network); identity otherwise.
    """

    def __init__(self, betas, variance: str = "fixed_small", timestep_map=None):
        if variance not in VARIANCES:
            raise ConfigError(f"unknown variance {variance!r}; choose one of {', '.join(VARIANCES)}.")
        betas = torch.as_tensor(np.asarray(betas, dtype=np.float64))
        self.variance = variance
        self.num_timesteps = T = betas.shape[0]
        self.timestep_map = torch.arange(T) if timestep_map is None else torch.as_tensor(timestep_map, dtype=torch.long)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bar = torch.cumprod(self.alphas, 0)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        self.sqrt_alpha_bar = self.alpha_bar.sqrt()
        self.sqrt_one_minus_alpha_bar = (1.0 - self.alpha_bar).sqrt()
        self.sqrt_recip_alpha_bar = (1.0 / self.alpha_bar).sqrt()
        self.sqrt_recipm1_alpha_bar = (1.0 / self.alpha_bar - 1.0).sqrt()
        # q(x_{t-1} | x_t, x_0), DDPM eq. (6)-(7)
        self.posterior_variance = betas * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)
        # tilde(beta) is 0 at t = 0: clip the log to the next value, as improved-diffusion does
        # (a one-step process, e.g. respaced to a single step, has no next value: use beta_0)
        first = self.posterior_variance[1:2] if T > 1 else betas[:1]
        self.posterior_log_variance_clipped = torch.log(torch.cat([first, self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * self.alpha_bar_prev.sqrt() / (1.0 - self.alpha_bar)
        self.posterior_mean_coef2 = (1.0 - self.alpha_bar_prev) * self.alphas.sqrt() / (1.0 - self.alpha_bar)

    @classmethod
    def from_schedule(cls, schedule: str, timesteps: int, variance: str = "fixed_small") -> GaussianDiffusion:
        return cls(make_betas(schedule, timesteps), variance=variance)

    def respaced(self, timesteps) -> GaussianDiffusion:
        """The process restricted to a subset of timesteps, with the betas recomputed.

        For kept indices s_0 < s_1 < ..., the new beta_i = 1 - alpha_bar[s_i] / alpha_bar[s_{i-1}]
        keeps every q(x_{s_i} | x_0) unchanged (improved-diffusion, "respace.py").
        """
        keep = sorted({int(s) for s in timesteps})
        if not keep or keep[0] < 0 or keep[-1] >= self.num_timesteps:
            raise ConfigError(f"respaced timesteps must lie in 0..{self.num_timesteps - 1}.")
        ab = self.alpha_bar[keep]
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        return GaussianDiffusion((1.0 - ab / ab_prev).numpy(), self.variance, self.timestep_map[keep])

    @property
    def learns_variance(self) -> bool:
        """Whether the network's output carries a variance (its second half of channels)."""
        return self.variance == "learned_range"

    def snr(self, t) -> torch.Tensor:
        """Signal-to-noise ratio SNR_t = alpha_bar_t / (1 - alpha_bar_t), float64 ``[B]``."""
        ab = self.alpha_bar.to(t.device)[t]
        return ab / (1.0 - ab)

    def loss_weight(self, t, parameterization: str, weighting: str = "none", gamma: float | None = None) -> torch.Tensor:
        """lambda_t, the weight of L_simple at step t for a ``parameterization`` network, float64 ``[B]``.

        Both weightings are defined on the eps-prediction loss || eps - eps_theta ||^2 and
        carried over to the other targets through their implicit weights
        (|| x0 - x0_theta ||^2 = || eps - eps_theta ||^2 / SNR and
        || v - v_theta ||^2 = || eps - eps_theta ||^2 (SNR + 1) / SNR), so a weighting means
        the same objective whatever the network predicts:

        * ``"none"``: 1 (plain L_simple of whatever the network predicts; DDPM eq. (14)).
        * ``"p2"``: 1 / (k + SNR_t)^gamma for eps (Choi et al. 2022, eq. (8), k = 1), times
          SNR_t for x0 and SNR_t / (SNR_t + 1) for v. gamma = 0 is the eps-prediction L_simple.
        * ``"min-snr"``: min(SNR_t, gamma) / SNR_t for eps, min(SNR_t, gamma) for x0 and
          min(SNR_t, gamma) / (SNR_t + 1) for v (Hang et al. 2023, Sec. 3.4).

        ``gamma`` None means the weighting's default (:data:`DEFAULT_WEIGHTING_GAMMA`).
        """
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}.")
        if parameterization not in PARAMETERIZATIONS:
            raise ConfigError(f"unknown parameterization {parameterization!r}; choose one of {', '.join(PARAMETERIZATIONS)}.")
        snr = self.snr(t)
        if weighting == "none":
            return torch.ones_like(snr)
        gamma = DEFAULT_WEIGHTING_GAMMA[weighting] if gamma is None else float(gamma)
        if weighting == "p2":
            w_eps = (P2_K + snr) ** -gamma
        else:
            w_eps = torch.clamp(gamma / snr, max=1.0)  # min(SNR, gamma) / SNR without 0/0
        # the eps-space weight seen by an x0 or v regression (see above)
        implicit = {"eps": torch.ones_like(snr), "x0": snr, "v": snr / (snr + 1.0)}[parameterization]
        return w_eps * implicit

    # ----- forward process -------------------------------------------------------------
    def q_mean_variance(self, x0, t):
        """Mean and variance of q(x_t | x_0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I); DDPM eq. (4)."""
        return _extract(self.sqrt_alpha_bar, t, x0) * x0, _extract(1.0 - self.alpha_bar, t, x0)

    def q_sample(self, x0, t, noise):
        """Draw x_t ~ q(x_t | x_0) with the given standard-normal ``noise``; DDPM eq. (4)."""
        return _extract(self.sqrt_alpha_bar, t, x0) * x0 + _extract(self.sqrt_one_minus_alpha_bar, t, x0) * noise

    def q_posterior_mean_variance(self, x0, xt, t):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0); DDPM eq. (6)-(7)."""
        mean = _extract(self.posterior_mean_coef1, t, xt) * x0 + _extract(self.posterior_mean_coef2, t, xt) * xt
        return mean, _extract(self.posterior_variance, t, xt), _extract(self.posterior_log_variance_clipped, t, xt)

    # ----- conversions between parameterisations ---------------------------------------
    def predict_x0_from_eps(self, xt, t, eps):
        return _extract(self.sqrt_recip_alpha_bar, t, xt) * xt - _extract(self.sqrt_recipm1_alpha_bar, t, xt) * eps

    def predict_eps_from_x0(self, xt, t, x0):
        return (_extract(self.sqrt_recip_alpha_bar, t, xt) * xt - x0) / _extract(self.sqrt_recipm1_alpha_bar, t, xt)

    def predict_x0_from_v(self, xt, t, v):
        """v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 (Salimans & Ho 2022)."""
        return _extract(self.sqrt_alpha_bar, t, xt) * xt - _extract(self.sqrt_one_minus_alpha_bar, t, xt) * v

    def target(self, parameterization: str, x0, t, noise):
        """The regression target of a network with the given parameterisation."""
        if parameterization == "eps":
            return noise
        if parameterization == "x0":
            return x0
        if parameterization == "v":
            return _extract(self.sqrt_alpha_bar, t, x0) * noise - _extract(self.sqrt_one_minus_alpha_bar, t, x0) * x0
        raise ConfigError(f"unknown parameterization {parameterization!r}; choose one of {', '.join(PARAMETERIZATIONS)}.")

    def model_variance(self, t, x, v: torch.Tensor | None = None):
        """Reverse variance Sigma_t and its log, broadcast to x; DDPM Sec. 3.2.

        For ``learned_range``, ``v`` (shaped like x, in [-1, 1] at the optimum but not
        clamped) is the network's variance output and, as in improved-diffusion's
        ``LEARNED_RANGE``, log Sigma = frac log beta_t + (1 - frac) log tilde(beta)_t with
        frac = (v + 1) / 2 (Nichol & Dhariwal 2021, eq. (15)); tilde(beta) is the clipped
        posterior variance, so at t = 0 the lower end is tilde(beta)_1.
        """
        if self.variance == "learned_range":
            if v is None:
                raise ValueError("a learned variance needs the network's variance output v")
            frac = (v + 1.0) / 2.0
            max_log = _extract(torch.log(self.betas), t, x)
            min_log = _extract(self.posterior_log_variance_clipped, t, x)
            log_var = frac * max_log + (1.0 - frac) * min_log
            return torch.exp(log_var), log_var
        if self.variance == "fixed_large":
            # beta_t, with beta_0 replaced by tilde(beta)_1 as in improved-diffusion so the
            # decoder's variance is not unduly wide
            var = torch.cat([self.posterior_variance[1:2], self.betas[1:]])
            return _extract(var, t, x), _extract(torch.log(var), t, x)
        return _extract(self.posterior_variance, t, x), _extract(self.posterior_log_variance_clipped, t, x)

    # ----- reverse process -------------------------------------------------------------
    def split_output(self, raw: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean part, variance part v or None) of a network output; with a learned variance
        the network outputs 2C channels (dim 1) and v is the second half (improved-diffusion)."""
        if not self.learns_variance:
            return raw, None
        C = xt.shape[1]
        if raw.shape[1] != 2 * C:
            raise ValueError(f"a learned-variance network must output {2 * C} channels (mean and variance), not {raw.shape[1]}")
        out, v = raw.split(C, dim=1)
        return out, v

    def p_mean_variance(self, denoiser: Denoiser, xt, t, clip_denoised: bool = True, **cond):
        """Mean and variance of p_theta(x_{t-1} | x_t), with the network's x0 and eps.

        The mean is the posterior mean at the predicted x0 (DDPM eq. (11) for eps models),
        which for an eps model without clipping equals
        1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps). The variance is
        :meth:`model_variance`: fixed, or from the network's second half of channels.
        """
        raw = denoiser(xt, self.timestep_map.to(xt.device)[t], **cond).to(xt.dtype)
        out, v = self.split_output(raw, xt)
        p = denoiser.parameterization
        if p == "eps":
            pred_x0 = self.predict_x0_from_eps(xt, t, out)
        elif p == "x0":
            pred_x0 = out
        else:
            pred_x0 = self.predict_x0_from_v(xt, t, out)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
        eps = out if (p == "eps" and not clip_denoised) else self.predict_eps_from_x0(xt, t, pred_x0)
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, xt, t)
        var, log_var = self.model_variance(t, xt, v)
        return {"mean": mean, "variance": var, "log_variance": log_var, "pred_x0": pred_x0, "eps": eps}

    # ----- losses ------------------------------------------------------------------------
    def vb_terms(self, denoiser: Denoiser, x0, xt, t, levels: int, clip_denoised: bool = True, **cond):
        """The bound's term at step t per example, in nats: L_{t} for t > 0, L_0 for t = 0.

        For t > 0: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) (DDPM eq. (5)).
        For t = 0: -log p(x_0 | x_1) with the discretised Gaussian decoder of K = ``levels``
        bins (DDPM eq. (13)); ``levels`` = 0 (continuous data, e.g. latents) makes it the Gaussian
        density itself, so the bound is on -log of a density. Returns (terms [B], pred_x0).
        """
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x0, xt, t)
        p = self.p_mean_variance(denoiser, xt, t, clip_denoised=clip_denoised, **cond)
        terms = normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"]).flatten(1).sum(1)
        first = t == 0
        if first.any():  # the decoder (float64) only where it is needed
            decoder = (discretized_gaussian_log_likelihood(x0[first], p["mean"][first], 0.5 * p["log_variance"][first], levels)
                       if levels else gaussian_log_density(x0[first], p["mean"][first], 0.5 * p["log_variance"][first]))
            nll = -decoder.flatten(1).sum(1)
            terms = terms.masked_scatter(first, nll.to(terms.dtype))
        return terms, p["pred_x0"]

    def prior_kl(self, x0):
        """L_T = KL(q(x_T | x_0) || N(0, I)) per example, in nats; no parameters."""
        t = torch.full((x0.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=x0.device)
        mean, var = self.q_mean_variance(x0.double(), t)
        return normal_kl(mean, var.log(), torch.zeros_like(mean), torch.zeros_like(mean)).flatten(1).sum(1)

    def training_losses(self, denoiser: Denoiser, x0, t, noise, loss: str = "simple", levels: int = 256,
                        weighting: str = "none", weighting_gamma: float | None = None, vlb_weight: float = 0.001,
                        **cond):
        """Per-example loss terms for a batch; ``loss`` is ``"simple"``, ``"hybrid"`` or ``"vlb"``.

        * ``simple``: L_simple, DDPM eq. (14) / Algorithm 1: lambda_t || target - net(x_t, t) ||^2,
          averaged over dimensions (target = eps, x0 or v; lambda_t from :meth:`loss_weight`,
          1 unless ``weighting`` says otherwise).
        * ``hybrid``: L_simple + lambda L_vlb (Nichol & Dhariwal 2021, eq. (16)), for a learned
          variance. L_vlb's term sees the network's mean output detached (a stop-gradient),
          so the bound trains only the variance and L_simple alone trains the mean. As in
          improved-diffusion's ``training_losses`` (``RESCALED_MSE``), the bound term is L_t
          in *bits* per dimension times T / 1000 there, i.e. lambda T L_t with lambda = 0.001
          here: ``vlb_weight`` is lambda.
        * ``vlb``: an unbiased estimate of the bound minus L_T: T * L_t per example, in nats
          per dimension, with t uniform (the bound's terms share one network). Mean and
          variance both get its gradient.

        Returns a dict of ``[B]`` tensors; ``"loss"`` is what is optimised, ``"mse"`` the
        unweighted L_simple and ``"vb"`` L_t in nats per dimension, where computed.
        """
        if loss not in LOSSES:
            raise ConfigError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}.")
        xt = self.q_sample(x0, t, noise)
        D = x0[0].numel()
        if loss == "vlb":
            terms, _ = self.vb_terms(denoiser, x0, xt, t, levels, clip_denoised=False, **cond)
            per_dim = terms.float() / D
            return {"loss": self.num_timesteps * per_dim, "vb": per_dim}
        if loss == "hybrid" and not self.learns_variance:
            raise ConfigError("{{diffusion.loss}} hybrid trains a learned variance with the bound; add {{diffusion.variance}} learned_range, or use {{diffusion.loss}} simple.")
        raw = denoiser(xt, self.timestep_map.to(x0.device)[t], **cond)
        out, v = self.split_output(raw, xt)
        target = self.target(denoiser.parameterization, x0, t, noise)
        mse = (out.float() - target.float()).pow(2).flatten(1).mean(1)
        weight = self.loss_weight(t, denoiser.parameterization, weighting, weighting_gamma).float()
        terms = {"loss": weight * mse, "mse": mse}
        if loss == "hybrid":
            assert v is not None  # hybrid requires learns_variance (checked above), so v is set
            # Nichol & Dhariwal Sec. 3.1: "we apply a stop-gradient to the mu_theta(x_t, t) output for
            # the L_vlb term"; improved-diffusion builds frozen_out = cat([out.detach(), v])
            frozen = torch.cat([out.detach(), v], dim=1)
            frozen_denoiser = Denoiser(lambda *_args, **_cond: frozen, denoiser.parameterization)
            vb, _ = self.vb_terms(frozen_denoiser, x0, xt, t, levels, clip_denoised=False)
            per_dim = vb.float() / D
            terms["vb"] = per_dim
            terms["loss"] = terms["loss"] + vlb_weight * self.num_timesteps * per_dim / math.log(2.0)
        return terms

    def bound_evaluations(self, t_samples: int | None = None) -> int:
        """Network evaluations per image of :meth:`variational_bound`: T, or K + 1 when stratified."""
        T = self.num_timesteps
        return T if t_samples is None or t_samples >= T - 1 else t_samples + 1

    @torch.no_grad()
    def variational_bound(
        self, denoiser: Denoiser, x0, levels: int, generator: torch.Generator | None = None,
        max_batch: int = 512, clip_denoised: bool = True, t_samples: int | None = None, progress=None, **cond,
    ):
        """The bound -log p(x0) <= L_T + sum_{t>0} L_t + L_0 per example, in nats.

        By default every one of the T terms is computed (no sampling of t). With
        ``t_samples = K`` the KL terms t = 1..T-1 are split into K equal strata and one t
        is drawn uniformly in each, per image: sum_k |stratum k| L_{t_k} is an unbiased
        estimate of their sum at K/T of the cost (L_T and L_0 stay exact). Several
        timesteps are stacked into one network batch of at most ``max_batch`` inputs; each
        term uses its own noise draw from ``generator``. ``progress(n)`` is called with the
        number of network inputs done after each call.

        Returns a dict of ``[B]`` float64 tensors: ``prior`` (L_T), ``diffusion`` (the KL
        terms, t = 1..T-1 here, L_1..L_{T-1} in the paper), ``decoder`` (L_0), ``total``;
        and ``terms`` [B, T] when every term was computed.
        """
        B = x0.shape[0]
        T = self.num_timesteps
        if self.bound_evaluations(t_samples) == T:
            ts = torch.arange(T).expand(B, T)  # [B, M]: the timesteps of each image
            weights = torch.ones(T, dtype=torch.float64).expand(B, T)
        else:
            assert t_samples is not None  # bound_evaluations(None) == T, so t_samples is set here
            if t_samples < 1:
                raise ConfigError(f"the number of sampled timesteps must be at least 1, not {t_samples}.")
            edges = torch.linspace(1, T, t_samples + 1, dtype=torch.float64).round().long()
            sizes = edges[1:] - edges[:-1]
            u = torch.rand(B, t_samples, generator=generator, dtype=torch.float64)
            picked = edges[:-1] + (u * sizes).long()  # uniform within each stratum
            ts = torch.cat([torch.zeros(B, 1, dtype=torch.long), picked], 1)
            weights = torch.cat([torch.ones(1, dtype=torch.float64), sizes.double()]).expand(B, t_samples + 1)
        M = ts.shape[1]
        terms = torch.zeros(B, M, dtype=torch.float64)
        per_call = max(1, max_batch // B)
        for start in range(0, M, per_call):
            cols = slice(start, min(start + per_call, M))
            n = cols.stop - start
            t = ts[:, cols].T.reshape(-1).to(x0.device)  # column-major: all images at one t, then the next
            x = x0.repeat(n, *([1] * (x0.dim() - 1)))
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x0.device)
            xt = self.q_sample(x, t, noise)
            rep_cond = {k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in cond.items()}
            vb, _ = self.vb_terms(denoiser, x, xt, t, levels, clip_denoised=clip_denoised, **rep_cond)
            terms[:, cols] = vb.double().reshape(n, B).T.cpu()
            if progress is not None:
                progress(n * B)
        prior = self.prior_kl(x0).cpu()
        decoder = terms[:, 0]
        diffusion = (weights[:, 1:] * terms[:, 1:]).sum(1)
        out = {"prior": prior, "diffusion": diffusion, "decoder": decoder, "total": prior + diffusion + decoder}
        if M == T:
            out["terms"] = terms
        return out
