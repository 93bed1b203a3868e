"""What cannot be gated is skipped with a reason, or refused with a message naming the fix."""

import pytest
import torch
from torch import nn

import sss


class WrongInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x)


class SharedConv(nn.Module):
    """conv2 is applied twice: its filters serve two places, so its width is not free."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 2, 1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.conv3(self.act(self.conv2(self.act(self.conv2(self.act(self.conv1(x)))))))


class ConstantAdd(nn.Module):
    """``relu(conv1(x)) + 1`` feeds conv2: a zero channel becomes 1, so conv1 is not removable."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), \
            nn.Conv2d(4, 2, 1)  # fmt: skip

    def forward(self, x):
        return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)) + 1)))


def test_model_that_fails_on_the_example_names_the_fix():
    with pytest.raises(sss.UnsupportedModelError, match=r"WrongInput failed in conv \(Conv2d\): .*ignore="):
        sss.attach(WrongInput(), torch.randn(1, 5, 4, 4), structures=("channel",))


def test_layer_used_twice_is_skipped_with_reason():
    report = sss.find_structures(SharedConv(), torch.randn(1, 3, 4, 4))
    assert any("conv2 is used 2 times" in s for s in report.skipped)
    assert report.names("channel") == []  # conv1 feeds conv2 too, so it is coupled to the shared layer
    assert report.missing == ["channel"]


def test_op_that_does_not_keep_zeros_is_found_by_the_exactness_check():
    x = torch.randn(2, 3, 6, 6)
    report = sss.find_structures(ConstantAdd(), x)
    assert report.names("channel") == ["conv2"]
    assert any(s.startswith("conv1: removing its channel structures changes the output") for s in report.skipped)


def test_no_removable_channels_is_refused():
    with pytest.raises(sss.UnsupportedModelError, match="no removable channel structures"):
        sss.attach(nn.Sequential(nn.Conv2d(3, 2, 1)), torch.randn(1, 3, 4, 4), structures=("channel",))


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
