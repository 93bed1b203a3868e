"""The embedding kind: one factor per channel of a transformer's residual stream (its width).

A transformer's blocks read and write one stream of ``C`` channels: the patch or token embedding
(with a ``cls_token`` and ``pos_embed`` added outside any layer) writes it, each branch's output
projection adds into it, and every read goes through a LayerNorm (pre-norm: each block's norms
and the final norm; post-norm: the norm after each sum). Torch-Pruning's dependency graph
groups all of these as one channel group. Channel ``c``'s factor ``λ_c`` multiplies:

- every **write**: the output of each conv/linear/embedding layer of the group and every tensor
  the model adds or concatenates into the stream outside a layer (``cls_token``, ``pos_embed``,
  read as ``λ ⊙ p`` through a ``torch.nn.utils.parametrize`` parametrization);
- every **norm's output** (its weight and bias).

So at ``λ_c = 0`` the stream's channel ``c`` is zero everywhere, each norm's output on it is
zero, and every reader's input column ``c`` (``qkv``, ``fc1``, the head) reads zeros. The norms'
statistics still see the zero: the compact model's norms are :class:`FullWidthLayerNorm`, which
divide by the original width, so removal is exact (a plain LayerNorm over the kept width is not:
:func:`sss.structures.use_stock_norms`). Groups without a LayerNorm are the channel kind's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import parametrize

from sss.structures.dependency_graph import unsettled
from sss.structures.full_width_norm import FullWidthLayerNorm
from sss.structures.gate import ScaledParameter
from sss.structures.kinds.channels import ChannelGroup, LayerGateKind, LayerSlice, add_indices, is_grouped, wrap
from sss.structures.paths import keep_along
from sss.structures.registry import Discovery, Edit, Removal, register_kind
from sss.structures.stream_scale import scale_norm_eps
from sss.structures.tracing import LAYERS, NORMS

#: Layers that write into (or read from) a stream: convs, linears and embedding tables.
_STREAM_LAYERS = (*LAYERS, nn.Embedding)
#: LayerNorm classes whose forward is ``F.layer_norm`` over the last dim (timm's ``LayerNorm``
#: only adds a fused-kernel switch); a subclass that permutes (``LayerNorm2d``) is not one.
_LAST_DIM_NORMS = ("torch.nn.modules.normalization.LayerNorm", "timm.layers.norm.LayerNorm")


def is_stream_norm(m: nn.Module) -> bool:
    """An affine LayerNorm over the last dim alone: the norm that reads a residual stream."""
    qualified = f"{type(m).__module__}.{type(m).__qualname__}"
    return (qualified in _LAST_DIM_NORMS and len(m.normalized_shape) == 1
            and m.weight is not None)  # fmt: skip


def describe_stream(graph: tp.DependencyGraph, group, names: dict[nn.Module, str],
                    calls: dict[nn.Module, int]) -> ChannelGroup | str | None:  # fmt: skip
    """One Torch-Pruning group as a residual stream, why it cannot be one, or None if it reads
    through no LayerNorm (then it is a plain channel group)."""
    if reason := unsettled(group):
        return reason
    channels = len(group[0].idxs)
    slices: dict[tuple[str, str], list[list[int]]] = {}
    params: list[tuple[str, int]] = []
    norms = 0
    for item in group:
        node, module = item.dep.target, item.dep.target.module
        role = "out" if item.dep.handler.__name__.endswith("out_channels") else "in"
        if isinstance(module, nn.Parameter):  # a tensor added or concatenated into the stream
            path, axis = graph._param_to_name.get(module, "?"), node.pruning_dim
            if module.shape[axis] != channels:
                continue  # Torch-Pruning couples a tensor it cannot place by its last dim (BEiT's bias table)
            if list(item.idxs) != list(item.root_idxs):
                return f"{path} holds the stream's channels in another order"
            params.append((path, axis))
            continue
        if module not in names:
            continue  # Torch-Pruning's own nodes for adds, reshapes, concats: nothing to cut
        path = names[module]
        if role == "out" and not node.outputs:
            return "its channels reach the model output"
        if isinstance(module, nn.LayerNorm):
            if not is_stream_norm(module):
                return f"{path} ({type(module).__name__}) is not an affine LayerNorm over the last dim"
            if module.normalized_shape[0] != channels:
                return f"{path} normalises {module.normalized_shape[0]} channels, not the stream's {channels}"
            norms, role = norms + 1, "out"
        elif not isinstance(module, _STREAM_LAYERS + NORMS) or is_grouped(module):
            return f"it includes {path} ({type(module).__name__}), whose channels cannot be cut exactly"
        elif isinstance(module, NORMS):
            role = "out"
        if calls.get(module, 0) > 1:
            return f"{path} is used {calls[module]} times in forward"
        if problem := add_indices(slices, path, role, item, module, channels):
            return problem
    if not norms:
        return None
    all_slices = [LayerSlice(p, r, tuple(tuple(ix) for ix in index)) for (p, r), index in slices.items()]
    order = {path: i for i, path in enumerate(names.values())}  # the gate sits on the first write (the embedding)
    gated = sorted((s for s in all_slices if s.role == "out"), key=lambda s: order[s.path])
    if not gated:
        return "nothing writes into it through a layer"
    return ChannelGroup(name=gated[0].path, channels=channels, gated=tuple(gated), slices=tuple(all_slices),
                        kind="embedding", per_structure=tuple(params))  # fmt: skip


class EmbeddingKind(LayerGateKind):
    """One factor per channel of each residual stream read through LayerNorms (a transformer's
    embedding width), removed from every layer, norm and token that carries it."""

    name = "embedding"
    order = 12
    ops = ("narrow_stream", "scale_stream")
    not_found = "residual streams read through LayerNorms (a transformer's embedding width)"

    def describe_all(self, discovery: Discovery) -> Iterator[tuple[str, ChannelGroup | str]]:
        graph = discovery.graph
        for tp_group in graph.get_all_groups(root_module_types=_STREAM_LAYERS):
            root = discovery.names.get(tp_group[0].dep.target.module, "?")
            described = describe_stream(graph, tp_group, discovery.names, discovery.calls)
            if described is not None:
                yield root, described

    def gate(self, model: nn.Module, candidates: Sequence[ChannelGroup]) -> None:
        for group in candidates:
            wrap(model, group)
            gate = model.get_submodule(group.gated[0].path).gate
            for path, axis in group.per_structure:
                owner_path, _, name = path.rpartition(".")
                parametrize.register_parametrization(model.get_submodule(owner_path), name, ScaledParameter(gate, axis))

    def after_cut(self, group: ChannelGroup, keep: torch.Tensor, removal: Removal) -> None:
        if bool(keep.all()):
            return

        def narrow(model: nn.Module) -> list[Edit]:
            norms = [s.path for s in group.gated if isinstance(model.get_submodule(s.path), nn.LayerNorm)]
            edit: Edit = {"op": "narrow_stream", "width": group.channels, "norms": norms,
                          "params": [list(p) for p in group.per_structure],
                          "kept": torch.nonzero(keep).flatten().tolist()}  # fmt: skip
            self.replay(model, edit)
            return [edit]

        removal.steps.append(narrow)

    def replay(self, model: nn.Module, edit: Edit) -> None:
        """``narrow_stream``: cuts the stream's tokens to the kept channels and makes its norms
        divide by the full width; ``scale_stream``: the norms' ``ε`` of a rescaled stream."""
        if edit["op"] == "scale_stream":
            scale_norm_eps(model, edit)
            return
        for path, axis in edit["params"]:
            keep_along(model, path, int(axis), edit["kept"])
        for path in edit["norms"]:
            model.set_submodule(path, FullWidthLayerNorm.from_norm(model.get_submodule(path), int(edit["width"])))


register_kind(EmbeddingKind())
