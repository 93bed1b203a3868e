"""Where the heads of an attention lie in its layers: the fused query/key/value layouts (timm's
``qkv`` as ``(3, heads, head_dim)``; per head as ``(heads, 2·key_dim + val_dim)``: TinyViT,
EfficientFormer, LeViT, MaxViT, GPT-NeoX; PVT's ``q`` beside a fused ``kv``), LeViT's layers
with their own BatchNorm, and what else an attention keeps per head. Each ``describe_*`` gives
one attention's :class:`ChannelGroup` of heads, or why its heads cannot be removed; the
:mod:`head kind <sss.structures.kinds.heads>` checks and cuts them."""

from __future__ import annotations

import torch
from torch import nn

from sss.structures.gate import ChannelGated
from sss.structures.kinds.channels import ChannelGroup, LayerSlice
from sss.structures.tracing import LEAF_NORMS, head_count, in_width, out_width

#: A fused query/key/value layer and the output projection: timm's names, GPT-2's (its ``Conv1D``
#: layers rewritten as ``nn.Linear`` before discovery, :mod:`sss.structures.conv1d`) and
#: torchvision MaxViT's, GPT-NeoX's; and a query layer beside a fused key/value one (timm's PVT v2).
FUSED_NAMES = (
    ("qkv", "proj"),
    ("c_attn", "c_proj"),
    ("to_qkv", "merge"),
    ("query_key_value", "dense"),
    ("q", "kv", "proj"),
)


def fused_projections(m: nn.Module) -> tuple[str, ...] | None:
    """The names of ``m``'s fused query/key/value layer (or query and key/value layers) and
    output projection, if it is an attention of that form: linear or 1×1 convolutional layers,
    maybe gated, and a head count (:func:`attention_heads`)."""
    if attention_heads(m) is None:
        return None
    for names in FUSED_NAMES:
        if all(_is_projection(plain_layer(getattr(m, n, None))) for n in names):
            return names
    return None


def attention_heads(m: nn.Module) -> int | None:
    """``m``'s head count (:func:`head_count`), or GPT-NeoX's, which keeps none: its fused
    ``query_key_value`` rows over ``3 · head_size``."""
    count, size, fused = head_count(m), getattr(m, "head_size", None), plain_layer(getattr(m, "query_key_value", None))
    if count is None and isinstance(size, int) and isinstance(fused, nn.Linear) and not fused.out_features % (3 * size):
        return fused.out_features // (3 * size)
    return count


def _is_projection(layer: nn.Module | None) -> bool:
    return isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1)
                                            and layer.groups == 1)  # fmt: skip


def _qkv_layout(m: nn.Module, out: int, width: int, heads: int) -> tuple[tuple[tuple[int, ...], ...], ...] | str:
    """Each head's ``qkv`` rows (query, key and value), its value rows, and its columns of ``proj``.

    Two layouts: timm's (``qkv`` reshaped to ``(3, heads, head_dim)``: all queries, then all keys,
    then all values) and per head (``qkv`` reshaped to ``(heads, 2·key_dim + val_dim)`` then split:
    TinyViT's, EfficientFormer's and LeViT's, found by their int ``key_dim`` and ``val_dim``;
    MaxViT's with ``head_first``)."""
    key_dim, val_dim = getattr(m, "key_dim", None), getattr(m, "val_dim", None)
    if getattr(m, "head_first", False) is True and isinstance(getattr(m, "dim_head", None), int):
        key_dim = val_dim = m.dim_head  # MaxViT's and CoAtNet's: (heads, 3 · dim_head), then chunked
    if isinstance(getattr(m, "head_size", None), int) and hasattr(m, "query_key_value"):
        key_dim = val_dim = m.head_size  # GPT-NeoX's: the same, viewed as (-1, 3 · head_size)
    if isinstance(key_dim, int) and isinstance(val_dim, int):
        block = 2 * key_dim + val_dim
        if out != heads * block or width != heads * val_dim:
            return f"qkv gives {out} features, not {heads} heads of 2 × {key_dim} key and {val_dim} value features"
        rows = tuple(tuple(range(h * block, (h + 1) * block)) for h in range(heads))
        values = tuple(tuple(range(h * block + 2 * key_dim, (h + 1) * block)) for h in range(heads))
        own = tuple(tuple(range(h * val_dim, (h + 1) * val_dim)) for h in range(heads))
        return rows, values, own
    if out != 3 * width or width % heads:
        return f"qkv gives {out} features, not 3 × proj's {width} input features split in {heads} heads"
    dim = width // heads
    own = tuple(tuple(range(h * dim, (h + 1) * dim)) for h in range(heads))
    rows = tuple(tuple(i + part * width for part in range(3) for i in own[h]) for h in range(heads))
    values = tuple(tuple(i + 2 * width for i in own[h]) for h in range(heads))
    return rows, values, own


def _normalises_heads(m: nn.Module, norm: nn.Module, width: int, qkv: nn.Module) -> bool:
    """Whether an attention's ``norm`` may read the heads' concatenated outputs (timm's
    ``scale_norm``), not its input (TinyViT's), told by width; where both widths are the same, an
    attention laid out per head (``key_dim``, ``val_dim``: TinyViT's) normalises its input, and
    any other is taken to normalise its heads (refused rather than guessed)."""
    normalized = getattr(norm, "normalized_shape", None)
    features = normalized[-1] if normalized else getattr(norm, "num_features", None)
    if features != width:
        return features is None
    per_head = all(isinstance(getattr(m, a, None), int) for a in ("key_dim", "val_dim"))
    return features != in_width(qkv) or not per_head


def describe_heads(m: nn.Module, path: str, calls: dict[nn.Module, int],
                   names: tuple[str, ...] = ("qkv", "proj")) -> ChannelGroup | str:  # fmt: skip
    """The heads of one attention module with a fused query/key/value layer (or a query layer and
    a fused key/value one) and an output projection (``names``), or why they cannot be removed."""
    *inputs, proj_name = names
    heads, layers = attention_heads(m), [plain_layer(getattr(m, n)) for n in names]
    width = in_width(layers[-1])
    if len(inputs) == 2:  # PVT's q and kv: the query rows, then the key/value rows of each head
        if out_width(layers[0]) != width or out_width(layers[1]) != 2 * width or width % heads:
            return f"its q and kv layers do not give {width} and 2 × {width} features in {heads} heads"
        dim = width // heads
        own = tuple(tuple(range(h * dim, (h + 1) * dim)) for h in range(heads))
        key_values = tuple(own[h] + tuple(i + width for i in own[h]) for h in range(heads))
        rows, values = (own, key_values), tuple(tuple(i + width for i in own[h]) for h in range(heads))
    else:
        layout = _qkv_layout(m, out_width(layers[0]), width, heads)
        if isinstance(layout, str):
            return layout
        query_key_values, values, own = layout
        rows = (query_key_values,)
    if heads < 2:
        return "it has one head"
    for name, layer in zip(names, layers, strict=True):
        if calls.get(layer, 0) > 1:
            return f"its {name} is used {calls[layer]} times in forward"
    norm = getattr(m, "norm", None)
    if (len(inputs) == 1 and isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity)
            and _normalises_heads(m, norm, width, layers[0])):  # fmt: skip
        return f"it normalises the heads' concatenated outputs ({type(norm).__name__}), over a width a cut changes"
    prefix = f"{path}." if path else ""
    slices = tuple(LayerSlice(prefix + n, "out", r) for n, r in zip(inputs, rows, strict=True))
    slices += (LayerSlice(prefix + proj_name, "in", own),)
    gate = getattr(m, "gate", None)  # timm's gated attention: a sigmoid gate per output feature
    if isinstance(gate, nn.Linear) and gate.out_features == width:
        slices += (LayerSlice(f"{prefix}gate", "out", own),)
    per_head = per_head_tensors(m, prefix, heads, skip=(*(getattr(m, n) for n in names), gate))
    if isinstance(per_head, str):
        return per_head
    params, extra = per_head
    if len(inputs) == 1 and not _is_per_head_layout(m):  # EVA's and BEiT's biases beside qkv: a head's entries
        params += tuple((prefix + b, 0, width // heads) for b in _QKV_BIASES if _is_bias(getattr(m, b, None), width))
    return ChannelGroup(name=path, channels=heads, gated=(LayerSlice(prefix + inputs[-1], "out", values),),
                        slices=slices + extra, kind="head", per_structure=params)  # fmt: skip


#: The query, key and value biases EVA and BEiT keep beside a bias-free ``qkv`` (its forward adds
#: ``cat(q_bias, k_bias, v_bias)``); ``v_bias`` is scaled with the value rows it goes with.
_QKV_BIASES = ("q_bias", "k_bias", "v_bias")


def _is_bias(tensor: object, width: int) -> bool:
    return isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tuple(tensor.shape) == (width,)


def _is_per_head_layout(m: nn.Module) -> bool:
    return all(isinstance(getattr(m, a, None), int) for a in ("key_dim", "val_dim")) or bool(
        getattr(m, "head_first", False))  # fmt: skip


def _layer_and_norm(m: nn.Module | None) -> tuple[nn.Module, nn.Module] | None:
    """A LeViT ``LinearNorm``/``ConvNorm``'s layer and BatchNorm (``linear`` and ``bn``), if ``m`` is one."""
    layer, norm = plain_layer(getattr(m, "linear", None)), plain_layer(getattr(m, "bn", None))
    if isinstance(layer, nn.Linear | nn.Conv2d) and isinstance(norm, nn.BatchNorm1d | nn.BatchNorm2d):
        return layer, norm
    return None


def is_normed_attention(m: nn.Module) -> bool:
    """Whether ``m`` is LeViT's attention: ``qkv`` a layer with its BatchNorm, ``proj`` a sequence
    ending in one, an int ``num_heads``, ``key_dim`` and ``val_dim`` (its per-head layout)."""
    proj = getattr(m, "proj", None)
    return (isinstance(getattr(m, "num_heads", None), int) and _layer_and_norm(getattr(m, "qkv", None)) is not None
            and isinstance(proj, nn.Sequential) and len(proj) > 0 and _layer_and_norm(proj[-1]) is not None
            and all(isinstance(getattr(m, a, None), int) for a in ("key_dim", "val_dim")))  # fmt: skip


def describe_normed_heads(m: nn.Module, path: str, calls: dict[nn.Module, int]) -> ChannelGroup | str:
    """The heads of LeViT's attention: each head's block of ``qkv``'s rows and of its BatchNorm,
    and its columns of the last projection layer. The factor scales the head's value channels
    after the BatchNorm; the activation before the projection keeps zeros (LeViT's Hardswish)."""
    (layer, norm), heads = _layer_and_norm(m.qkv), m.num_heads
    proj_layer, _ = _layer_and_norm(m.proj[-1])
    layout = _qkv_layout(m, out_width(layer), in_width(proj_layer), heads)
    if isinstance(layout, str):
        return layout
    if heads < 2:
        return "it has one head"
    if any(calls.get(x, 0) > 1 for x in (layer, norm, proj_layer)):
        return "a layer of it is used more than once in forward"
    rows, values, own = layout
    prefix = f"{path}." if path else ""
    last = f"{prefix}proj.{list(m.proj._modules)[-1]}"  # named ("ln") or numbered
    slices = (LayerSlice(f"{prefix}qkv.linear", "out", rows), LayerSlice(f"{prefix}qkv.bn", "out", rows),
              LayerSlice(f"{last}.linear", "in", own))  # fmt: skip
    per_head = per_head_tensors(m, prefix, heads, skip=(m.qkv, m.proj))
    if isinstance(per_head, str):
        return per_head
    params, layers = per_head
    return ChannelGroup(name=path, channels=heads, gated=(LayerSlice(f"{prefix}qkv.bn", "out", values),),
                        slices=slices + layers, kind="head", per_structure=params)  # fmt: skip


def per_head_tensors(m: nn.Module, prefix: str, heads: int,
              skip: tuple) -> tuple[tuple[tuple[str, int], ...], tuple[LayerSlice, ...]] | str:  # fmt: skip
    """What else an attention keeps per head: float parameters of it (or of a helper module in it,
    not a layer) with one axis of ``heads`` (Swin's relative position bias table, Swin V2's
    ``logit_scale``), and linear layers inside it with ``heads`` outputs (Swin V2's position MLP)."""
    params = []
    for owner, sub in m.named_modules():
        if sub in skip or isinstance(plain_layer(sub), (nn.Linear, nn.Conv1d, nn.Conv2d, *LEAF_NORMS)):
            continue
        for name, p in [*sub.named_parameters(recurse=False), *sub.named_buffers(recurse=False)]:
            axes = [a for a, n in enumerate(p.shape) if n == heads]
            if not p.is_floating_point() or not axes:
                continue
            if len(axes) > 1:
                return f"its {name} has {len(axes)} axes of {heads} (the heads): which one is per head is unclear"
            params.append((prefix + (f"{owner}." if owner else "") + name, axes[0]))
    layers = tuple(LayerSlice(prefix + name, "out", tuple((h,) for h in range(heads)))
                   for name, sub in m.named_modules() if name and sub not in skip
                   and isinstance(plain_layer(sub), nn.Linear) and plain_layer(sub).out_features == heads)  # fmt: skip
    return tuple(params), layers


def plain_layer(layer: nn.Module | None) -> nn.Module | None:
    """``layer`` itself, or the layer a gate wraps."""
    return layer.inner if isinstance(layer, ChannelGated) else layer
