"""``torch.nn``'s transformer encoder rewritten as modules that sss can trace, gate and cut.

``nn.TransformerEncoderLayer`` and ``nn.TransformerEncoder`` cannot be traced by ``torch.fx``
(their forward branches on the input to pick a fused fast path), and ``nn.MultiheadAttention``
cannot lose a head: its fused ``in_proj_weight`` must stay ``3·E × E`` with ``E`` the input width,
and its forward asserts ``num_heads · head_dim = E``. So :func:`convert_torch_transformers`
replaces them, before tracing, with :class:`EncoderStack`, :class:`EncoderLayer` and
:class:`SelfAttention`: the same computation (the slow path of torch's own forward, checked on the
example input at attach), the same module paths and attribute names (``self_attn``, ``linear1``,
``norm1``, ...), and timm's ``qkv`` / ``proj`` layers in the attention, which the ``head`` kind
knows how to cut. The conversion is an edit in the model's history (``convert_transformers``),
replayed on load before any cut.

Only self-attention is converted: an encoder layer's ``self_attn``, and a free-standing
``nn.MultiheadAttention`` that the model calls with one tensor as query, key and value
(torchvision's ViT: ``self.self_attention(x, x, x)``). Whether it is called that way shows only
on a forward, so the free-standing ones are converted first and checked on the example with the
rest; if that changes the output (a cross-attention), they are left as they were and only the
encoder layers are converted. ``nn.TransformerDecoderLayer`` is left as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_flatten

from sss.errors import UnsupportedModelError
from sss.structures.paths import under

TORCH_TRANSFORMERS = (nn.TransformerEncoder, nn.TransformerEncoderLayer)


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask (True: not attended, torch's convention) as an additive float mask."""
    if mask is None or mask.dtype != torch.bool:
        return mask if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


class SelfAttention(nn.Module):
    """``nn.MultiheadAttention`` used as self-attention, with a fused ``qkv`` and a ``proj`` layer.

    Takes ``nn.MultiheadAttention``'s arguments and returns ``(output, weights)`` as it does,
    but its width is ``num_heads × head_dim`` however many heads are left (it reshapes by
    ``-1``), so heads can be removed. Masks: ``attn_mask`` of shape ``(L, S)`` and
    ``key_padding_mask`` of shape ``(B, S)``, boolean (True: not attended) or additive.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = False) -> None:  # fmt: skip
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} does not split into {num_heads} heads")
        self.num_heads, self.dropout, self.batch_first = num_heads, dropout, batch_first
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> SelfAttention:
        """The same attention, sharing ``mha``'s weights; refuses what it cannot compute the same way."""
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise UnsupportedModelError("nn.MultiheadAttention with kdim/vdim, add_bias_kv or add_zero_attn cannot be "
                                        "converted for head removal; pass its path in ignore=")  # fmt: skip
        out = cls(mha.embed_dim, mha.num_heads, dropout=mha.dropout, bias=mha.in_proj_bias is not None,
                  batch_first=mha.batch_first).to(mha.in_proj_weight)  # fmt: skip
        out.qkv.weight, out.proj.weight = mha.in_proj_weight, mha.out_proj.weight
        if mha.in_proj_bias is not None:
            out.qkv.bias, out.proj.bias = mha.in_proj_bias, mha.out_proj.bias
        return out

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise ValueError("a converted attention is self-attention: key and value must be the query")
        if is_causal and attn_mask is None:
            raise RuntimeError("is_causal is a hint: pass the causal attn_mask too (as nn.MultiheadAttention asks)")
        if attn_mask is not None and attn_mask.dim() != 2:
            raise ValueError(f"attn_mask must be (L, S) after head removal, got {tuple(attn_mask.shape)}: a "
                             "per-head mask no longer matches the heads kept")  # fmt: skip
        x = query if self.batch_first else query.transpose(0, 1)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        mask = _additive(attn_mask, q.dtype)
        if key_padding_mask is not None:
            padding = _additive(key_padding_mask, q.dtype).view(b, 1, 1, n)
            mask = padding if mask is None else mask + padding
        p = self.dropout if self.training else 0.0
        if need_weights:
            logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
            weights = (logits if mask is None else logits + mask).softmax(dim=-1)
            out = F.dropout(weights, p) @ v
        else:
            out, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p), None
        out = self.proj(out.transpose(1, 2).reshape(b, n, -1))
        out = out if self.batch_first else out.transpose(0, 1)
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        return out, weights


class EncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer``'s computation (its slow path), with its attribute names."""

    def __init__(self, layer: nn.TransformerEncoderLayer) -> None:
        super().__init__()
        self.self_attn = SelfAttention.from_torch(layer.self_attn)
        self.linear1, self.dropout, self.linear2 = layer.linear1, layer.dropout, layer.linear2
        self.norm_first, self.norm1, self.norm2 = layer.norm_first, layer.norm1, layer.norm2
        self.dropout1, self.dropout2 = layer.dropout1, layer.dropout2
        self.activation: Callable[[torch.Tensor], torch.Tensor] = layer.activation

    def _sa_block(self, x: torch.Tensor, mask: torch.Tensor | None, padding: torch.Tensor | None) -> torch.Tensor:
        return self.dropout1(self.self_attn(x, x, x, attn_mask=mask, key_padding_mask=padding, need_weights=False)[0])

    def _ff_block(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:  # fmt: skip
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask))
        return self.norm2(x + self._ff_block(x))


class EncoderStack(nn.Module):
    """``nn.TransformerEncoder``: its layers in order, then its optional final norm."""

    def __init__(self, encoder: nn.TransformerEncoder, keep: Sequence[int] = ()) -> None:
        """``keep``: indices of layers left as they are (ignored ones)."""
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(m) if isinstance(m, nn.TransformerEncoderLayer) and i not in keep else m
            for i, m in enumerate(encoder.layers)
        )
        self.num_layers, self.norm = len(self.layers), encoder.norm

    def forward(self, src: torch.Tensor, mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None,
                is_causal: bool | None = None) -> torch.Tensor:  # fmt: skip
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask)
        return x if self.norm is None else self.norm(x)


def has_torch_transformers(model: nn.Module) -> bool:
    """Whether ``model`` holds an ``nn.TransformerEncoder``, ``nn.TransformerEncoderLayer`` or
    ``nn.MultiheadAttention``."""
    return any(isinstance(m, (*TORCH_TRANSFORMERS, nn.MultiheadAttention)) for m in model.modules())


def _replace(module: nn.Module, ignore: tuple[str, ...], prefix: str = "", standalone: bool = False) -> list[str]:
    done = []
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if under(path, ignore):
            continue
        if isinstance(child, nn.TransformerEncoder):
            keep = [i for i in range(len(child.layers)) if under(f"{path}.layers.{i}", ignore)]
            setattr(module, name, EncoderStack(child, keep))
        elif isinstance(child, nn.TransformerEncoderLayer):
            setattr(module, name, EncoderLayer(child))
        elif standalone and isinstance(child, nn.MultiheadAttention):
            try:
                setattr(module, name, SelfAttention.from_torch(child))
            except UnsupportedModelError:
                continue  # kdim/vdim, bias_kv: left as it is (no heads), not a refusal of the model
        else:
            done += _replace(child, ignore, f"{path}.", standalone)
            continue
        done.append(path)
    return done


def _outputs(model: nn.Module, example: torch.Tensor) -> list[torch.Tensor]:
    return [t for t in tree_flatten(model(example))[0] if isinstance(t, torch.Tensor)]


def _same_function(before: nn.Module, model: nn.Module, example: torch.Tensor) -> bool:
    """Whether ``model`` computes ``before``'s outputs on ``example`` in eval mode (a forward that
    raises, such as a converted attention called as cross-attention, does not)."""
    modes = {m: m.training for m in model.modules()}
    try:
        expected, got = _outputs(before.eval(), example), _outputs(model.eval(), example)
    except (ValueError, RuntimeError):
        return False
    finally:
        for m, training in modes.items():
            m.train(training)
    return len(expected) == len(got) and all(
        a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(a.abs().max())))
        for a, b in zip(expected, got, strict=True)
    )


@torch.no_grad()
def convert_torch_transformers(model: nn.Module, example: torch.Tensor | None = None, ignore: Sequence[str] = (),
                               standalone: bool | None = None) -> list[str]:  # fmt: skip
    """Replaces ``model``'s torch encoder stacks and layers in place (see the module's doc),
    except those at or under a path in ``ignore``, and returns their paths. With ``example``,
    checks that the model computes the same outputs on it (in eval mode): free-standing
    attentions that break it are left as they were (``standalone=None``: tried, then dropped),
    and a conversion of encoder layers that breaks it raises ``UnsupportedModelError``, leaving
    ``model`` as it was. A replay passes ``standalone`` as the attach decided it."""
    if not has_torch_transformers(model):
        return []
    if example is None:
        return _replace(model, tuple(ignore), standalone=bool(standalone))
    for attempt in (True, False) if standalone is None else (standalone,):
        before = copy.deepcopy(model)
        paths = _replace(model, tuple(ignore), standalone=attempt)
        if not paths or _same_function(before, model, example):
            return paths
        for name, child in before.named_children():  # undo: the model is left as it was
            setattr(model, name, child)
        if not attempt:
            raise UnsupportedModelError(f"rewriting {', '.join(paths)} for tracing changes the model's output on "
                                        "the example; pass those paths in ignore= and report the model")  # fmt: skip
    return []
