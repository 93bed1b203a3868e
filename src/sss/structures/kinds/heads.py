"""The head kind: one factor per attention head of timm-style attention, removing whole heads.

An attention module in timm's form has a fused ``qkv`` linear layer (output ``3·D``: the query,
key and value rows of each of ``num_heads`` heads of ``D / num_heads`` features), attention per
head, and a ``proj`` linear layer reading the heads' concatenated outputs (input ``D``). Head
``h``'s factor multiplies its value rows (``λ_h · v_h``), which scales that head's output and
nothing else: the attention weights come from ``q`` and ``k``. So ``λ_h = 0`` zeroes the head's
columns of ``proj``'s input, and the head's ``q``, ``k``, ``v`` rows and those columns can be
cut with ``num_heads`` lowered by one: the same function. The head dim stays.

Found by attributes (a module with ``qkv`` and ``proj`` linear layers and an int ``num_heads``:
the zoo's ViT, torch's rewritten encoder layers, timm's ``Attention``, whose ``attn_dim`` follows
``num_heads`` and whose gated form's ``gate`` rows go with their heads; GPT-2's ``c_attn`` and
``c_proj``; TinyViT's, EfficientFormer's and LeViT's, whose ``qkv`` holds each head's query, key
and value rows together; Hugging Face's separate projections), then checked for exact removal on
the example input as every kind is: a forward that reshapes by the original width
(``reshape(B, N, C)`` instead of ``-1``) fails the check and is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from sss.structures import torchvision_swin, width_free_attention
from sss.structures.gate import ChannelGated, ScaledParameter
from sss.structures.kinds.channels import ChannelGroup, LayerGateKind, LayerSlice
from sss.structures.paths import keep_along
from sss.structures.registry import Discovery, Edit, Removal, register_kind
from sss.structures.tracing import LEAF_NORMS, QKV_NAMES, head_count, in_width, is_attention, out_width

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
        if all(_is_projection(_plain(getattr(m, n, None))) for n in names):
            return names
    return None


def attention_heads(m: nn.Module) -> int | None:
    """``m``'s head count (:func:`head_count`), or GPT-NeoX's, which keeps none: its fused
    ``query_key_value`` rows over ``3 · head_size``."""
    count, size, fused = head_count(m), getattr(m, "head_size", None), _plain(getattr(m, "query_key_value", None))
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
    heads, layers = attention_heads(m), [_plain(getattr(m, n)) for n in names]
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
    per_head = _per_head(m, prefix, heads, skip=(*(getattr(m, n) for n in names), gate))
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
    layer, norm = _plain(getattr(m, "linear", None)), _plain(getattr(m, "bn", None))
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
    per_head = _per_head(m, prefix, heads, skip=(m.qkv, m.proj))
    if isinstance(per_head, str):
        return per_head
    params, layers = per_head
    return ChannelGroup(name=path, channels=heads, gated=(LayerSlice(f"{prefix}qkv.bn", "out", values),),
                        slices=slices + layers, kind="head", per_structure=params)  # fmt: skip


def _per_head(m: nn.Module, prefix: str, heads: int,
              skip: tuple) -> tuple[tuple[tuple[str, int], ...], tuple[LayerSlice, ...]] | str:  # fmt: skip
    """What else an attention keeps per head: float parameters of it (or of a helper module in it,
    not a layer) with one axis of ``heads`` (Swin's relative position bias table, Swin V2's
    ``logit_scale``), and linear layers inside it with ``heads`` outputs (Swin V2's position MLP)."""
    params = []
    for owner, sub in m.named_modules():
        if sub in skip or isinstance(_plain(sub), (nn.Linear, nn.Conv1d, nn.Conv2d, *LEAF_NORMS)):
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
                   and isinstance(_plain(sub), nn.Linear) and _plain(sub).out_features == heads)  # fmt: skip
    return tuple(params), layers


#: Where a Hugging Face-style attention keeps its output projection: its own attribute, or its
#: parent's ``output.dense`` (BERT's and HF ViT's ``SelfAttention`` / ``SelfOutput`` pair);
#: DistilBERT's ``out_lin`` beside its ``q_lin``/``k_lin``/``v_lin``.
_OUTPUT_NAMES = ("o_proj", "out_proj", "dense", "out_lin")


def separate_projections(m: nn.Module) -> tuple[str, str, str] | None:
    """The attribute names of ``m``'s separate query, key and value linear layers, if it has them."""
    for names in QKV_NAMES:
        if all(isinstance(_plain(getattr(m, n, None)), nn.Linear) for n in names):
            return names
    return None


def _plain(layer: nn.Module | None) -> nn.Module | None:
    return layer.inner if isinstance(layer, ChannelGated) else layer


def _output_projection(model: nn.Module, m: nn.Module, path: str) -> str | None:
    prefix = f"{path}." if path else ""
    for name in _OUTPUT_NAMES:
        if isinstance(_plain(getattr(m, name, None)), nn.Linear):
            return prefix + name
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    if parent != path and isinstance(_plain(getattr(getattr(model.get_submodule(parent), "output", None), "dense",
                                                        None)), nn.Linear):  # fmt: skip
        return f"{parent}.output.dense" if parent else "output.dense"
    return None


def describe_separate_heads(
    model: nn.Module, m: nn.Module, path: str, calls: dict[nn.Module, int]
) -> ChannelGroup | str:
    """The heads of a Hugging Face-style attention (separate q/k/v projections, an output
    projection, a per-head width ``head_dim`` or ``attention_head_size``), one structure per
    key/value head: its key and value rows, the rows of the query heads that read it, and those
    heads' columns of the output projection (grouped-query attention keeps its query-per-kv
    ratio). The factor scales the key/value head's value rows."""
    names = separate_projections(m)
    out_path = _output_projection(model, m, path)
    if names is None or out_path is None:
        return "it has no output projection next to its query/key/value layers"
    q, k, v = (_plain(getattr(m, n)) for n in names)
    out = _plain(model.get_submodule(out_path))
    dim = getattr(m, "head_dim", None) or getattr(m, "attention_head_size", None)
    if not isinstance(dim, int) or q.out_features % dim or k.out_features % dim or k.out_features != v.out_features:
        return f"its head width ({dim!r}) does not divide its query/key/value layers"
    heads, kv_heads = q.out_features // dim, k.out_features // dim
    if heads % kv_heads or out.in_features != q.out_features:
        return (f"its {heads} query heads do not share {kv_heads} key/value heads evenly, or its output reads "
                "another width")  # fmt: skip
    if kv_heads < 2:
        return "it has one key/value head"
    for layer in (q, k, v, out):
        if calls.get(layer, 0) > 1:
            return f"a projection of it is used {calls[layer]} times in forward"
    per = heads // kv_heads
    kv_rows = tuple(tuple(range(g * dim, (g + 1) * dim)) for g in range(kv_heads))
    q_rows = tuple(tuple(range(g * per * dim, (g + 1) * per * dim)) for g in range(kv_heads))
    prefix = f"{path}." if path else ""
    qp, kp, vp = (prefix + n for n in names)
    slices = (LayerSlice(qp, "out", q_rows), LayerSlice(kp, "out", kv_rows), LayerSlice(vp, "out", kv_rows),
              LayerSlice(out_path, "in", q_rows))  # fmt: skip
    params: tuple[tuple[str, int], ...] = ()
    if per == 1:  # one query head per structure: per-head parameters (HF Swin's bias table) go with it
        per_head = _per_head(m, prefix, heads, skip=(q, k, v, out))
        if isinstance(per_head, str):
            return per_head
        params, layers = per_head
        slices += layers
    return ChannelGroup(name=path, channels=kv_heads, gated=(LayerSlice(vp, "out", kv_rows),), slices=slices,
                        kind="head", per_structure=params)  # fmt: skip


class HeadKind(LayerGateKind):
    """One factor per attention head (timm-style ``qkv`` / ``proj`` attention)."""

    name = "head"
    order = 15
    ops = ("set_heads",)
    not_found = "attention heads (fused qkv/proj, per-head qkv layouts, or separate q/k/v projections)"
    inexact_causes = (
        "a head is not what its value rows carry: heads merged across the width (NesT's permute puts the head "
        "index last), a query added to the heads' outputs (MViT v2's residual pooling), heads that mix after the "
        "values (DaViT's channel attention); or a per-head tensor the cut does not narrow"
    )

    def describe_all(self, discovery: Discovery) -> Iterator[tuple[str, ChannelGroup | str]]:
        for m, path in discovery.names.items():
            if names := fused_projections(m):
                yield path, describe_heads(m, path, discovery.calls, names)
            elif is_normed_attention(m):
                yield path, describe_normed_heads(m, path, discovery.calls)
            elif separate_projections(m) is not None:
                yield path, describe_separate_heads(discovery.model, m, path, discovery.calls)

    def gate(self, model: nn.Module, candidates: Sequence[ChannelGroup]) -> None:
        super().gate(model, candidates)
        for group in candidates:  # a value bias outside the layer is scaled with the value rows
            for path, _, *per in (p for p in group.per_structure if p[0].endswith(".v_bias") or p[0] == "v_bias"):
                owner_path, _, name = path.rpartition(".")
                gate = model.get_submodule(group.gated[0].path).gate
                parametrize.register_parametrization(model.get_submodule(owner_path), name,
                                                     ScaledParameter(gate, 0, repeat=per[0]))  # fmt: skip

    def after_cut(self, group: ChannelGroup, keep: torch.Tensor, removal: Removal) -> None:
        if not bool(keep.all()):  # after the cuts: the attention runs with the heads it kept

            def set_heads(model: nn.Module) -> list[Edit]:
                heads = int(keep.sum()) * _queries_per_structure(model.get_submodule(group.name), group)
                edit: Edit = {"op": "set_heads", "path": group.name, "num_heads": heads}
                if group.per_structure:
                    edit["per_head"] = [list(p) for p in group.per_structure]
                    edit["kept"] = torch.nonzero(keep).flatten().tolist()
                self.replay(model, edit)
                return [edit]

            removal.steps.append(set_heads)

    def replay(self, model: nn.Module, edit: Edit) -> None:
        set_num_heads(model.get_submodule(edit["path"]), int(edit["num_heads"]))
        for path, axis, *per in edit.get("per_head", []):  # per head, or a head's `per` entries each
            width = int(per[0]) if per else 1
            keep_along(model, path, int(axis), [h * width + i for h in edit["kept"] for i in range(width)])


def _queries_per_structure(attention: nn.Module, group: ChannelGroup) -> int:
    """Query heads per structure: 1 for timm-style heads, the query-per-key/value ratio otherwise
    (read from the slices: a structure's query rows over its key rows)."""
    if fused_projections(attention) or is_normed_attention(attention):
        return 1
    q_rows, k_rows = (len(s.index[0]) for s in group.slices[:2])
    return q_rows // k_rows


def set_num_heads(attention: nn.Module, heads: int) -> None:
    """Lowers an attention module's head count, and its attention width where it keeps one
    (timm's ``attn_dim = num_heads · head_dim`` and TinyViT's ``out_dim = num_heads · val_dim``,
    which their forwards reshape by; Hugging Face's ``num_attention_heads`` and ``all_head_size``,
    which its forward infers with ``-1``)."""
    before = head_count(attention) or getattr(attention, "num_attention_heads", None)
    dim = getattr(attention, "head_dim", None) or getattr(attention, "attention_head_size", None)
    val_dim, key_dim = getattr(attention, "val_dim", None), getattr(attention, "key_dim", None)
    widths = {"attn_dim": dim, "all_head_size": dim, "split_size": dim, "out_dim": val_dim, "val_attn_dim": val_dim,
              "key_attn_dim": key_dim, "dim_out": dim}  # fmt: skip
    for name, per_head in widths.items():  # a width its forward reshapes by, or infers with -1
        if isinstance(getattr(attention, name, None), int) and isinstance(per_head, int):
            setattr(attention, name, heads * per_head)
    for name in ("num_heads", "n_heads", "heads", "num_attention_heads"):
        if isinstance(getattr(attention, name, None), int) or (name == "num_heads" and is_attention(attention)):
            setattr(attention, name, heads)
    groups = getattr(attention, "num_key_value_groups", None)  # query heads per key/value head: kept
    if isinstance(getattr(attention, "num_key_value_heads", None), int) and isinstance(groups, int) and groups:
        attention.num_key_value_heads = heads // groups  # StableLM views its keys by it
    for helper in attention.modules():  # timm's position-bias modules view their output by the head count
        if helper is attention or is_attention(helper):
            continue
        if isinstance(getattr(helper, "num_heads", None), int):
            helper.num_heads = heads
        shape = getattr(helper, "bias_shape", None)
        if isinstance(shape, tuple) and shape and shape[-1] == before:
            helper.bias_shape = (*shape[:-1], heads)
    attention.train(attention.training)  # timm's LeViT-style attention drops its cached per-head biases
    names = fused_projections(attention)  # a forward that reads its input's width as its heads'
    if names and not torchvision_swin.install(attention):
        width_free_attention.install(attention, names[:-1], names[-1:])


register_kind(HeadKind())
