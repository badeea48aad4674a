"""The restricted Boltzmann machine (Bernoulli-Bernoulli) of the lecture notes.

Visible v in {0,1}^V, hidden h in {0,1}^H, energy E(v, h) = -b.v - c.h - v^T W h, and
p(v, h) = exp(-E) / Z. No connections within a layer, so p(h | v) and p(v | h) factorise:
p(h_j = 1 | v) = sigmoid(c_j + v.W_j), p(v_i = 1 | h) = sigmoid(b_i + W_i.h), which is what
block Gibbs sampling alternates. Summing h out gives the free energy
F(v) = -b.v - sum_j softplus(c_j + v.W_j), with p(v) = exp(-F(v)) / Z.

Training follows the log-likelihood gradient d log p(v)/d theta = -dF(v)/d theta +
E_model[dF/d theta], the model expectation estimated by contrastive divergence (CD-k:
k Gibbs steps from the data) or persistent CD (chains carried across updates). log Z is
exact by enumeration for tiny models and estimated by annealed importance sampling
(Neal 2001; Salakhutdinov & Murray 2008) otherwise, which gives a test log-likelihood.

Shapes: v [B, V], h [B, H]; W [V, H], b [V], c [H]. float64 throughout the tests.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F


class RBM(torch.nn.Module):
    def __init__(self, visible: int, hidden: int, init_std: float = 0.01, generator: torch.Generator | None = None):
        super().__init__()
        self.W = torch.nn.Parameter(torch.randn(visible, hidden, generator=generator) * init_std)
        self.b = torch.nn.Parameter(torch.zeros(visible))
        self.c = torch.nn.Parameter(torch.zeros(hidden))

    @property
    def visible(self) -> int:
        return self.W.shape[0]

    @property
    def hidden(self) -> int:
        return self.W.shape[1]

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return -(v @ self.b) - (h @ self.c) - ((v @ self.W) * h).sum(-1)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = -b.v - sum_j softplus(c_j + v.W_j): -log of the unnormalised p(v)."""
        return -(v @ self.b) - F.softplus(self.c + v @ self.W).sum(-1)

    def p_h(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.c + v @ self.W)

    def p_v(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.b + h @ self.W.T)

    def gibbs(self, v: torch.Tensor, steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``steps`` rounds of block Gibbs sampling v -> h -> v."""
        for _ in range(steps):
            h = torch.bernoulli(self.p_h(v), generator=generator)
            v = torch.bernoulli(self.p_v(h), generator=generator)
        return v

    @torch.no_grad()
    def cd_gradients(self, v_data: torch.Tensor, v_model: torch.Tensor) -> dict[str, torch.Tensor]:
        """The gradient of the mean log-likelihood with the model term from samples ``v_model``.

        Uses E[h | v] in both terms (Rao-Blackwellised): dW = <v p(h|v)>_data - <v p(h|v)>_model.
        """
        ph_d, ph_m = self.p_h(v_data), self.p_h(v_model)
        return {"W": v_data.T @ ph_d / len(v_data) - v_model.T @ ph_m / len(v_model),
                "b": v_data.mean(0) - v_model.mean(0), "c": ph_d.mean(0) - ph_m.mean(0)}

    # ----- the partition function ----------------------------------------------------------------
    @torch.no_grad()
    def log_z_exact(self) -> float:
        """log Z by summing exp(-F(v)) over all 2^V visible states (for V <= 20)."""
        if self.visible > 20:
            raise ValueError(f"exact log Z enumerates 2^{self.visible} states; use log_z_ais for more than 20 visible units")
        states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=self.visible)), dtype=self.W.dtype)
        return torch.logsumexp(-self.free_energy(states), 0).item()

    @torch.no_grad()
    def exact_gradients(self, v_data: torch.Tensor) -> dict[str, torch.Tensor]:
        """The true log-likelihood gradient, the model expectation by enumeration (tiny models)."""
        states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=self.visible)), dtype=self.W.dtype)
        p = torch.softmax(-self.free_energy(states), 0)
        ph = self.p_h(states)
        ph_d = self.p_h(v_data)
        return {"W": v_data.T @ ph_d / len(v_data) - (states * p[:, None]).T @ ph,
                "b": v_data.mean(0) - p @ states, "c": ph_d.mean(0) - p @ ph}

    @torch.no_grad()
    def log_z_ais(self, chains: int = 100, betas: int = 10000, base_b: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, progress: bool = False) -> tuple[float, float]:
        """log Z by annealed importance sampling; returns (estimate, its standard error).

        Intermediate distributions p_k(v) ~ exp((1 - beta_k) b0.v) exp(-beta_k F(v)) (hidden units
        summed out) run from independent visible units with biases ``base_b`` (default 0) at
        beta = 0, where Z_0 = 2^H prod_i (1 + e^{b0_i}), to the RBM at beta = 1; each transition is
        one Gibbs step that leaves p_k invariant. The error is the delta-method standard error
        of the log of the mean importance weight over ``chains``.
        """
        V, H = self.visible, self.hidden
        b0 = torch.zeros(V, dtype=self.W.dtype) if base_b is None else base_b.to(self.W.dtype)
        beta = torch.linspace(0, 1, betas + 1, dtype=self.W.dtype)
        v = torch.bernoulli(torch.sigmoid(b0).expand(chains, V), generator=generator)
        log_w = torch.zeros(chains, dtype=self.W.dtype)

        def log_p(v, bk):  # log of the unnormalised marginal of v at inverse temperature bk
            return (1 - bk) * (v @ b0) + bk * (v @ self.b) + F.softplus(bk * (self.c + v @ self.W)).sum(-1)

        steps = range(1, betas + 1)
        if progress:
            from genlab.progress import progress_bar

            steps = progress_bar(steps, desc="AIS log Z", leave=False)
        for k in steps:
            log_w += log_p(v, beta[k]) - log_p(v, beta[k - 1])
            bk = beta[k]
            h = torch.bernoulli(torch.sigmoid(bk * (self.c + v @ self.W)), generator=generator)
            v = torch.bernoulli(torch.sigmoid((1 - bk) * b0 + bk * (self.b + h @ self.W.T)), generator=generator)
        log_z0 = F.softplus(b0).sum().item() + H * math.log(2.0)
        est = torch.logsumexp(log_w, 0).item() - math.log(chains) + log_z0
        w = torch.exp(log_w - log_w.max())
        se = (w.std() / math.sqrt(chains) / w.mean()).item()  # delta method: se of log(mean w)
        return est, se
