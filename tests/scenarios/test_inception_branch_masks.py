"""GAL's branch masks: one factor per Inception branch; a zero branch leaves the concat and its
channels leave every layer that reads it."""

import pytest
import torch

import sss

from .helpers import assert_exact_and_smaller, random_gated
from .test_inception_branches import GoogLeNetTiny


def test_inception_branches_removed_exactly():
    x = torch.randn(2, 3, 8, 8)
    model = GoogLeNetTiny()
    gated = random_gated(model, x, ("branch",), seed=12)
    refs = sss.gates(gated)
    assert [(g.name, g.kind, g.weight.numel()) for g in refs] == [("a.gate", "branch", 4), ("b.gate", "branch", 4)]
    compact = assert_exact_and_smaller(gated, x)
    kept = int((refs[0].weight != 0).sum())
    with torch.no_grad():
        assert compact.a(compact.stem(x)).shape[1] < 26  # a's concat lost branches...
    assert len(list(compact.a.children())) == kept  # ...and their layers


def test_all_zero_module_keeps_one_branch():
    x = torch.randn(2, 3, 8, 8)
    gated = sss.attach(GoogLeNetTiny(), x, ("branch",)).eval()
    with torch.no_grad():
        sss.gates(gated)[1].weight.zero_()
    compact = sss.prune(gated)
    with torch.no_grad():
        assert torch.allclose(gated(x), compact(x), atol=1e-6)
    assert compact.fc.in_features == 8  # the first branch of b stays, with zero output


def test_zoo_googlenet_branches_save_and_load(tmp_path):
    x = torch.randn(2, 1, 28, 28)
    gated = random_gated(sss.models.create("googlenet", in_channels=1, width=0.125), x, ("branch",), seed=13)
    assert len(sss.gates(gated)) == 9
    compact = assert_exact_and_smaller(gated, x)
    assert any(e["op"] == "drop_branches" for e in sss.structures.history(compact))
    sss.save(compact, tmp_path / "compact")
    with torch.no_grad():
        assert torch.equal(sss.load(tmp_path / "compact")(x), compact(x))


@pytest.mark.parametrize("seed", [14, 15, 16])
def test_branches_and_channels_compose(tmp_path, seed):
    # GAL's GoogLeNet with channel masks inside its branches: both kinds cut the readers of a
    # concat, in one pass, in the original numbering.
    x = torch.randn(2, 3, 8, 8)
    gated = random_gated(GoogLeNetTiny(), x, ("branch", "channel"), seed=seed)
    assert {g.kind for g in sss.gates(gated)} == {"branch", "channel"}
    compact = assert_exact_and_smaller(gated, x)
    ops = {e["op"] for e in sss.structures.history(compact)}
    assert {"attach", "prune", "cut", "drop_branches"} <= ops
    sss.save(compact, tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(sss.load(tmp_path / "m", base=GoogLeNetTiny)(x), compact(x))


def test_refusals_name_the_problem():
    with pytest.raises(sss.UnsupportedModelError, match="no branch module to gate"):
        sss.attach(sss.models.create("lenet5"), torch.randn(1, 1, 28, 28), ("branch",))
