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
