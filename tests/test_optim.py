"""APG against a hand-computed trace, exact zeros, ISTA, L1-SGD and the parameter groups."""

import pytest
import torch
from torch import nn

import sss
from sss.optim import weight_param_groups


def _apg_reference(w, grads, lr, gamma, mu, nonneg=True):
    """Scalar arithmetic of the official MXNet update, written out by hand."""
    mom, out = 0.0, []
    for g in grads:
        mom = mu * mom
        z = w - lr * g
        z = (1 if z > 0 else -1) * max(abs(z) - lr * gamma, 0.0)
        mom = z - w + mom
        w = z + mu * mom
        if nonneg:
            w = max(w, 0.0)
        out.append(w)
    return out


def test_apg_matches_hand_trace():
    # Worked by hand for the first two steps (lr=0.1, γ=0.5, μ=0.9, λ0=1):
    #   step 1: z=1-0.1*0.2=0.98 → S: 0.93;  v=0.93-1=-0.07;  λ=0.93+0.9*(-0.07)=0.867
    #   step 2: v=-0.063; z=0.867-0.1*(-0.1)=0.877 → S: 0.827; v=0.827-0.867-0.063=-0.103;
    #           λ=0.827+0.9*(-0.103)=0.7343
    grads = [0.2, -0.1, 0.4, 0.0, 0.3]
    p = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = sss.APG([p], lr=0.1, gamma=0.5, momentum=0.9)
    got = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        got.append(p.item())
    assert got[0] == pytest.approx(0.867, abs=1e-12)
    assert got[1] == pytest.approx(0.7343, abs=1e-12)
    assert got == pytest.approx(_apg_reference(1.0, grads, 0.1, 0.5, 0.9), abs=1e-12)


def test_apg_reaches_exact_zero_and_stays_nonnegative():
    p = nn.Parameter(torch.ones(4))
    opt = sss.APG([p], lr=0.1, gamma=1.0)
    for _ in range(60):
        p.grad = torch.tensor([0.0, 0.01, -0.01, 0.05])
        opt.step()
    assert torch.all(p == 0)  # exact zeros, not merely small
    assert p.min() >= 0


def test_apg_without_nonneg_can_go_negative():
    p = nn.Parameter(torch.tensor([0.05]))
    opt = sss.APG([p], lr=0.1, gamma=0.0, momentum=0.0, nonneg=False)
    p.grad = torch.tensor([1.0])
    opt.step()
    assert p.item() == pytest.approx(-0.05)


def test_threshold_follows_lr_schedule():
    p = nn.Parameter(torch.tensor([1.0]))
    opt = sss.ISTA([p], lr=0.1, gamma=1.0)
    p.grad = torch.zeros(1)
    opt.step()
    assert p.item() == pytest.approx(0.9)
    opt.param_groups[0]["lr"] = 0.01  # what a scheduler does
    opt.step()
    assert p.item() == pytest.approx(0.89)


def test_ista_really_updates():
    # The official code silently skips λ when momentum is 0; ours takes the proximal step.
    p = nn.Parameter(torch.tensor([1.0, 0.02]))
    opt = sss.ISTA([p], lr=0.1, gamma=0.5)
    p.grad = torch.tensor([0.5, 0.0])
    opt.step()
    assert p.tolist() == pytest.approx([0.9, 0.0])


def test_apg_prox_is_the_soft_threshold():
    p = torch.nn.Parameter(torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5]))
    opt = sss.APG([p], lr=1.0, gamma=0.5, momentum=0.0, nonneg=False)
    p.grad = torch.zeros(5)
    opt.step()
    assert p.tolist() == [-1.5, 0.0, 0.0, 0.0, 1.0]


def test_l1sgd_subgradient_step():
    p = nn.Parameter(torch.tensor([0.5, -0.5]))
    opt = sss.L1SGD([p], lr=0.1, gamma=0.2, momentum=0.0)
    p.grad = torch.tensor([0.1, 0.1])
    opt.step()
    assert p.tolist() == pytest.approx([0.5 - 0.1 * 0.3, -0.5 - 0.1 * (0.1 - 0.2)])


def test_weight_decay_rules_and_factor_exclusion():
    gated = sss.attach(sss.models.create("resnet20"))
    decay, no_decay = weight_param_groups(gated, 1e-4)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    block = gated.layer1[0]
    assert id(block.branch[0].weight) in ids(decay["params"])  # conv weight
    assert id(block.branch[1].weight) in ids(decay["params"])  # BN γ, as the official code
    assert id(block.branch[1].bias) in ids(no_decay["params"])  # BN β
    assert id(gated.fc.bias) in ids(no_decay["params"])
    assert no_decay["weight_decay"] == 0.0
    factor_ids = ids(sss.structures.factor_parameters(gated))
    assert not factor_ids & (ids(decay["params"]) | ids(no_decay["params"]))
    weights, factors = sss.build_optimizers(gated, lr=0.1, gamma=0.01)
    assert isinstance(factors, sss.APG) and ids(factors.param_groups[0]["params"]) == factor_ids
    assert weights.defaults["nesterov"] is True
    total = len(decay["params"]) + len(no_decay["params"]) + len(factor_ids)
    assert total == len(list(gated.parameters()))


@pytest.mark.parametrize(("method", "cls"), [("apg", sss.APG), ("ista", sss.ISTA), ("sgd", sss.L1SGD)])
def test_build_optimizers_methods(method, cls):
    gated = sss.attach(sss.models.create("resnet20"))
    assert isinstance(sss.build_optimizers(gated, lr=0.1, method=method)[1], cls)


def test_invalid_hyperparameters():
    with pytest.raises(ValueError, match="momentum"):
        sss.APG([nn.Parameter(torch.ones(1))], lr=0.1, gamma=0.1, momentum=1.0)


def test_gamma_per_structure_kind():
    x = torch.zeros(1, 3, 16, 16)
    gated = sss.attach(sss.models.create("resnet20"), x, structures=("block", "channel"))
    _, factors = sss.build_optimizers(gated, lr=0.1, gamma={"block": 0.2, "channel": 0.01})
    assert sorted(g["gamma"] for g in factors.param_groups) == [0.01, 0.2]
    for p in sss.structures.factor_parameters(gated):
        p.grad = torch.zeros_like(p)
    factors.step()
    # One APG step from λ=1 with zero gradient: λ = (1 - lr·γ) - μ·lr·γ.
    block = gated.layer1[0].gate.weight
    channel = sss.gates(gated)[0].weight
    assert float(block) == pytest.approx(1 - 0.02 - 0.9 * 0.02)
    assert float(channel[0]) == pytest.approx(1 - 0.001 - 0.9 * 0.001)
    with pytest.raises(ValueError, match="'channel' factors"):
        sss.build_optimizers(gated, lr=0.1, gamma={"block": 0.2})
