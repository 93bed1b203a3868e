"""A forward for torchvision's Swin window attention after heads are removed.

torchvision's ``ShiftedWindowAttention`` (and its V2) hands its weights to the functional
``shifted_window_attention``, which takes the head width as ``C // num_heads`` and merges the
heads back to ``C``, the input's width; that function is a ``torch.fx`` leaf and branches on the
padded size, so :mod:`sss.structures.width_free_attention` cannot rewrite it. This forward does
the same computation (pad to whole windows, cyclic shift, window partition, attention with the
relative position bias and the shifted-window mask, and back) with the head width taken from
the module, which a cut does not change. The exactness check compares it with torchvision's own
forward (on the gated model) before any head is gated.
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F
from torch import nn

#: The classes this forward serves (torchvision's V2 differs by its cosine attention, read from ``logit_scale``).
CLASSES = ("torchvision.models.swin_transformer.ShiftedWindowAttention",
           "torchvision.models.swin_transformer.ShiftedWindowAttentionV2")  # fmt: skip


def install(attention: nn.Module) -> bool:
    """Gives ``attention`` this forward if it is torchvision's Swin window attention."""
    if f"{type(attention).__module__}.{type(attention).__qualname__}" not in CLASSES:
        return False
    attention.forward = types.MethodType(window_attention, attention)
    return True


def window_attention(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Shifted-window attention of ``x`` (``[B, H, W, C]``), its head width ``qkv``'s rows per head."""
    batch, height, width, channels = x.shape
    wh, ww = self.window_size
    x = F.pad(x, (0, 0, 0, -width % ww, 0, -height % wh))
    ph, pw = x.shape[1], x.shape[2]
    shift = (0 if wh >= ph else self.shift_size[0], 0 if ww >= pw else self.shift_size[1])
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    windows = (ph // wh) * (pw // ww)
    tokens = x.view(batch, ph // wh, wh, pw // ww, ww, channels).permute(0, 1, 3, 2, 4, 5)
    tokens = tokens.reshape(-1, wh * ww, channels)
    out = self.proj(_attend(self, tokens, windows, (ph, pw), shift))
    out = out.view(batch, ph // wh, pw // ww, wh, ww, -1).permute(0, 1, 3, 2, 4, 5).reshape(batch, ph, pw, -1)
    if sum(shift) > 0:
        out = torch.roll(out, shifts=shift, dims=(1, 2))
    return F.dropout(out, p=self.dropout, training=self.training)[:, :height, :width, :].contiguous()


def _attend(self: nn.Module, tokens: torch.Tensor, windows: int, padded: tuple[int, int],
            shift: tuple[int, int]) -> torch.Tensor:  # fmt: skip
    """Multi-head attention within each window of ``tokens`` (``[B·windows, N, C]``): the heads'
    concatenated outputs, ``[B·windows, N, heads·head_dim]``."""
    logit_scale = getattr(self, "logit_scale", None)
    bias = self.qkv.bias
    if logit_scale is not None and bias is not None:  # V2: the keys have no bias
        third = bias.numel() // 3
        bias = torch.cat([bias[:third], torch.zeros_like(bias[third : 2 * third]), bias[2 * third :]])
    n, heads = tokens.shape[1], self.num_heads
    q, k, v = F.linear(tokens, self.qkv.weight, bias).reshape(tokens.shape[0], n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    if logit_scale is not None:  # V2's cosine attention
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    attn = attn + self.get_relative_position_bias()
    if sum(shift) > 0:
        mask = _shift_mask(padded, self.window_size, shift, tokens)
        attn = (attn.view(-1, windows, heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
    attn = F.dropout(F.softmax(attn, dim=-1), p=self.attention_dropout, training=self.training)
    return (attn @ v).transpose(1, 2).reshape(tokens.shape[0], n, -1)


def _shift_mask(padded: tuple[int, int], window: list[int], shift: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """``[windows, N, N]``: ``-100`` between two tokens of a window that the cyclic shift brought
    from different regions of the image, ``0`` within one region."""

    def regions(size: int, win: int, sh: int) -> torch.Tensor:  # 0, 1, 2: before the last window, in it, shifted
        at = torch.arange(size, device=like.device)
        return (at >= size - win).long() + (at >= size - sh).long()

    (ph, pw), (wh, ww) = padded, window
    label = regions(ph, wh, shift[0])[:, None] * 3 + regions(pw, ww, shift[1])[None, :]
    label = label.view(ph // wh, wh, pw // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    apart = label[:, None, :] != label[:, :, None]
    return torch.zeros(apart.shape, dtype=like.dtype, device=like.device).masked_fill(apart, -100.0)
