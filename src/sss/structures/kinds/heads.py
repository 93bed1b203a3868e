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
and value rows together; Hugging Face's separate projections: :mod:`.head_layouts`), then
checked for exact removal on the example input as every kind is. A forward that takes its heads'
width from its input's (``C // num_heads``, ``reshape(B, N, C)``) runs, once cut, a traced
forward with the new width (:mod:`sss.structures.width_free_attention`; torchvision's Swin:
:mod:`sss.structures.torchvision_swin`); what that cannot make exact fails the check and is
skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from sss.structures import torchvision_swin, width_free_attention
from sss.structures.gate import ScaledParameter
from sss.structures.kinds.channels import ChannelGroup, LayerGateKind, LayerSlice
from sss.structures.kinds.head_layouts import (
    describe_heads,
    describe_normed_heads,
    fused_projections,
    is_normed_attention,
    per_head_tensors,
    plain_layer,
)
from sss.structures.paths import keep_along
from sss.structures.registry import Discovery, Edit, Removal, register_kind
from sss.structures.tracing import QKV_NAMES, head_count, is_attention

#: Where a Hugging Face-style attention keeps its output projection: its own attribute, or its
#: parent's ``output.dense`` (BERT's and HF ViT's ``SelfAttention`` / ``SelfOutput`` pair);
#: DistilBERT's ``out_lin`` beside its ``q_lin``/``k_lin``/``v_lin``.
_OUTPUT_NAMES = ("o_proj", "out_proj", "dense", "out_lin")


def separate_projections(m: nn.Module) -> tuple[str, str, str] | None:
    """The attribute names of ``m``'s separate query, key and value linear layers, if it has them."""
    for names in QKV_NAMES:
        if all(isinstance(plain_layer(getattr(m, n, None)), nn.Linear) for n in names):
            return names
    return None


def _output_projection(model: nn.Module, m: nn.Module, path: str) -> str | None:
    prefix = f"{path}." if path else ""
    for name in _OUTPUT_NAMES:
        if isinstance(plain_layer(getattr(m, name, None)), nn.Linear):
            return prefix + name
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    if parent != path and isinstance(plain_layer(getattr(getattr(model.get_submodule(parent), "output", None), "dense",
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
    q, k, v = (plain_layer(getattr(m, n)) for n in names)
    out = plain_layer(model.get_submodule(out_path))
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
        per_head = per_head_tensors(m, prefix, heads, skip=(q, k, v, out))
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
