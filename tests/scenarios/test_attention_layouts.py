"""Heads of attention whose fused ``qkv`` is laid out per head (``(heads, 2·key_dim + val_dim)``,
then split: timm's TinyViT, EfficientFormer and LeViT, whose layers carry their own BatchNorm),
with per-head position biases cached in eval mode, and an input norm (not a norm of the heads'
outputs); and GPT-2's ``Conv1D`` attention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sss
from sss.structures.kinds.heads import describe_heads

from .helpers import Logits, assert_exact_and_smaller, assert_round_trip, random_gated


class Block(nn.Module):
    def __init__(self, attention: nn.Module, dim: int) -> None:
        super().__init__()
        self.attn, self.head = attention, nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((x + self.attn(x)).mean(1))


def _tiny_vit():
    tiny_vit = pytest.importorskip("timm.models.tiny_vit")
    torch.manual_seed(0)
    # the input norm is as wide as the heads' outputs (4 heads of 8 = 32): only the check can tell it apart
    return Block(tiny_vit.Attention(32, key_dim=4, num_heads=4, attn_ratio=2, resolution=(3, 3)), 32)


def _efficientformer():
    efficientformer = pytest.importorskip("timm.models.efficientformer")
    torch.manual_seed(0)
    return Block(efficientformer.Attention(24, key_dim=4, num_heads=3, attn_ratio=2, resolution=3), 24)


class ConvBlock(Block):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((x + self.attn(x)).mean((2, 3)))


def _levit(use_conv: bool = False):
    levit = pytest.importorskip("timm.models.levit")
    torch.manual_seed(0)
    attention = levit.Attention(16, key_dim=4, num_heads=3, attn_ratio=2, resolution=3, use_conv=use_conv,
                                act_layer=nn.Hardswish)  # fmt: skip
    with torch.no_grad():
        attention.proj[-1].bn.weight.uniform_(0.5, 1.5)  # zeros at init: the attention would add nothing
    return (ConvBlock if use_conv else Block)(attention, 16)


@pytest.mark.parametrize("build,dim,val_dim,width_name", [(_tiny_vit, 32, 8, "out_dim"),
                                                          (_efficientformer, 24, 8, "val_attn_dim"),
                                                          (_levit, 16, 8, "val_attn_dim"),
                                                          (lambda: _levit(use_conv=True), 16, 8, "val_attn_dim")],
                         ids=["tiny_vit", "efficientformer", "levit", "levit-conv"])  # fmt: skip
def test_attention_laid_out_per_head_loses_whole_heads(build, dim, val_dim, width_name):
    model = build()
    x = torch.randn(2, dim, 3, 3) if isinstance(model, ConvBlock) else torch.randn(2, 9, dim)
    model = build()
    heads = model.attn.num_heads
    with torch.no_grad():
        model.attn.attention_biases.normal_()  # zeros at init: a wrongly cut table would not show
    model.eval()(x)  # fills the eval-mode cache of per-head biases (with autograd on: deepcopy refuses it),
    # which attach must drop to copy the model and a cut must drop to run
    gated = random_gated(model, x, ("head",))
    (ref,) = sss.gates(gated)
    assert ref.weight.numel() == heads
    compact = assert_exact_and_smaller(gated, x)
    kept = int((ref.weight != 0).sum())
    attention = compact.attn
    assert attention.num_heads == kept and getattr(attention, width_name) == kept * val_dim
    proj = attention.proj if isinstance(attention.proj, nn.Linear) else attention.proj[-1].linear
    assert attention.attention_biases.shape[0] == kept and sss.structures.tracing.in_width(proj) == kept * val_dim
    assert_round_trip(compact, x, base=build())


def test_a_qkv_that_fits_neither_layout_is_skipped_with_the_reason():
    tiny_vit = pytest.importorskip("timm.models.tiny_vit")
    attention = tiny_vit.Attention(32, key_dim=4, num_heads=4, attn_ratio=2, resolution=(3, 3))
    attention.val_dim = 5  # as if its forward split another way
    assert "value features" in describe_heads(attention, "attn", {})


@pytest.mark.parametrize("fused", [False, True], ids=["sdpa-off", "sdpa"])
def test_maxvit_attention_laid_out_per_head_loses_heads_with_its_bias_table(fused):
    """MaxViT's ``head_first`` attention chunks ``(heads, 3 · dim_head)``; its relative position
    bias module views its table by a shape that ends in the head count, lowered with the cut."""
    maxxvit = pytest.importorskip("timm.models.maxxvit")
    from functools import partial

    def build():
        torch.manual_seed(0)
        attention = maxxvit.AttentionCl(24, dim_head=8, head_first=True,
                                        rel_pos_cls=partial(maxxvit.RelPosBias, window_size=(3, 3)))  # fmt: skip
        attention.fused_attn = fused  # the fused path reads the bias through get_bias (bias_shape)
        return Block(attention, 24)

    x = torch.randn(2, 9, 24)
    gated = random_gated(build(), x, ("head",))
    compact = assert_exact_and_smaller(gated, x)
    kept = int((sss.gates(gated)[0].weight != 0).sum())
    assert compact.attn.num_heads == kept and compact.attn.rel_pos.bias_shape[-1] == kept < 3
    assert compact.attn.rel_pos.relative_position_bias_table.shape[-1] == kept
    assert_round_trip(compact, x, base=build())


def test_gpt2_conv1d_layers_become_linear_and_its_heads_are_removed(tmp_path):
    """GPT-2's ``Conv1D`` (a linear layer with a transposed weight) is rewritten as ``nn.Linear``
    (an edit replayed on load); its fused ``c_attn`` then loses whole heads, ``split_size`` with them."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=16, use_cache=False,
                                     bos_token_id=0, eos_token_id=0)  # fmt: skip

    def build():
        torch.manual_seed(0)
        return Logits(transformers.GPT2LMHeadModel(config)).eval()

    ids = torch.randint(0, 50, (2, 8))
    gated = random_gated(build(), ids, ("head",))
    refs = sss.gates(gated)
    assert [r.name for r in refs] == [f"model.transformer.h.{i}.attn.c_attn.gate" for i in range(2)]
    compact = assert_exact_and_smaller(gated, ids)
    attention = compact.model.transformer.h[0].attn
    kept = int((refs[0].weight != 0).sum())
    assert isinstance(attention.c_attn, nn.Linear) and attention.num_heads == kept
    assert attention.split_size == 8 * kept and attention.c_attn.out_features == 3 * 8 * kept
    assert_round_trip(compact, ids, base=build())


class Residual(nn.Module):
    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def test_an_attention_inside_a_traced_block_keeps_its_head_count_live():
    """The block kind traces a residual module; an attention inside it stays a leaf of that trace
    (any module with an int ``num_heads``), so the head count its forward reshapes by is read live
    after heads are cut, not baked into the block's graph (LeViT's convolutional attention)."""
    torch.manual_seed(0)
    model = _levit(use_conv=True)
    model = nn.Sequential(Residual(model.attn), nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.head)
    x = torch.randn(2, 16, 3, 3)
    gated = random_gated(model, x, ("block", "head"), zero_prob=0.4)
    # the block ends in the attention (λ kept as a scale: LeViT's proj folds it nowhere), a leaf of its trace
    assert {r.kind for r in sss.gates(gated)} == {"block", "head"}
    assert_exact_and_smaller(gated, x)
