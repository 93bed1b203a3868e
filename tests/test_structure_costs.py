"""MAC-weighted γ: each gate's multiplier follows the MACs its structures cost."""

import pytest
import torch

import sss
from sss.measure import mac_weights, structure_macs
from sss.optim import factor_param_groups


def test_structure_macs_match_a_hand_count():
    x = torch.zeros(1, 1, 28, 28)
    gated = sss.attach(sss.models.create("lenet5"), x, ("channel",))
    costs = structure_macs(gated, x)
    # conv1 channel: 24x24 outputs x 25 taps, plus its share of conv2 (50 filters x 25 taps x 8x8)
    assert costs["features.0.gate"] == pytest.approx(24 * 24 * 25 + 50 * 25 * 8 * 8)
    assert costs["classifier.1.gate"] == pytest.approx(800 + 10)  # one hidden neuron: its row and column


def test_mac_weights_average_one_and_scale_gamma():
    x = torch.zeros(1, 1, 28, 28)
    gated = sss.attach(sss.models.create("lenet5"), x, ("channel",))
    weights = mac_weights(gated, x)
    sizes = {g.name: g.weight.numel() for g in sss.gates(gated)}
    assert sum(weights[n] * sizes[n] for n in sizes) / sum(sizes.values()) == pytest.approx(1.0)
    assert weights["features.0.gate"] > weights["classifier.1.gate"]
    groups = factor_param_groups(gated, 0.1, weights)
    assert len(groups) == 3 and groups[0]["gamma"] == pytest.approx(0.1 * weights["features.0.gate"])


def test_power_zero_is_uniform_gamma():
    x = torch.zeros(1, 1, 28, 28)
    gated = sss.attach(sss.models.create("lenet5"), x, ("channel",))
    assert set(mac_weights(gated, x, power=0.0).values()) == {1.0}


def test_one_price_compares_kinds_by_the_macs_each_structure_frees():
    """``per_kind=False`` (``gamma_price: macs``): every factor's γ is its structure's MACs over the
    mean of all factors, so a head costs what it frees next to a neuron and an embedding channel
    (normalised per kind, each kind would average 1 whatever its structures cost)."""
    x = torch.zeros(1, 1, 28, 28)
    gated = sss.attach(sss.models.create("vit_fmnist", embed_dim=32, depth=2), x, ("embedding", "head", "channel"))
    costs = structure_macs(gated, x)
    one = mac_weights(gated, x, per_kind=False)
    sizes = {g.name: g.weight.numel() for g in sss.gates(gated)}
    assert sum(one[n] * sizes[n] for n in sizes) / sum(sizes.values()) == pytest.approx(1.0)
    head, neuron = "blocks.0.attn.qkv.gate", "blocks.0.mlp.fc1.gate"
    assert one[head] / one[neuron] == pytest.approx(costs[head] / costs[neuron])
    per_kind = mac_weights(gated, x)
    assert per_kind[head] == pytest.approx(1.0) != one[head]  # alone in its kind's average, per block


def test_one_price_needs_one_gamma():
    from sss.train import TrainConfig

    with pytest.raises(ValueError, match="gamma as one number"):
        TrainConfig(structures=["head", "channel"], gamma={"head": 0.1, "channel": 0.01}, gamma_price="macs").validate()
    TrainConfig(structures=["head", "channel"], gamma=0.01, gamma_price="macs").validate()
