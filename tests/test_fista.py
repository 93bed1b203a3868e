"""FISTA: a hand-computed trace, a lasso with a known solution, restart and step interval."""

import math

import pytest
import torch
from torch import nn

import sss


def test_fista_matches_hand_trace():
    # lr=0.1, γ=0.5, x0=1. Step 1 (grad 0.2): x1 = S_0.05(0.98) = 0.93, t: 1 → 1.618034, y = x1.
    # Step 2 (grad -0.1): x2 = S_0.05(0.94) = 0.89, t → 2.193527,
    #                      y = 0.89 + (0.618034 / 2.193527)(0.89 - 0.93) = 0.878730.
    p = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = sss.optim.FISTA([p], lr=0.1, gamma=0.5)
    for g, expected in ((0.2, 0.93), (-0.1, 0.878730)):
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        assert p.item() == pytest.approx(expected, abs=1e-6)


def _lasso(seed=0, n=40, d=12):
    gen = torch.Generator().manual_seed(seed)
    a, _ = torch.linalg.qr(torch.randn(n, d, generator=gen, dtype=torch.float64))  # orthonormal columns
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    return a, b


@pytest.mark.parametrize("nonneg", [False, True])
def test_fista_solves_lasso_with_known_solution(nonneg):
    # With AᵀA = I the lasso 0.5‖Ax − b‖² + γ‖x‖₁ is solved by S_γ(Aᵀb) (clamped at 0 if x ≥ 0).
    a, b = _lasso()
    gamma = 0.3
    expected = torch.sign(a.T @ b) * torch.clamp((a.T @ b).abs() - gamma, min=0)
    if nonneg:
        expected = expected.clamp(min=0)
    x = nn.Parameter(torch.zeros(a.shape[1], dtype=torch.float64))
    opt = sss.optim.FISTA([x], lr=0.5, gamma=gamma, nonneg=nonneg)
    for _ in range(300):
        opt.zero_grad()
        (0.5 * (a @ x - b).pow(2).sum()).backward()
        opt.step()
    assert torch.allclose(x.detach(), expected, atol=1e-8)
    assert int((x == 0).sum()) == int((expected == 0).sum()) > 0  # exact zeros where the solution has them


def _objective_after(opt_cls, steps, a, b, gamma, **kw):
    x = nn.Parameter(torch.zeros(a.shape[1], dtype=torch.float64))
    opt = opt_cls([x], lr=1 / float(torch.linalg.matrix_norm(a, 2)) ** 2, gamma=gamma, **kw)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (a @ x - b).pow(2).sum()).backward()
        opt.step()
    with torch.no_grad():
        return float(0.5 * (a @ x - b).pow(2).sum() + gamma * x.abs().sum())


def test_fista_beats_ista_on_an_ill_conditioned_lasso():
    gen = torch.Generator().manual_seed(1)
    scales = torch.logspace(0, -2, 30, dtype=torch.float64)
    a = torch.randn(60, 30, generator=gen, dtype=torch.float64) @ torch.diag(scales)
    b = torch.randn(60, generator=gen, dtype=torch.float64)
    optimum = _objective_after(sss.optim.FISTA, 20000, a, b, 0.05, nonneg=False)
    fista = _objective_after(sss.optim.FISTA, 100, a, b, 0.05, nonneg=False) - optimum
    ista = _objective_after(sss.ISTA, 100, a, b, 0.05, nonneg=False) - optimum
    restarted = _objective_after(sss.optim.FISTA, 100, a, b, 0.05, nonneg=False, restart=True) - optimum
    assert 0 <= fista < ista / 2
    assert 0 <= restarted <= fista * 1.5


def test_interval_updates_every_nth_step():
    p = nn.Parameter(torch.tensor([1.0]))
    opt = sss.optim.FISTA([p], lr=0.1, gamma=0.0, interval=3)
    values = []
    for _ in range(7):
        p.grad = torch.tensor([1.0])
        opt.step()
        values.append(round(p.item(), 6))
    assert values[0] == values[1] == values[2] != values[3] == values[4] == values[5] != values[6]
    assert math.isclose(values[0], 0.9, abs_tol=1e-6)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="interval"):
        sss.optim.FISTA([nn.Parameter(torch.ones(1))], lr=0.1, gamma=0.1, interval=0)
