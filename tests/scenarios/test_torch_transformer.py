"""A ViT built from ``nn.TransformerEncoderLayer``: its heads, MLP neurons and residual branches
are gated and removed exactly, after the encoder is rewritten as the same function
(:mod:`sss.structures.torch_transformer`), and the compact model saves and loads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sss
from sss.structures.torch_transformer import EncoderStack, convert_torch_transformers

from .helpers import assert_exact_and_smaller, random_gated


class TorchViT(nn.Module):
    """Patches, a class token, a position embedding, torch's encoder, a linear head."""

    def __init__(self, *, norm_first: bool = True, batch_first: bool = True, dim: int = 32, depth: int = 2) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Conv2d(1, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 10, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.1, activation="gelu", batch_first=batch_first,
                                           norm_first=norm_first)  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = self.encoder(x if self.batch_first else x.transpose(0, 1))
        return self.head(x[:, 0] if self.batch_first else x[0])


def _heads(model: nn.Module) -> list[int]:
    return [m.self_attn.num_heads for m in model.encoder.layers if hasattr(m, "self_attn")]


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "sequence-first"])
def test_a_vit_from_torch_encoder_layers_loses_heads_neurons_and_branches_exactly(norm_first, batch_first):
    torch.manual_seed(0)
    model, x = TorchViT(norm_first=norm_first, batch_first=batch_first), torch.randn(3, 1, 12, 12)
    report = sss.find_structures(model, x, ("block", "head", "channel"))
    assert report.names("head") == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    assert report.names("block") == ["encoder.layers.0", "encoder.layers.1"]
    assert {"encoder.layers.0.linear1", "encoder.layers.1.linear1"} <= set(report.names("channel"))
    gated = random_gated(model, x, ("block", "head", "channel"), zero_prob=0.3, seed=4)
    # attention and MLP branches; post-norm: the MLP's sum chains through the norm after the first
    assert [r.weight.numel() for r in sss.gates(gated) if r.kind == "block"] == [2, 2]
    with torch.no_grad():  # keep every block, so the heads and neurons are what is cut
        for ref in sss.gates(gated):
            if ref.kind == "block":
                ref.weight.fill_(0.8)
    compact = assert_exact_and_smaller(gated, x)  # outputs equal, fewer MACs, save/load round trip
    assert sum(_heads(compact)) < 8
    assert sss.structures.history(compact)[0] == {"op": "convert_transformers", "paths": ["encoder"], "ignore": []}


def test_the_rewritten_encoder_computes_what_torch_computes_with_masks():
    """Training mode (torch's slow path) and eval mode (its fused fast path), with a boolean
    padding mask and an additive attention mask."""
    torch.manual_seed(1)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    holder = nn.Sequential(encoder)
    x = torch.randn(2, 6, 16)
    padding = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    mask = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    with torch.no_grad():
        expected = {mode: holder.train(mode)[0](x, mask=mask, src_key_padding_mask=padding) for mode in (True, False)}
        assert convert_torch_transformers(holder) == ["0"]
        assert isinstance(holder[0], EncoderStack)
        for mode, want in expected.items():
            got = holder.train(mode)[0](x, mask=mask, src_key_padding_mask=padding)
            keep = ~padding  # torch's fast path leaves padded positions undefined
            assert torch.allclose(got[keep], want[keep], atol=1e-5)


def test_a_per_head_mask_is_refused_with_the_reason():
    torch.manual_seed(2)
    holder = nn.Sequential(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True))
    convert_torch_transformers(holder)
    with pytest.raises(ValueError, match="per-head mask"):
        holder[0](torch.randn(2, 3, 16), src_mask=torch.zeros(8, 3, 3))


def test_an_ignored_encoder_layer_is_left_as_it_is_and_replays():
    model, x = TorchViT(), torch.randn(2, 1, 12, 12)
    gated = random_gated(model, x, ("head", "channel"), ignore=["encoder.layers.1"], seed=1)
    assert isinstance(gated.encoder.layers[1], nn.TransformerEncoderLayer)
    assert not any(r.name.startswith("encoder.layers.1") for r in sss.gates(gated))
    assert_exact_and_smaller(gated, x)


def test_the_compact_torch_vit_exports_to_onnx_and_runs_the_same(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    model, x = TorchViT(), torch.randn(2, 1, 12, 12)
    compact = sss.prune(random_gated(model, x, ("block", "head", "channel"), zero_prob=0.3, seed=4)).eval()
    session = ort.InferenceSession(str(sss.export_onnx(compact, x, tmp_path / "m.onnx")))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), compact(x), atol=1e-5)


def test_macs_of_torch_encoder_layers_are_counted_through_the_fast_path():
    """In eval mode torch runs an encoder layer as one fused kernel the flop counter cannot see;
    sss.count gives the same MACs for torch's model and its rewritten form."""
    model, x = TorchViT().eval(), torch.randn(1, 1, 12, 12)
    rewritten = sss.attach(model, x, ("head",))
    assert sss.count(model, x)[0] == sss.count(rewritten, x)[0] > 100_000


def test_torchvisions_vit_attention_loses_whole_heads_and_replays(tmp_path):
    """torchvision's ViT calls a free-standing ``nn.MultiheadAttention`` as ``attn(x, x, x)``: it is
    rewritten like an encoder layer's, its heads gated and removed exactly, and the compact model
    loads back by replaying the rewrite."""
    vision_transformer = pytest.importorskip("torchvision.models.vision_transformer")

    def build():
        torch.manual_seed(0)
        vit = vision_transformer.VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=4,
                                                   hidden_dim=32, mlp_dim=64, num_classes=5)  # fmt: skip
        nn.init.normal_(vit.heads.head.weight)  # torchvision starts it at zero: every output would be 0
        return vit

    x = torch.randn(2, 3, 16, 16)
    gated = random_gated(build(), x, ("head", "channel"))
    heads = [r for r in sss.gates(gated) if r.kind == "head"]
    assert [r.weight.numel() for r in heads] == [4, 4]
    compact = assert_exact_and_smaller(gated, x)
    sss.save(compact, tmp_path / "vit")
    torch.testing.assert_close(sss.load(tmp_path / "vit", base=build).eval()(x), compact(x))


class CrossAttention(nn.Module):
    """A free-standing ``nn.MultiheadAttention`` called with another tensor as key and value."""

    def __init__(self) -> None:
        super().__init__()
        self.memory = nn.Parameter(torch.randn(1, 3, 16))
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.fc = nn.Linear(16, 32)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        out, _ = self.attn(x, self.memory.expand(len(x), -1, -1), self.memory.expand(len(x), -1, -1))
        return self.head(torch.relu(self.fc(out + x)).mean(1))


def test_a_cross_attention_is_left_as_it_is_and_the_rest_still_gated():
    x = torch.randn(2, 5, 16)
    gated = sss.attach(CrossAttention(), x, structures=("channel", "head"))
    assert isinstance(gated.attn, nn.MultiheadAttention)  # not rewritten: its key is not its query
    assert [r.name for r in sss.gates(gated)] == ["fc.gate"]
    assert_exact_and_smaller(random_gated(CrossAttention(), x, ("channel",)), x)
