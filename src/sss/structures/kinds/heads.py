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
``num_heads`` and whose gated form's ``gate`` rows go with their heads), then checked for exact
removal on the example input as every kind is: a forward that reshapes by the original width
(``reshape(B, N, C)`` instead of ``-1``) fails the check and is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from sss.structures.kinds.channels import ChannelGroup, LayerGateKind, LayerSlice
from sss.structures.registry import Discovery, Edit, Removal, register_kind
from sss.structures.tracing import is_attention


def describe_heads(m: nn.Module, path: str, calls: dict[nn.Module, int]) -> ChannelGroup | str:
    """The heads of one attention module, or why they cannot be removed."""
    qkv, proj, heads = m.qkv, m.proj, m.num_heads
    width = proj.in_features
    if qkv.out_features != 3 * width or width % heads:
        return f"qkv gives {qkv.out_features} features, not 3 × proj's {width} input features split in {heads} heads"
    if heads < 2:
        return "it has one head"
    for layer in (qkv, proj):
        if calls.get(layer, 0) > 1:
            return f"its {'qkv' if layer is qkv else 'proj'} is used {calls[layer]} times in forward"
    norm = getattr(m, "norm", None)
    if isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity):
        return f"it normalises the heads' concatenated outputs ({type(norm).__name__}), over a width a cut changes"
    dim = width // heads
    own = [tuple(range(h * dim, (h + 1) * dim)) for h in range(heads)]
    rows = tuple(tuple(i + part * width for part in range(3) for i in own[h]) for h in range(heads))
    values = tuple(tuple(i + 2 * width for i in own[h]) for h in range(heads))
    prefix = f"{path}." if path else ""
    slices = (LayerSlice(f"{prefix}qkv", "out", rows), LayerSlice(f"{prefix}proj", "in", tuple(own)))
    gate = getattr(m, "gate", None)  # timm's gated attention: a sigmoid gate per output feature
    if isinstance(gate, nn.Linear) and gate.out_features == width:
        slices += (LayerSlice(f"{prefix}gate", "out", tuple(own)),)
    return ChannelGroup(name=path, channels=heads, gated=(LayerSlice(f"{prefix}qkv", "out", values),),
                        slices=slices, kind="head")  # fmt: skip


class HeadKind(LayerGateKind):
    """One factor per attention head (timm-style ``qkv`` / ``proj`` attention)."""

    name = "head"
    order = 15
    ops = ("set_heads",)
    not_found = "attention modules with qkv and proj linear layers and num_heads (timm-style)"

    def describe_all(self, discovery: Discovery) -> Iterator[tuple[str, ChannelGroup | str]]:
        for m, path in discovery.names.items():
            if is_attention(m):
                yield path, describe_heads(m, path, discovery.calls)

    def after_cut(self, group: ChannelGroup, keep: torch.Tensor, removal: Removal) -> None:
        if not bool(keep.all()):  # after the cuts: the attention runs with the heads it kept
            edit: Edit = {"op": "set_heads", "path": group.name, "num_heads": int(keep.sum())}

            def set_heads(model: nn.Module) -> list[Edit]:
                self.replay(model, edit)
                return [edit]

            removal.steps.append(set_heads)

    def replay(self, model: nn.Module, edit: Edit) -> None:
        set_num_heads(model.get_submodule(edit["path"]), int(edit["num_heads"]))


def set_num_heads(attention: nn.Module, heads: int) -> None:
    """Lowers an attention module's head count, and its attention width where it keeps one
    (timm's ``attn_dim = num_heads · head_dim``, which its forward reshapes by)."""
    if isinstance(getattr(attention, "attn_dim", None), int) and isinstance(getattr(attention, "head_dim", None), int):
        attention.attn_dim = heads * attention.head_dim
    attention.num_heads = heads


register_kind(HeadKind())
