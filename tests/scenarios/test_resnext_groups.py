"""ResNeXt: group factors on each grouped 3x3 conv, jointly with block and channel factors."""

import pytest
import torch

import sss

from .helpers import assert_exact_and_smaller, random_gated

SMALL = {"cardinality": 4, "base_width": 2, "widen": 1}


@pytest.mark.parametrize("structures", [("group",), ("block", "group"), ("block", "group", "channel")])
def test_resnext_groups(structures):
    x = torch.randn(2, 3, 8, 8)
    model = sss.models.create("resnext29", **SMALL)
    gated = random_gated(model, x, structures, seed=8)
    kinds = [g.kind for g in sss.gates(gated)]
    assert kinds.count("group") == 9 and kinds.count("block") == 9 * ("block" in structures)
    compact = assert_exact_and_smaller(gated, x)
    for name, m in compact.named_modules():
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1:  # surviving grouped convs stay consistent
            assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0
            assert m.groups <= 4 and name.endswith("branch.3")


def test_group_factor_removes_whole_groups(tmp_path):
    x = torch.randn(2, 3, 8, 8)
    gated = sss.attach(sss.models.create("resnext29", **SMALL), x, structures=("group",)).eval()
    ref = sss.gates(gated)[0]
    assert ref.weight.numel() == 4
    with torch.no_grad():
        ref.weight[1:3] = 0.0
    compact = sss.prune(gated)
    conv = compact.layer1[0].branch[3]
    assert (conv.groups, conv.in_channels, conv.out_channels) == (2, 4, 4)
    assert compact.layer1[0].branch[0].out_channels == 4 and compact.layer1[0].branch[6].in_channels == 4
    with torch.no_grad():
        assert torch.allclose(gated(x), compact(x), atol=1e-5, rtol=1e-5)
    sss.save(compact, tmp_path / "compact")  # the JSON spec rebuilds the shrunken grouped conv
    with torch.no_grad():
        assert torch.equal(sss.load(tmp_path / "compact")(x), compact(x))
