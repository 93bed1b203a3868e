"""Pickle-free checkpoints and model files: round trips, atomic writes, clear errors."""

import json

import pytest
import torch

import sss
from conftest import forge_spec, randomise
from sss.serialization import load_state, save_state


def test_state_roundtrip_keeps_types(tmp_path):
    model = sss.attach(sss.models.create("resnet20", width=4))
    weights, factors = sss.build_optimizers(model, lr=0.1, gamma=0.1)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    weights.step()
    factors.step()
    state = {"epoch": 3, "t": (1, "a"), "none": None, "model": model.state_dict(), "opt": factors.state_dict()}
    save_state(state, tmp_path / "ck.safetensors")
    back = load_state(tmp_path / "ck.safetensors")
    assert back["epoch"] == 3 and back["t"] == (1, "a") and back["none"] is None
    assert all(torch.equal(back["model"][k], v) for k, v in model.state_dict().items())
    assert list(back["opt"]["state"]) == list(factors.state_dict()["state"])  # int keys survive
    fresh = sss.APG(sss.structures.factor_parameters(model), lr=0.1, gamma=0.1)
    fresh.load_state_dict(back["opt"])
    assert [f.name for f in tmp_path.iterdir()] == ["ck.safetensors"]  # no temp file left behind


def test_corrupt_or_missing_checkpoint(tmp_path):
    save_state({"a": torch.ones(3)}, tmp_path / "ck.safetensors")
    raw = (tmp_path / "ck.safetensors").read_bytes()
    (tmp_path / "ck.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(sss.CheckpointError, match="truncated"):
        load_state(tmp_path / "ck.safetensors")
    with pytest.raises(sss.CheckpointError, match="does not exist"):
        load_state(tmp_path / "nope.safetensors")


def test_unsupported_objects_are_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot store a object"):
        save_state({"x": object()}, tmp_path / "ck.safetensors")
    assert not (tmp_path / "ck.safetensors").exists()


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet164"])
def test_save_load_compact_model(tmp_path, name):
    gated = randomise(sss.attach(sss.models.create(name, num_classes=5, in_channels=1)))
    compact = sss.prune(gated)
    sss.save(compact, tmp_path / "compact")
    spec = json.loads((tmp_path / "compact.json").read_text())
    removed = [e["path"] for e in spec["history"] if e["op"] == "remove_block"]
    assert removed == sss.structures.removed_blocks(compact) and not spec["gated"]
    loaded = sss.load(tmp_path / "compact")
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), compact(x))
    assert sss.count(loaded, x[:1]) == sss.count(compact, x[:1])


def test_save_load_gated_model(tmp_path):
    gated = randomise(sss.attach(sss.models.create("resnet20", shortcut="pad")))
    sss.save(gated, tmp_path / "gated.safetensors")
    loaded = sss.load(tmp_path / "gated.json")
    assert len(sss.gates(loaded)) == 9
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), gated(x))


def test_load_errors(tmp_path):
    with pytest.raises(sss.CheckpointError, match="not found"):
        sss.load(tmp_path / "missing")
    sss.save(sss.models.create("resnet20"), tmp_path / "m")
    spec = json.loads((tmp_path / "m.json").read_text())
    spec["history"] = [{"op": "remove_block", "path": "layer1.0"}]  # the weights no longer fit
    (tmp_path / "m.json").write_text(json.dumps(spec))
    with pytest.raises(sss.CheckpointError, match=r"do not fit the rebuilt model: .*layer1\.0"):
        sss.load(tmp_path / "m")
    spec["history"] = [{"op": "remove_block", "path": "layer9.0"}]  # a block the base does not have
    (tmp_path / "m.json").write_text(json.dumps(spec))
    with pytest.raises(sss.CheckpointError, match=r"edit 0 \(remove_block: path='layer9.0'\) does not apply"):
        sss.load(tmp_path / "m")
    (tmp_path / "m.json").write_text('{"name": "resnet20", "kwargs": {}}')  # not this format
    with pytest.raises(sss.CheckpointError, match="re-save"):
        sss.load(tmp_path / "m")
    (tmp_path / "m.json").write_text("{")
    with pytest.raises(sss.CheckpointError, match="not valid JSON"):
        sss.load(tmp_path / "m")


def test_any_model_saves_and_loads_from_its_base(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3))  # fmt: skip
    x = torch.randn(2, 3, 8, 8)
    gated = randomise(sss.attach(net, x, ("channel",)))
    compact = sss.prune(gated)
    sss.save(compact, tmp_path / "c")
    with pytest.raises(sss.CheckpointError, match=r"outside the zoo: pass its unpruned form"):
        sss.load(tmp_path / "c")
    with torch.no_grad():
        assert torch.equal(sss.load(tmp_path / "c", base=net)(x), compact(x))
        # A base with other shapes: the first edit that does not fit is named.
        other = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
                                    torch.nn.Conv2d(6, 4, 3), torch.nn.Flatten(), torch.nn.Linear(64, 3))  # fmt: skip
    with pytest.raises(sss.CheckpointError, match=r"edit \d+ \(cut: layer='0'.*has 6 out channels"):
        sss.load(tmp_path / "c", base=other)


def test_save_load_channel_pruned_model(tmp_path):
    x = torch.randn(2, 3, 32, 32)
    gated = sss.attach(sss.models.create("vgg16_bn", width=0.25), x, structures=("channel",))
    with torch.no_grad():
        for ref in sss.gates(gated):
            ref.weight[::3] = 0.0
    compact = sss.prune(gated.eval())
    sss.save(compact, tmp_path / "vgg")
    loaded = sss.load(tmp_path / "vgg")
    with torch.no_grad():
        assert torch.equal(loaded(x), compact(x))
    assert sss.count(loaded, x[:1]) == sss.count(compact, x[:1])


@pytest.mark.parametrize("zoo", [True, False])
def test_a_model_pruned_by_torch_pruning_saves_and_loads(tmp_path, zoo):
    """Layers resized by another tool are rebuilt with their saved sizes (the history cannot
    know them): Torch-Pruning's global group-norm pruning, a zoo model and a user model."""
    import torch_pruning as tp

    torch.manual_seed(0)
    if zoo:
        model = sss.models.create("resnet20", num_classes=10, in_channels=1, width=8)
        base = None
    else:

        def base():
            return torch.nn.Sequential(
                torch.nn.Conv2d(1, 12, 3),
                torch.nn.BatchNorm2d(12),
                torch.nn.ReLU(),
                torch.nn.Conv2d(12, 12, 3, groups=12),
                torch.nn.Flatten(),
                torch.nn.Linear(12 * 24 * 24, 10),
            )

        model = base()
    randomise(model)
    x = torch.randn(2, 1, 28, 28)
    fc = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    pruner = tp.pruner.MetaPruner(
        model,
        x,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        global_pruning=True,
        pruning_ratio=0.5,
        iterative_steps=1,
        ignored_layers=fc,
    )
    pruner.step()
    before = sss.count(model, x[:1])[1]
    sss.save(model, tmp_path / "m")
    loaded = sss.load(tmp_path / "m", base=base)
    model.eval()
    assert sss.count(loaded, x[:1])[1] == before
    torch.testing.assert_close(loaded(x), model(x))


def test_a_vit_pruned_by_torch_pruning_saves_and_loads(tmp_path):
    """Torch-Pruning's ViT pruning cuts heads and the embedding width: the attention's
    ``num_heads`` and the model's own tensors (class token, position embedding) are saved too."""
    import torch_pruning as tp

    torch.manual_seed(0)
    model, x = (
        sss.models.create("vit_fmnist", num_classes=10, in_channels=1, embed_dim=32, depth=2),
        torch.randn(2, 1, 28, 28),
    )
    heads = {b.attn.qkv: b.attn.num_heads for b in model.blocks}
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2), global_pruning=True,
                                  pruning_ratio=0.4, iterative_steps=1, ignored_layers=[model.head], num_heads=heads,
                                  prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=0.4)  # fmt: skip
    pruner.step()
    for b in model.blocks:
        b.attn.num_heads = pruner.num_heads[b.attn.qkv]
    assert model.cls_token.shape[-1] < 32 and sum(b.attn.num_heads for b in model.blocks) < 8
    sss.save(model.eval(), tmp_path / "vit")
    loaded = sss.load(tmp_path / "vit")
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_loading_a_gated_model_replays_its_structures_without_rediscovering(tmp_path, monkeypatch):
    """The attach edit records the structures it found (kind → labels); loading gates those again,
    without the exactness trials they passed. A history written before the edit recorded them is
    found and checked again; a recorded structure the model lacks is named."""
    x = torch.randn(2, 3, 16, 16)
    gated = randomise(sss.attach(sss.models.create("resnet20", width=4), x, structures=("block", "channel")))
    sss.save(gated, tmp_path / "g")
    spec = json.loads((tmp_path / "g.json").read_text())
    (edit,) = [e for e in spec["history"] if e["op"] == "attach"]
    assert set(edit["structures"]) == {"block", "channel"} and "layer1.0" in edit["structures"]["block"]
    trials = []
    monkeypatch.setattr("sss.structures.discovery._removes_exactly", lambda *a: trials.append(a) or True)
    loaded = sss.load(tmp_path / "g")
    assert not trials and [r.name for r in sss.gates(loaded)] == [r.name for r in sss.gates(gated)]
    with torch.no_grad():
        assert torch.equal(loaded(x), gated(x))
    forge_spec(tmp_path / "g", {"history": [{k: v for k, v in e.items() if k != "structures"}
                                            for e in spec["history"]]})  # fmt: skip
    assert len(sss.gates(sss.load(tmp_path / "g"))) == len(sss.gates(gated)) and trials  # checked again
    edit["structures"]["block"].append("layer9.0")
    forge_spec(tmp_path / "g", {"history": spec["history"]})
    with pytest.raises(sss.CheckpointError, match=r"block structures at layer9\.0 were gated when it was saved"):
        sss.load(tmp_path / "g")
