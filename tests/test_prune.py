"""Block removal is exact, physical and recorded, for every zoo model and gate pattern."""

import copy

import pytest
import torch
from torch import nn

import sss
from conftest import randomise
from sss.structures import ResidualBlock

# The zoo's ResidualBlock ResNets (the ImageNet ones have plain, traced blocks: tests/scenarios).
RESNETS = [n for n in sss.models.list_models() if "resnet" in n and n != "resnet50"]
CASES = [(n, s) for n in RESNETS for s in ((None,) if n.startswith("preact") else ("projection", "pad"))]


def _gated(name, shortcut, seed=0, zero_prob=0.5):
    kwargs = {"shortcut": shortcut} if shortcut else {}
    return randomise(sss.attach(sss.models.create(name, num_classes=10, **kwargs)), zero_prob, seed)


def _rel_err(a, b):
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize(("name", "shortcut"), CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_compact_equals_gated(name, shortcut, seed):
    gated = _gated(name, shortcut, seed)
    compact = sss.prune(gated)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert _rel_err(gated(x), compact(x)) <= 1e-5
    zeros = sum(g.num_zero for g in sss.gates(gated))
    assert zeros > 0
    # Physically smaller: no gates, one ResidualBlock fewer per zero factor, fewer MACs.
    assert sss.gates(compact) == []
    n_blocks = sum(isinstance(m, ResidualBlock) for m in compact.modules())
    assert n_blocks == len(sss.gates(gated)) - zeros
    assert len(sss.structures.removed_blocks(compact)) == zeros
    example = torch.zeros(1, 3, 32, 32)
    assert sss.count(compact, example)[0] < sss.count(gated, example)[0]


@pytest.mark.parametrize("shortcut", ["projection", "pad"])
def test_all_blocks_removed_leaves_shortcuts(shortcut):
    gated = _gated("resnet20", shortcut, zero_prob=1.0)
    compact = sss.prune(gated)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _rel_err(gated(x), compact(x)) <= 1e-5
    assert not any(isinstance(m, ResidualBlock) for m in compact.modules())
    # Only the stage-changing shortcuts remain: two 1x1 projections, or nothing but padding.
    convs = [m for m in compact.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == (3 if shortcut == "projection" else 1)


def test_no_zero_folds_factors_and_keeps_structure():
    gated = _gated("resnet20", "projection", zero_prob=0.0)
    compact = sss.prune(gated)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _rel_err(gated(x), compact(x)) <= 1e-5
    assert sum(isinstance(m, ResidualBlock) for m in compact.modules()) == 9
    assert sss.structures.removed_blocks(compact) == []


def test_surviving_names_keep_their_index():
    gated = sss.attach(sss.models.create("resnet20"))
    with torch.no_grad():
        gated.layer1[1].gate.weight.zero_()
    compact = sss.prune(gated)
    assert [n for n, _ in compact.layer1.named_children()] == ["0", "2"]
    assert "layer1.2.branch.0.weight" in compact.state_dict()


def test_prune_leaves_the_gated_model_untouched():
    gated = _gated("resnet20", "pad")
    before = {k: v.clone() for k, v in gated.state_dict().items()}
    sss.prune(gated)
    after = gated.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_threshold_and_zero_small_factors():
    gated = sss.attach(sss.models.create("resnet20"))
    with torch.no_grad():
        gated.layer2[1].gate.weight.fill_(0.004)
        gated.layer3[2].gate.weight.fill_(-0.003)
    assert sss.structures.removed_blocks(sss.prune(gated)) == []
    assert sss.zero_small_factors(gated, 0.005) == 2
    assert sss.structures.removed_blocks(sss.prune(gated)) == ["layer2.1", "layer3.2"]


def test_attach_errors_are_clear():
    with pytest.raises(sss.UnsupportedModelError, match="ResidualBlock"):
        sss.attach(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(sss.UnsupportedModelError, match="no removable group structures"):
        sss.attach(sss.models.create("resnet20"), torch.randn(1, 3, 8, 8), structures=("group",))
    with pytest.raises(ValueError, match="group factors need example_inputs"):
        sss.attach(sss.models.create("resnet20"), structures=("group",))
    with pytest.raises(sss.UnsupportedModelError, match="no residual block to gate"):
        sss.attach(sss.models.create("lenet5"), structures=("block",))
    with pytest.raises(ValueError, match="unknown structure"):
        sss.attach(sss.models.create("resnet20"), structures=("neuron",))


def test_gates_listing():
    gated = sss.attach(sss.models.create("resnet20"))
    refs = sss.gates(gated)
    assert [r.name for r in refs[:2]] == ["layer1.0.gate", "layer1.1.gate"]
    assert {r.kind for r in refs} == {"block"}
    assert all(isinstance(r.weight, nn.Parameter) and float(r.weight) == 1.0 for r in refs)


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet164"])
def test_fused_gate_matches_output_scaling(name):
    # The gate scales the branch's last layer; it must equal multiplying the branch output,
    # in the forward pass and in the gradients of λ and the weights (training mode: batch BN).
    gated = sss.attach(sss.models.create(name, num_classes=4)).train()
    block = next(m for m in gated.modules() if isinstance(m, ResidualBlock))
    with torch.no_grad():
        block.gate.weight.fill_(0.37)
    x = torch.randn(4, block.branch[0].in_channels, 8, 8, requires_grad=True)
    fused = block.gated_branch(x)
    reference_block = copy.deepcopy(block)
    reference = reference_block.branch(x) * reference_block.gate.weight
    assert torch.allclose(fused, reference, atol=1e-6)
    g = torch.randn_like(fused)
    (fused * g).sum().backward()
    (reference * g).sum().backward()
    assert torch.allclose(block.gate.weight.grad, reference_block.gate.weight.grad, rtol=1e-4)
    w_fused, w_ref = block.branch[0].weight.grad, reference_block.branch[0].weight.grad
    assert float((w_fused - w_ref).abs().max()) <= 1e-5 * float(w_ref.abs().max())
