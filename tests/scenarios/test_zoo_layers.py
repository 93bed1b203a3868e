"""The layers the model zoos are built of, one scenario each: timm's norm+activation layers and
``Attention`` (fused qkv, q/k norms, ``attn_dim``, gated form), Hugging Face outputs and token
inputs, a shape check in a forward, and model code that raises: each gated and pruned exactly,
or refused as an sss error naming the module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sss
from sss.structures.kinds.heads import describe_heads

from .helpers import assert_exact_and_smaller, random_gated

timm_layers = pytest.importorskip("timm.layers")


class NormActNet(nn.Module):
    """conv → BatchNormAct2d(SiLU) twice, then a classifier: timm's EfficientNet/MobileNet stem."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = timm_layers.BatchNormAct2d(8, act_layer=nn.SiLU)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = timm_layers.BatchNormAct2d(8, act_layer=nn.GELU)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.bn2(self.conv2(self.bn1(self.conv1(x)))).mean((2, 3)))


def test_channels_behind_a_norm_with_its_own_activation_prune_exactly():
    """The factor scales the norm's affine, before its SiLU/GELU: folding λ into the norm then
    computes the same function (a factor after a non-homogeneous activation would not)."""
    x = torch.randn(2, 3, 8, 8)
    gated = random_gated(NormActNet(), x, ("channel",))
    assert {r.name for r in sss.gates(gated)} == {"bn1.gate", "bn2.gate"}  # not refused as a training branch
    compact = assert_exact_and_smaller(gated, x)
    assert isinstance(compact.bn1, timm_layers.BatchNormAct2d) and compact.bn1.num_features < 8
    gated.train()
    compact = sss.prune(gated).train()
    torch.testing.assert_close(compact(x), gated(x), rtol=1e-5, atol=1e-5)  # batch statistics too


class AttentionBlock(nn.Module):
    def __init__(self, **kw) -> None:
        super().__init__()
        self.attn = timm_layers.Attention(32, num_heads=4, qkv_bias=True, **kw)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        return self.head((x + self.attn(x)).mean(1))


@pytest.mark.parametrize("kw", [{}, {"qk_norm": True, "norm_layer": nn.LayerNorm}, {"gated": True}],
                         ids=["plain", "qk_norm", "gated"])  # fmt: skip
def test_timm_attention_loses_whole_heads(kw):
    """timm's ``Attention`` reshapes by ``attn_dim``; removing heads lowers it with ``num_heads``
    (and cuts a gated form's ``gate`` rows): the same function, saved and loaded."""
    x = torch.randn(2, 5, 32)
    gated = random_gated(AttentionBlock(**kw), x, ("head",))
    (ref,) = sss.gates(gated)
    assert ref.name == "attn.qkv.gate" and ref.weight.numel() == 4
    compact = assert_exact_and_smaller(gated, x)
    kept = int((ref.weight != 0).sum())
    assert compact.attn.num_heads == kept and compact.attn.attn_dim == 8 * kept
    assert compact.attn.qkv.out_features == 3 * 8 * kept and compact.attn.proj.in_features == 8 * kept


def test_attention_normalising_its_heads_output_is_refused_with_the_reason():
    attn = timm_layers.Attention(32, num_heads=4, scale_norm=True, norm_layer=nn.LayerNorm)
    assert "normalises the heads' concatenated outputs" in describe_heads(attn, "attn", {})


class ShapeChecked(nn.Module):
    """Python control flow on a shape: torch.fx sees a branch, but every input of this shape takes it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        if x.shape[1] != 3:
            raise ValueError("three channels expected")
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


class ValueBranch(ShapeChecked):
    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        if y.mean() > 0.5:  # another path for other data
            y = y * 2
        return self.head(y.mean((2, 3)))


def test_a_branch_on_a_shape_is_not_a_branch_on_values():
    x = torch.randn(2, 3, 8, 8)
    assert_exact_and_smaller(random_gated(ShapeChecked(), x, ("channel",)), x)
    with pytest.raises(sss.UnsupportedModelError, match="branches on the values of its input"):
        sss.attach(ValueBranch(), x, ("channel",))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)

    def forward(self, x):
        return x + self.bn(self.conv(x))


def test_an_error_raised_by_the_models_code_names_the_module():
    """The example does not fit the model: torch's error reaches the user as an sss error that
    names the layer and the original error, not as a raw RuntimeError from deep inside."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Residual(), nn.Flatten(), nn.Linear(8 * 4 * 4, 2))
    with pytest.raises(sss.UnsupportedModelError) as err:
        sss.attach(model, torch.randn(1, 3, 6, 6), ("block",))
    message = str(err.value)
    assert "3 (Linear)" in message and "RuntimeError" in message and "\n" not in message


def test_hugging_face_outputs_and_token_inputs():
    """A ``ModelOutput`` is compared tensor by tensor, token ids are probed inside the vocabulary,
    and the compact model loads from its unpruned form."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=16, num_labels=3)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    ids = torch.randint(0, 50, (2, 8))
    gated = random_gated(model, ids[:1], ("channel",))
    compact = sss.prune(gated)
    with torch.no_grad():
        torch.testing.assert_close(compact(ids).logits, gated(ids).logits, rtol=1e-5, atol=1e-5)
    assert compact.bert.encoder.layer[0].intermediate.dense.out_features < 64


def test_grouped_query_attention_loses_whole_key_value_groups():
    """Llama's heads share key/value heads (4 query heads, 2 key/value heads): a structure is one
    key/value head with the query heads that read it, so the query-per-kv ratio stays."""
    transformers = pytest.importorskip("transformers")
    sizes = {"vocab_size": 50, "hidden_size": 32, "intermediate_size": 64, "max_position_embeddings": 16}
    config = transformers.LlamaConfig(**sizes, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 50, (2, 8))
    gated = sss.attach(model, ids[:1], ("head",))
    (ref,) = sss.gates(gated)
    assert ref.weight.numel() == 2  # key/value heads, not query heads
    with torch.no_grad():
        ref.weight[0] = 0.0
        ref.weight[1] = 0.6
    compact = sss.prune(gated)
    attn = compact.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.o_proj.in_features) == (16, 8, 16)
    with torch.no_grad():
        torch.testing.assert_close(compact(ids).logits, gated(ids).logits, rtol=1e-5, atol=1e-5)


class CachedInEval(nn.Module):
    """LeViT's attention biases: computed in training, the same values taken another way in eval
    (a cache): two graphs, one function."""

    def __init__(self, same: bool = True) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.same = same
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        scale = self.scale * 2 if self.training else self.scale + self.scale * (1.0 if self.same else 0.5)
        y = torch.relu(self.bn(self.conv(x))) * scale
        return self.head(y.mean((2, 3)))


def test_two_graphs_that_compute_the_same_in_both_modes_are_one_path():
    x = torch.randn(2, 3, 8, 8)
    assert_exact_and_smaller(random_gated(CachedInEval(), x, ("channel",)), x)
    with pytest.raises(sss.UnsupportedModelError, match="different graph in training and in eval mode"):
        sss.attach(CachedInEval(same=False), x, ("channel",))


class GhostModule(nn.Module):
    """GhostNet's module: a primary conv, a depthwise "cheap" conv of its output, both
    concatenated and cut to a fixed width: ``cat([x1, dw(x1)])[:, :out]``. A channel of x1 reaches
    the output twice (itself and through the depthwise conv), and the fixed cut shifts which
    channels are kept once any is removed: Torch-Pruning's channel map is wrong on both counts."""

    def __init__(self, in_chs: int, out: int) -> None:
        super().__init__()
        init = -(-out // 2)
        self.out = out
        self.primary = nn.Sequential(nn.Conv2d(in_chs, init, 1, bias=False), nn.BatchNorm2d(init), nn.ReLU())
        self.cheap = nn.Sequential(nn.Conv2d(init, init, 3, padding=1, groups=init, bias=False), nn.BatchNorm2d(init))

    def forward(self, x):
        x1 = self.primary(x)
        return torch.cat([x1, self.cheap(x1)], dim=1)[:, : self.out]


class GhostNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.ghost1, self.ghost2 = GhostModule(8, 7), GhostModule(7, 8)
        self.expand = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = self.stem(x)
        return self.head(self.expand(self.ghost2(self.ghost1(x)) + x).mean((2, 3)))


@pytest.mark.parametrize("seed", range(4))
def test_ghost_modules_cut_to_a_fixed_width_are_never_pruned_wrongly(seed):
    """Any pattern of zeros (not only the alternating ones the exactness check used to try) gives
    the same function, or the structure was refused; a random third zero per gate, four seeds."""
    x = torch.randn(2, 3, 8, 8)
    gated = sss.attach(GhostNetLike().eval(), x, structures=("channel",)).eval()
    assert "expand.1.gate" in {r.name for r in sss.gates(gated)}  # what the ghosts do not touch stays prunable
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for ref in sss.gates(gated):
            ref.weight[torch.rand(ref.weight.numel(), generator=gen) < 0.3] = 0.0
    compact = sss.prune(gated).eval()
    torch.testing.assert_close(compact(x), gated(x), rtol=1e-5, atol=1e-5)


def test_swin_window_attention_loses_heads_with_their_position_bias_columns(tmp_path):
    """timm's Swin: each head has a column of the window attention's relative position bias table,
    cut with the head; stochastic depth (``DropPath``, which rescales a branch in training) is
    not a second path."""
    swin = pytest.importorskip("timm.models.swin_transformer")

    def build():
        torch.manual_seed(0)
        return swin.SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2,),
                                    num_heads=(4,), num_classes=4, drop_path_rate=0.1).eval()  # fmt: skip

    x = torch.randn(2, 3, 32, 32)
    gated = random_gated(build(), x, ("head",))
    assert [r.weight.numel() for r in sss.gates(gated)] == [4, 4]
    compact = assert_exact_and_smaller(gated, x)
    attention = compact.layers[0].blocks[0].attn
    assert attention.relative_position_bias_table.shape[1] == attention.num_heads < 4
    sss.save(compact, tmp_path / "swin")
    torch.testing.assert_close(sss.load(tmp_path / "swin", base=build).eval()(x), compact(x))


def test_hugging_face_swin_heads_take_their_bias_table_columns(tmp_path):
    """Hugging Face's Swin keeps the per-head bias table in a helper module of the attention
    (``relative_position_bias``): its columns go with the heads."""
    tf = pytest.importorskip("transformers")

    def build():
        torch.manual_seed(0)
        config = tf.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[2], num_heads=[4], window_size=4,
                               num_labels=3)  # fmt: skip
        return tf.SwinForImageClassification(config).eval()

    x = torch.randn(2, 3, 32, 32)
    gated = sss.attach(build(), x, structures=("head",))
    assert [r.weight.numel() for r in sss.gates(gated)] == [4, 4]
    with torch.no_grad():
        for ref in sss.gates(gated):
            ref.weight[1::2] = 0
    compact = sss.prune(gated.eval()).eval()
    torch.testing.assert_close(compact(x).logits, gated(x).logits, rtol=1e-5, atol=1e-5)
    sss.save(compact, tmp_path / "swin")
    torch.testing.assert_close(sss.load(tmp_path / "swin", base=build).eval()(x).logits, compact(x).logits)


class ReadsItsQkvWeight(nn.Module):
    """Attention whose forward reads its ``qkv`` layer's weight itself (EVA's and BEiT's
    ``F.linear(x, self.qkv.weight, qkv_bias)``) instead of calling the layer."""

    def __init__(self, dim: int = 16, num_heads: int = 4) -> None:
        super().__init__()
        self.num_heads, self.qkv, self.proj = num_heads, nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = nn.functional.linear(x, self.qkv.weight).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


def test_a_forward_that_reads_a_gated_layers_weight_gets_the_factors_folded_in():
    x = torch.randn(2, 5, 16)
    gated = random_gated(ReadsItsQkvWeight(), x, ("head",))
    assert [r.name for r in sss.gates(gated)] == ["qkv.gate"]
    assert_exact_and_smaller(gated, x)


def test_eva_attention_reading_its_qkv_weight_loses_heads_with_its_biases():
    """EVA adds its own q/v biases to ``F.linear(x, self.qkv.weight)``: the gated layer gives its
    weight with the factors folded in, ``v_bias`` is scaled with its head, and the cut keeps each
    kept head's biases; its blocks are gated too."""
    eva = pytest.importorskip("timm.models.eva")
    torch.manual_seed(0)
    model = eva.Eva(img_size=28, patch_size=7, embed_dim=32, depth=2, num_heads=4, num_classes=3).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_bias", "v_bias")):
                p.normal_()  # zeros at init: a zero head's values would be zero without the scaled bias
    x = torch.randn(2, 3, 28, 28)
    report = sss.find_structures(model, x, ("block", "head"))
    assert report.names("block") == ["blocks.0", "blocks.1"] and report.names("head") == [
        "blocks.0.attn",
        "blocks.1.attn",
    ]
    compact = assert_exact_and_smaller(random_gated(model, x, ("head",)), x)
    assert all(b.attn.q_bias.shape == b.attn.v_bias.shape == (b.attn.num_heads * 8,) for b in compact.blocks)
    assert sum(b.attn.num_heads for b in compact.blocks) < 8
    assert_exact_and_smaller(random_gated(model, x, ("block",)), x)
