"""The RBM against brute force on tiny models: free energy, conditionals, log Z, the gradient."""

import itertools

import pytest
import torch

from genlab.energy import RBM


def tiny(visible=6, hidden=3, seed=0, std=1.0):
    g = torch.Generator().manual_seed(seed)
    rbm = RBM(visible, hidden, init_std=std, generator=g).double()
    with torch.no_grad():
        rbm.b.copy_(torch.randn(visible, generator=g, dtype=torch.float64) * 0.5)
        rbm.c.copy_(torch.randn(hidden, generator=g, dtype=torch.float64) * 0.5)
    return rbm


def all_states(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def test_free_energy_and_conditionals_match_sums_over_the_hidden_units():
    rbm = tiny()
    vs, hs = all_states(rbm.visible), all_states(rbm.hidden)
    e = rbm.energy(vs[:, None, :].expand(-1, len(hs), -1), hs[None].expand(len(vs), -1, -1))  # [2^V, 2^H]
    torch.testing.assert_close(rbm.free_energy(vs), -torch.logsumexp(-e, 1))
    p_h_given_v = torch.softmax(-e, 1)  # [2^V, 2^H]
    torch.testing.assert_close(rbm.p_h(vs), p_h_given_v @ hs)
    p_v_given_h = torch.softmax(-e, 0)
    torch.testing.assert_close(rbm.p_v(hs), p_v_given_h.T @ vs)
    assert rbm.log_z_exact() == pytest.approx(torch.logsumexp(-e.flatten(), 0).item(), abs=1e-10)


def test_ais_matches_the_exact_partition_function():
    rbm = tiny(visible=10, hidden=4, seed=1)
    exact = rbm.log_z_exact()
    est, se = rbm.log_z_ais(chains=200, betas=2000, generator=torch.Generator().manual_seed(0))
    assert abs(est - exact) < max(4 * se, 0.02), (est, exact, se)


def test_the_cd_gradient_is_the_exact_gradient_when_its_samples_come_from_the_model():
    rbm = tiny(seed=2)
    g = torch.Generator().manual_seed(0)
    data = torch.bernoulli(torch.full((40, rbm.visible), 0.3, dtype=torch.float64), generator=g)
    exact = rbm.exact_gradients(data)
    # long Gibbs chains started at the data (CD-k with large k) reach the model distribution
    v_model = rbm.gibbs(data.repeat(500, 1), steps=30, generator=g)
    cd = rbm.cd_gradients(data, v_model)
    for k in exact:
        torch.testing.assert_close(cd[k], exact[k], atol=0.02, rtol=0)
    # and the gradient is that of the mean log-likelihood, checked by autograd through log Z
    params = [rbm.W, rbm.b, rbm.c]
    loglik = -rbm.free_energy(data).mean() - torch.logsumexp(-rbm.free_energy(all_states(rbm.visible)), 0)
    grads = torch.autograd.grad(loglik, params)
    for name, gr in zip("Wbc", grads, strict=True):
        torch.testing.assert_close(exact[name], gr)


def test_exact_log_z_refuses_large_models():
    with pytest.raises(ValueError, match="log_z_ais"):
        RBM(21, 2).log_z_exact()
