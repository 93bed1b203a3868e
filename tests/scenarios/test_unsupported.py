"""What cannot be gated is skipped with a reason, or refused with a message naming the fix."""

import pytest
import torch
from torch import nn

import sss
from sss.structures.channels import find_channel_sites


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1))


class Dynamic(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else x


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 2, 1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


def test_concat_is_skipped_with_reason():
    sites, skipped = find_channel_sites(Concat(), torch.randn(1, 3, 4, 4))
    assert sites == []
    assert any(s.startswith("a:") and "cat" in s for s in skipped)
    with pytest.raises(sss.UnsupportedModelError, match="no removable channels"):
        sss.attach(Concat(), torch.randn(1, 3, 4, 4), structures=("channel",))


def test_untraceable_model_names_the_fix():
    with pytest.raises(sss.UnsupportedModelError, match=r"torch\.fx cannot trace Dynamic"):
        sss.attach(Dynamic(), torch.randn(1, 3, 4, 4), structures=("channel",))


def test_shared_activation_is_not_gated():
    sites, skipped = find_channel_sites(Shared(), torch.randn(1, 3, 4, 4))
    assert sites == []
    assert any("used more than once" in s for s in skipped)


def test_channel_needs_example_inputs():
    with pytest.raises(ValueError, match="example_inputs"):
        sss.attach(sss.models.create("lenet5"), structures=("channel",))


def test_all_zero_layer_keeps_one_channel():
    x = torch.randn(2, 1, 28, 28)
    gated = sss.attach(sss.models.create("lenet5"), x, structures=("channel",)).eval()
    with torch.no_grad():
        sss.gates(gated)[1].weight.zero_()
    compact = sss.prune(gated)
    assert compact.features[3].out_channels == 1
    with torch.no_grad():
        assert torch.allclose(gated(x), compact(x), atol=1e-5)
