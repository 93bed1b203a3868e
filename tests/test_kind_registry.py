"""The kind registry: a new structure kind is one class and one registration, and every entry
point (attach, find_structures, prune, structure_macs, save/load, the CLI's help) knows it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sss
from sss.cli.main import build_parser
from sss.structures import Gate, Removal, StructureKind, register_kind, unregister_kind
from sss.structures.gate import ChannelGated


class FeatureKind(StructureKind):
    """Toy kind: one factor per hidden unit of an MLP written as Linear, ReLU, Linear."""

    name = "feature"
    ops = ("feature_check",)
    not_found = "hidden Linear layer followed by ReLU and another Linear"

    def find(self, model, example_inputs, ignore, discovery):
        found = []
        for path, seq in model.named_modules():
            if isinstance(seq, nn.Sequential):
                mods = list(seq.named_children())
                for (n1, a), (_, r), (n2, b) in zip(mods, mods[1:], mods[2:], strict=False):
                    if isinstance(a, nn.Linear) and isinstance(r, nn.ReLU) and isinstance(b, nn.Linear):
                        found.append((f"{path}.{n1}".lstrip("."), f"{path}.{n2}".lstrip(".")))
        return found, []

    def label(self, candidate):
        return candidate[0]

    def gate(self, model, candidates):
        for first, second in candidates:
            layer = model.get_submodule(first)
            wrapper = ChannelGated(layer, layer.out_features)  # prune folds and unwraps these before the cuts
            wrapper.add_slice(Gate("feature", layer.out_features), [[i] for i in range(layer.out_features)],
                              group=(first, second))  # fmt: skip
            model.set_submodule(first, wrapper)

    def plan(self, model, remove, round_to, removal: Removal):
        for m in model.modules():
            if isinstance(m, ChannelGated) and m.group is not None and m.gate.kind == "feature":
                (first, second), lam = m.group, m.gate.weight.detach()
                zero = torch.nonzero(lam == 0).flatten().tolist()[: lam.numel() - 1] if remove else []
                removal.cut(first, "out", zero)  # layers named by their ungated paths
                removal.cut(second, "in", zero)
                removal.steps.append(lambda model, first=first: [{"op": "feature_check", "path": first}])

    def replay(self, model, edit):
        if not isinstance(model.get_submodule(edit["path"]), nn.Linear):
            raise ValueError(f"{edit['path']} is not a Linear layer")


@pytest.fixture
def feature_kind():
    register_kind(FeatureKind())
    yield
    unregister_kind("feature")


def _mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def test_toy_kind_works_everywhere(feature_kind, tmp_path):
    x = torch.randn(4, 6)
    assert "feature" in sss.structures.kind_names()
    report = sss.find_structures(_mlp(), x, ("feature", "block"))
    assert report.names("feature") == ["0", "2"] and report.missing == ["block"]
    base = _mlp()
    gated = sss.attach(base, x, ("feature", "block"))  # block: none, reported, not refused
    assert [g.kind for g in sss.gates(gated)] == ["feature", "feature"]
    with torch.no_grad():
        sss.gates(gated)[0].weight[::2] = 0.0
    compact = sss.prune(gated)
    assert compact[0].out_features == 8 and compact[2].in_features == 8
    with torch.no_grad():
        assert torch.allclose(compact(x), gated(x), atol=1e-6)
    assert sss.measure.structure_macs(gated, x[:1])["0.gate"] == pytest.approx(6 + 8)  # one unit: 6 in, 8 out
    sss.save(compact, tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(sss.load(tmp_path / "m", base=_mlp)(x), compact(x))


def test_cli_help_lists_registered_kinds(feature_kind, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    assert "feature" in capsys.readouterr().out


def test_all_kinds_on_a_model_that_has_some(caplog):
    x = torch.randn(1, 3, 32, 32)
    vgg = sss.models.create("vgg16_bn", width=0.25)
    with caplog.at_level("INFO", logger="sss"):
        gated = sss.attach(vgg, x, ("block", "group", "channel", "branch"))
    assert {g.kind for g in sss.gates(gated)} == {"channel"}
    assert "no block/group/branch structures" in caplog.text and "gated 14 channel" in caplog.text
    report = sss.find_structures(vgg, x, sss.structures.kind_names())
    assert report.found == ["channel"] and set(report.missing) == {"block", "group", "branch", "head", "embedding"}


class ModelCodeFailsKind(FeatureKind):
    """A kind whose reading of the model fails inside code that is not sss's (a library's bug, as
    Torch-Pruning's ``ZeroDivisionError`` on timm's Twins)."""

    name = "fails"
    ops = ()

    def find(self, model, example_inputs, ignore, discovery):
        return 1 // 0, []


def test_a_kind_that_cannot_read_the_model_leaves_the_others(caplog):
    register_kind(ModelCodeFailsKind())
    try:
        x = torch.randn(2, 6)
        report = sss.find_structures(_mlp(), x, ("channel", "fails"))
        assert report.found == ["channel"]
        assert any(s.startswith("fails: finding the fails structures of Sequential failed: ZeroDivisionError")
                   for s in report.skipped), report.skipped  # fmt: skip
        with pytest.raises(sss.errors.UnsupportedModelError, match="ZeroDivisionError"):
            sss.attach(_mlp(), x, ("fails",))
    finally:
        unregister_kind("fails")
