"""Heads of attention whose own code reads its input's width as the heads' width (``C // num_heads``,
``reshape(B, N, C)``: timm's relative-position ViT, XCiT, Swin V2-Cr, VOLO, PVT v2, CoAtNet,
Visformer, torchvision's MaxViT): after the cut the compact attention runs a traced forward with
the heads' new width between its projections; torchvision's Swin runs a forward of sss's own.
Outside that region (a window partition, the output) the input's width keeps its meaning."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sss

from .helpers import assert_exact_and_smaller, random_gated


class InputWidthAttention(nn.Module):
    """timm's pattern: ``B, N, C = x.shape``, the head width ``C // num_heads``, the heads merged
    to ``C``; the input is first split into two windows by its own width (outside the heads)."""

    def __init__(self, dim: int = 24, num_heads: int = 4, windows: int = 2) -> None:
        super().__init__()
        self.num_heads, self.windows = num_heads, windows
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.randn(num_heads, 1, 1))  # a per-head tensor, cut with its head

    def forward(self, x: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        B, N, C = x.shape
        x = x.reshape(B * self.windows, N // self.windows, C)  # the input's width: left alone
        q, k, v = self.qkv(x).reshape(B * self.windows, -1, 3, self.num_heads, C // self.num_heads).permute(
            2, 0, 3, 1, 4).unbind(0)  # fmt: skip
        attn = (q @ k.transpose(-2, -1)) * (scale or (C // self.num_heads) ** -0.5) + self.bias
        x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(B * self.windows, -1, C)
        return self.proj(x).reshape(B, N, C)


class ConvAttention(nn.Module):
    """A channels-first attention with 1×1 convolutions (Visformer's, CoAtNet's)."""

    def __init__(self, dim: int = 24, num_heads: int = 3) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv, self.proj = nn.Conv2d(dim, 3 * dim, 1), nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(x).reshape(B, 3, self.num_heads, C // self.num_heads, -1).permute(1, 0, 2, 4, 3).unbind(0)
        x = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.permute(0, 1, 3, 2).reshape(B, C, H, W))


class SplitQueryAttention(nn.Module):
    """PVT v2's: a query layer, a fused key/value layer, and a size argument that is not a tensor."""

    def __init__(self, dim: int = 24, num_heads: int = 4) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, feat_size: list[int]) -> torch.Tensor:
        B, N, C = x.shape
        x_ = x.transpose(1, 2).reshape(B, C, *feat_size).flatten(2).transpose(1, 2)  # as PVT's spatial reduction
        q = self.q(x).reshape(B, N, self.num_heads, -1).transpose(1, 2)
        k, v = self.kv(x_).reshape(B, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class InterleavedAttention(InputWidthAttention):
    """NesT's merge: ``permute(..., 1)`` puts the head index last, so a head's outputs are every
    ``num_heads``-th feature, not one block: not what the cut removes, and refused by the check."""

    def forward(self, x: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.permute(0, 2, 3, 1).reshape(B, N, C))


class Residual(nn.Module):
    def __init__(self, attention: nn.Module, channels_first: bool = False, **kwargs) -> None:
        super().__init__()
        self.attn, self.channels_first, self.kwargs = attention, channels_first, kwargs
        self.head = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x, **self.kwargs)
        return self.head(x.mean((2, 3)) if self.channels_first else x.mean(1))


def _build(attention: type[nn.Module], **kwargs) -> Residual:
    torch.manual_seed(0)
    return Residual(attention(), channels_first=attention is ConvAttention, **kwargs)


@pytest.mark.parametrize("attention,kwargs,shape", [(InputWidthAttention, {}, (2, 8, 24)),
                                                    (ConvAttention, {}, (2, 24, 3, 3)),
                                                    (SplitQueryAttention, {"feat_size": [2, 4]}, (2, 8, 24))],
                         ids=["tokens", "channels-first", "split-query"])  # fmt: skip
def test_an_attention_reading_its_input_width_loses_whole_heads(attention, kwargs, shape):
    x = torch.randn(*shape)
    gated = random_gated(_build(attention, **kwargs), x, ("head",))
    (ref,) = sss.gates(gated)
    compact = assert_exact_and_smaller(gated, x)  # and saved, loaded (the forward is traced again)
    kept = int((ref.weight != 0).sum())
    assert compact.attn.num_heads == kept < ref.weight.numel()
    gated.train(), compact.train()  # a forward traced per mode
    with torch.no_grad():
        torch.testing.assert_close(compact(x), gated(x), rtol=1e-5, atol=1e-6)
    twin = copy.deepcopy(compact)  # the traced forward goes with a copy, bound to the copy
    with torch.no_grad():
        torch.testing.assert_close(twin(x), compact(x))


def test_a_traced_forward_is_specialised_on_its_arguments_that_are_not_tensors():
    x = torch.randn(2, 8, 24)
    compact = sss.prune(random_gated(_build(InputWidthAttention), x, ("head",)))
    with torch.no_grad():
        default, scaled = compact.attn(x), compact.attn(x, scale=0.5)
    assert not torch.allclose(default, scaled)  # a new trace for scale=0.5, not the cached default's


def test_heads_merged_across_the_width_are_refused_by_the_check():
    found = sss.find_structures(_build(InterleavedAttention), torch.randn(2, 8, 24), kinds=("head",))
    assert found.structures["head"] == [] and "changes the output" in found.skipped[0]


@pytest.mark.parametrize("version", ["", "V2"])
def test_torchvision_swin_window_attention_loses_heads_with_padding_and_shift(version):
    swin = pytest.importorskip("torchvision.models.swin_transformer")

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layer = getattr(swin, f"ShiftedWindowAttention{version}")
            self.attn = layer(24, window_size=[3, 3], shift_size=[1, 1], num_heads=4)
            self.head = nn.Linear(24, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head((x + self.attn(x)).mean((1, 2)))

    torch.manual_seed(0)
    x = torch.randn(2, 7, 5, 24)  # padded to 9 × 6: two windows by two, shifted
    gated = random_gated(Block(), x, ("head",))
    compact = assert_exact_and_smaller(gated, x)
    kept = int((sss.gates(gated)[0].weight != 0).sum())
    per_head = compact.attn.logit_scale if version else compact.attn.relative_position_bias_table.T  # V2: cosine
    assert compact.attn.num_heads == kept == per_head.shape[0]


def test_a_compact_attention_with_a_traced_forward_exports_to_onnx(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(3, 8, 24)
    compact = sss.prune(random_gated(_build(InputWidthAttention), x, ("head",)))
    path = sss.export_onnx(compact, x[:1], tmp_path / "m.onnx")
    out = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]  # batch 3: the batch stays dynamic
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), compact(x), rtol=1e-5, atol=1e-5)


def _timm_attention(name: str) -> nn.Module:
    """timm's EVA and BEiT attention (biases kept beside a bias-free ``qkv``, BEiT's with a
    relative position table) and Hiera's (``heads``, merged by ``reshape(B, -1, dim_out)``)."""
    if name == "eva":
        return pytest.importorskip("timm.models.eva").EvaAttention(24, num_heads=4, qkv_bias=True, scale_norm=False)
    if name == "beit":
        return pytest.importorskip("timm.models.beit").Attention(24, num_heads=4, qkv_bias=True, window_size=(2, 4))
    hiera = pytest.importorskip("timm.models.hiera")
    return hiera.MaskUnitAttention(24, 24, heads=4, q_stride=1, window_size=1, use_mask_unit_attn=False)


@pytest.mark.parametrize("name", ["eva", "beit", "hiera"])
def test_timm_attention_with_biases_beside_qkv_or_its_own_width_names_loses_heads(name):
    def build():
        torch.manual_seed(0)
        model = Residual(_timm_attention(name))
        with torch.no_grad():  # zeros at init: a bias cut wrongly would not show
            for n, p in model.attn.named_parameters():
                if n.endswith("_bias") or "relative_position" in n:
                    p.normal_()
        return model

    x = torch.randn(2, 9, 24)  # BEiT's window of 2 × 4 and its class token
    gated = random_gated(build(), x, ("head",))
    compact = assert_exact_and_smaller(gated, x)  # and saved, then loaded onto a fresh build()
    kept = int((sss.gates(gated)[0].weight != 0).sum())
    attention = compact.attn
    assert getattr(attention, "num_heads", getattr(attention, "heads", None)) == kept
    for bias in ("q_bias", "k_bias", "v_bias"):
        if getattr(attention, bias, None) is not None:
            assert getattr(attention, bias).shape == (kept * 6,)


class UnnamedProjections(nn.Module):
    """Query/key/value layers under names sss does not know, viewed as ``(B, N, -1, head_dim)``:
    their rows look like channels, but a cut only runs while it keeps whole heads."""

    def __init__(self, dim: int = 32, head_dim: int = 8) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (layer(x).view(*x.shape[:2], -1, self.head_dim).transpose(1, 2) for layer in (self.wq, self.wk,
                                                                                               self.wv))  # fmt: skip
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        return x + self.wo(out.reshape(*x.shape[:2], -1))


def test_channels_that_must_stay_whole_heads_are_refused_by_the_check_not_a_crash_later():
    torch.manual_seed(0)
    model, x = nn.Sequential(UnnamedProjections(), nn.Linear(32, 3)), torch.randn(2, 5, 32)
    report = sss.find_structures(model, x, ("channel",))
    assert not {"0.wq", "0.wk", "0.wv"} & set(report.names("channel"))  # an odd cut of them cannot run
    assert any(s.startswith("0.wv: removing its channel structures changes the output") for s in report.skipped)


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids).logits


_SIZES = {"vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
          "intermediate_size": 64, "max_position_embeddings": 16}  # fmt: skip


def test_stablelm_views_its_keys_by_a_key_value_head_count_lowered_with_the_cut():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = _Logits(transformers.StableLmForCausalLM(transformers.StableLmConfig(num_key_value_heads=2, **_SIZES)))
    ids = torch.randint(0, 50, (2, 8))
    compact = assert_exact_and_smaller(random_gated(model, ids, ("head",)), ids)
    attention = compact.model.model.layers[0].self_attn
    assert attention.num_key_value_heads == 1 and attention.num_heads == 2  # one key/value head and its queries


def test_gpt_neox_fused_query_key_value_laid_out_per_head_loses_heads():
    """GPT-NeoX keeps no head count: it is its ``query_key_value`` rows over ``3 · head_size``,
    each head's query, key and value rows together (viewed as ``(-1, 3 · head_size)``)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = _Logits(transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(use_cache=False, **_SIZES)))
    ids = torch.randint(0, 50, (2, 8))
    gated = random_gated(model, ids, ("head",))
    compact = assert_exact_and_smaller(gated, ids)
    kept = int((sss.gates(gated)[0].weight != 0).sum())
    assert compact.model.gpt_neox.layers[0].attention.query_key_value.out_features == 3 * 8 * kept < 96
