"""The embedding kind: a transformer's residual stream narrowed exactly (writes gated, norms that
keep the full width as their divisor), on timm's ViT, the zoo's and Hugging Face's BERT."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sss
from sss.structures import FullWidthLayerNorm, use_stock_norms
from sss.structures.full_width_norm import FullWidthLayerNorm as _Norm

from .helpers import assert_exact_and_smaller, assert_round_trip, random_gated


def test_the_full_width_norm_is_the_wide_norm_on_the_kept_channels():
    torch.manual_seed(0)
    wide = nn.LayerNorm(16, eps=1e-6)
    nn.init.uniform_(wide.weight), nn.init.uniform_(wide.bias)
    kept = torch.tensor([0, 2, 3, 7, 9, 15])
    x = torch.zeros(3, 5, 16)
    x[..., kept] = torch.randn(3, 5, len(kept))
    narrow = _Norm(len(kept), 16, eps=1e-6)
    with torch.no_grad():
        narrow.weight.copy_(wide.weight[kept]), narrow.bias.copy_(wide.bias[kept])
    torch.testing.assert_close(narrow(x[..., kept]), wide(x)[..., kept])
    torch.testing.assert_close(narrow(x[..., kept].half()).float(), wide(x)[..., kept], atol=2e-3, rtol=2e-3)
    with pytest.raises(ValueError, match="kept must be"):
        _Norm(17, 16)


def _timm_vit(**kw):
    vit = pytest.importorskip("timm.models.vision_transformer")
    torch.manual_seed(0)
    return vit.VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=2,
                                 num_heads=4, **kw).eval()  # fmt: skip


@pytest.mark.parametrize("kw", [{}, {"init_values": 0.1, "reg_tokens": 2}, {"global_pool": "avg", "fc_norm": True}],
                         ids=["plain", "layerscale-registers", "avg-pool"])  # fmt: skip
def test_timm_vit_loses_embedding_channels_everywhere_they_flow(kw):
    x = torch.randn(3, 1, 28, 28)
    gated = random_gated(_timm_vit(**kw), x, ("embedding", "head", "channel"), zero_prob=0.3)
    stream = [r for r in sss.gates(gated) if r.kind == "embedding"]
    assert [(r.name, r.weight.numel()) for r in stream] == [("patch_embed.proj.gate", 32)]
    compact = assert_exact_and_smaller(gated, x)
    kept = int((stream[0].weight != 0).sum())
    assert compact.cls_token.shape[-1] == compact.pos_embed.shape[-1] == kept
    assert isinstance(compact.norm if not kw.get("fc_norm") else compact.fc_norm, FullWidthLayerNorm)
    assert compact.blocks[1].mlp.fc2.out_features == compact.head.in_features == kept
    torch.testing.assert_close(compact.train()(x), gated.train()(x), rtol=1e-5, atol=1e-5)  # no dropout: same
    assert_round_trip(compact.eval(), x, base=_timm_vit(**kw))


def test_a_narrowed_stream_with_removed_branches_loads(tmp_path):
    """Blocks removed after the stream narrowed: loading replays the block removal by tracing a
    block that now holds full-width norms (a leaf of the trace)."""
    x = torch.randn(2, 1, 28, 28)
    gated = random_gated(_timm_vit(), x, ("block", "embedding"), zero_prob=0.3)
    with torch.no_grad():
        next(r for r in sss.gates(gated) if r.kind == "block").weight[1] = 0.0  # the first block's MLP branch
    compact = assert_exact_and_smaller(gated, x)
    assert any(e["op"] == "remove_block" for e in sss.structures.history(compact))
    assert any(isinstance(m, FullWidthLayerNorm) for m in compact.modules())
    assert_round_trip(compact, x, base=_timm_vit())


@pytest.mark.parametrize("build", [lambda: sss.models.create("vit_fmnist"), _timm_vit], ids=["zoo", "timm"])
def test_a_narrowed_vit_stream_exports_to_onnx(tmp_path, build):
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(2, 1, 28, 28)
    gated = random_gated(build(), x, ("embedding", "head", "channel"), zero_prob=0.3)
    compact = assert_exact_and_smaller(gated, x)
    path = sss.export_onnx(compact, x[:1], tmp_path / "m.onnx")
    out = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), compact(x), atol=1e-5, rtol=1e-4)


def test_stock_norms_are_plain_layer_norms_and_not_the_same_function():
    x = torch.randn(2, 1, 28, 28)
    gated = random_gated(_timm_vit(), x, ("embedding",), zero_prob=0.3)
    compact = sss.prune(gated).eval()
    exact = compact(x)
    assert use_stock_norms(compact) == 5  # two norms per block and the final one
    assert not any(isinstance(m, FullWidthLayerNorm) for m in compact.modules())
    assert exact.shape == compact(x).shape and not torch.allclose(compact(x), exact, atol=1e-4)


def test_hugging_face_bert_narrows_its_post_norm_stream_from_the_embedding_tables():
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = tf.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=48, max_position_embeddings=16, num_labels=3)  # fmt: skip
    model = tf.BertForSequenceClassification(config).eval()
    ids = torch.randint(0, 64, (2, 8))
    gated = sss.attach(model, ids, structures=("embedding",))
    stream = [r for r in sss.gates(gated) if r.kind == "embedding"]
    assert len(stream) == 1 and stream[0].weight.numel() == 32
    with torch.no_grad():
        stream[0].weight[::3] = 0
    compact = sss.prune(gated).eval()
    torch.testing.assert_close(compact(ids).logits, gated(ids).logits, rtol=1e-5, atol=1e-5)
    assert compact.bert.embeddings.word_embeddings.embedding_dim == 32 - 11


def test_a_stream_with_a_permuting_norm_is_left_to_the_other_kinds():
    """A channels-first LayerNorm (ConvNeXt's ``LayerNorm2d``) does not normalise the last dim: not
    a stream this kind can narrow, and the report says so."""
    layers = pytest.importorskip("timm.layers")
    model = nn.Sequential(nn.Conv2d(3, 8, 3), layers.LayerNorm2d(8), nn.Conv2d(8, 4, 1))
    report = sss.find_structures(model, torch.randn(2, 3, 8, 8), ("embedding", "channel"))
    assert not report.structures["embedding"]
    assert any("LayerNorm2d" in s and "last dim" in s for s in report.skipped), report.skipped
