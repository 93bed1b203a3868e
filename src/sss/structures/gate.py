"""The scaling factor λ that SSS learns for each structure, and how to list them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize


class Gate(nn.Module):
    """Multiplies channel ``c`` of its input by learnable factor ``λ_c``, initialised to 1.

    A block gate holds one scalar, which scales the whole tensor (residual blocks apply it
    inside their last layer instead, see ``ResidualBlock.gated_branch``). The factors are
    trained by a proximal optimizer (:class:`sss.APG`) that drives them to exact zeros.

    Args:
        kind: The registered structure kind the factor scales (``"block"``, ``"channel"``, ...).
        size: Number of factors (1 for a block).
    """

    def __init__(self, kind: str, size: int = 1) -> None:
        super().__init__()
        self.kind = kind
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view((1, -1) + (1,) * (x.dim() - 2))

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, size={self.weight.numel()}"


class ChannelGated(nn.Module):
    """Runs ``inner`` (a layer) and scales each output channel by its group's factor.

    A layer's output channels may belong to several channel groups (a BatchNorm that reads a
    DenseNet concat) and a group's factor scales several layers (every producer of a residual
    sum). So each wrapper holds plain references to the gates of its slices, and ``pick``
    maps output channel ``k`` to its factor in ``[1, *gate weights...]`` (entry 0, a constant
    1, for channels of no group). The gate of a group is registered
    once, as ``.gate`` of the wrapper of the group's first layer (``group`` is set there).
    """

    def __init__(self, inner: nn.Module, width: int) -> None:
        super().__init__()
        self.inner = inner
        self.group: Any = None
        self.slice_gates: list[Gate] = []
        self.register_buffer("pick", torch.zeros(width, dtype=torch.long), persistent=False)
        #: ``inner`` is a norm with an activation of its own (timm's ``BatchNormAct2d``):
        #: ``act(λ·norm(x))`` is what folding λ into the norm's affine gives, and for a
        #: non-homogeneous activation (SiLU, GELU) it is not ``λ·act(norm(x))``.
        self.norm_act = is_norm_act(inner)

    def add_slice(self, gate: Gate, index: Sequence[Sequence[int]], group: Any = None) -> None:
        """Scales output channels ``index[c]`` by ``gate.weight[c]``; ``group`` makes this the owner."""
        offset = 1 + sum(g.weight.numel() for g in self.slice_gates)
        self.slice_gates.append(gate)
        if group is not None:
            self.gate, self.group = gate, group
        for c, outs in enumerate(index):
            self.pick[list(outs)] = offset + c

    def scale(self) -> torch.Tensor:
        """The factor of each output channel (1 where no group owns it)."""
        one = self.slice_gates[0].weight.new_ones(1)
        return torch.cat([one] + [g.weight for g in self.slice_gates])[self.pick]

    def scaled(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` (this layer's output) times the channel factors: along dim 1 for convs and
        BatchNorms, along the last dim for a linear layer (whose input may be ``(B, N, C)``
        tokens, as in a transformer's MLP), an embedding table and a LayerNorm."""
        if isinstance(self.inner, LAST_DIM):
            return y * self.scale()
        return y * self.scale().view((1, -1) + (1,) * (y.dim() - 2))

    @property
    def weight(self) -> torch.Tensor:
        """The wrapped conv/linear/embedding layer's weight with the factors folded in: what a
        model computes with when its code reads the layer's weight itself instead of calling it
        (EVA's and BEiT's ``F.linear(x, self.qkv.weight, qkv_bias)``)."""
        if isinstance(self.inner, nn.Embedding):  # its table's columns are its output channels
            return self.inner.weight * self.scale().view(1, -1)
        if not isinstance(self.inner, nn.Linear | nn.Conv1d | nn.Conv2d):
            raise AttributeError(f"a gated {type(self.inner).__name__} has no folded weight")
        w = self.inner.weight
        return w * self.scale().view(-1, *[1] * (w.dim() - 1))

    @property
    def bias(self) -> torch.Tensor | None:
        """The wrapped conv/linear layer's bias with the factors folded in (see :attr:`weight`)."""
        b = getattr(self.inner, "bias", None)
        return None if b is None else b * self.scale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_act:  # the factor scales the norm's affine, before the layer's own activation
            scale = self.scale()
            affine = {"weight": self.inner.weight * scale, "bias": self.inner.bias * scale}
            return torch.func.functional_call(self.inner, affine, (x,), strict=False)
        return self.scaled(self.inner(x))


#: Layers whose channels are their output's last dim. A LayerNorm is gated only by the embedding
#: kind, which takes one over the last dim alone (``kinds.embedding.is_stream_norm``; a
#: channels-first ``LayerNorm2d`` subclass is refused there).
LAST_DIM = (nn.Linear, nn.Embedding, nn.LayerNorm)


class ScaledParameter(nn.Module):
    """A parametrization (``torch.nn.utils.parametrize``) that reads a parameter as ``λ ⊙ p``
    along ``axis``: a tensor the model adds into a channel stream outside any layer (a ViT's
    ``cls_token`` and ``pos_embed``), or a bias an attention keeps beside its ``qkv`` layer (EVA's
    and BEiT's ``v_bias``, ``repeat`` entries per head). ``gate`` is held by plain reference; it is
    registered once, on the group's first layer."""

    def __init__(self, gate: Gate, axis: int, repeat: int = 1) -> None:
        super().__init__()
        self.gates, self.axis, self.repeat = [gate], axis, repeat

    def along(self, factors: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """``factors`` (one per structure) shaped to multiply ``p`` along :attr:`axis`."""
        shape = [1] * p.dim()
        shape[self.axis] = -1
        return (factors.repeat_interleave(self.repeat) if self.repeat > 1 else factors).view(shape)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return p * self.along(self.gates[0].weight, p)


def is_norm_act(m: nn.Module) -> bool:
    """A BatchNorm subclass with an ``act`` submodule applied in its own forward (timm's norm-act layers)."""
    return (isinstance(m, nn.modules.batchnorm._BatchNorm) and isinstance(getattr(m, "act", None), nn.Module)
            and not isinstance(m.act, nn.Identity) and m.affine)  # fmt: skip


@dataclass(frozen=True)
class GateRef:
    """A gate found in a model: its module path, its kind and its factor parameter."""

    name: str
    kind: str
    module: Gate

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight

    @property
    def num_zero(self) -> int:
        """How many of this gate's factors are exactly zero (the structures to remove)."""
        return int((self.module.weight.detach() == 0).sum())


def gates(model: nn.Module) -> list[GateRef]:
    """Lists every scaling factor of ``model`` in module order."""
    return [GateRef(name, m.kind, m) for name, m in model.named_modules() if isinstance(m, Gate)]


@contextmanager
def factors_restored(model: nn.Module) -> Iterator[list[GateRef]]:
    """Yields the model's gates to change at will (gradients off): every factor gets its value
    back on exit, so that a pattern can be tried, pruned and counted without touching the run."""
    refs = gates(model)
    saved = [r.weight.detach().clone() for r in refs]
    try:
        with torch.no_grad():
            yield refs
    finally:
        with torch.no_grad():
            for r, w in zip(refs, saved, strict=True):
                r.weight.copy_(w)


def factor_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Yields the factor parameters, the ones that belong to the proximal optimizer."""
    for ref in gates(model):
        yield ref.weight


def unwrap_gated_layers(model: nn.Module) -> None:
    """Folds every :class:`ChannelGated` layer's factors into the layer and puts the plain layer
    back in its place, and every :class:`ScaledParameter` into its parameter, in place: the same
    function, with no gate left on any layer or parameter."""
    for owner in list(model.modules()):
        scaled = [n for n, chain in getattr(owner, "parametrizations", {}).items()
                  if any(isinstance(p, ScaledParameter) for p in chain)]  # fmt: skip
        if scaled:
            # A deep copy shares the parametrized class that torch made for the original, and removing
            # a parametrization deletes its property from that class: the copy gets a class of its own.
            cls = type(owner)
            owner.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
        for name in scaled:
            parametrize.remove_parametrizations(owner, name, leave_parametrized=True)
    for name, wrapper in [(n, m) for n, m in model.named_modules() if isinstance(m, ChannelGated)]:
        fold_output_scale(wrapper.inner, wrapper.scale().detach())
        model.set_submodule(name, wrapper.inner)


def fold_output_scale(layer: nn.Module, scale: torch.Tensor) -> None:
    """Scales the output of an affine ``layer`` (BatchNorm, LayerNorm, conv, linear or embedding)
    by ``scale`` in place.

    For a norm this scales γ and β (``λ·(γx̂+β) = (λγ)x̂ + λβ``); for conv/linear the weight and
    bias; for an embedding its table's columns. The result is the same function up to float rounding.
    """
    with torch.no_grad():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm | nn.LayerNorm):
            if layer.weight is None:
                raise ValueError(f"cannot fold a factor into non-affine {layer}; use affine=True")
            layer.weight.mul_(scale)
            if layer.bias is not None:
                layer.bias.mul_(scale)
        elif isinstance(layer, nn.Embedding):
            layer.weight.mul_(scale)
        elif isinstance(layer, nn.Conv2d | nn.Linear | nn.Conv1d):
            layer.weight.mul_(scale.view(-1, *[1] * (layer.weight.dim() - 1)))
            if layer.bias is not None:
                layer.bias.mul_(scale)
        else:
            raise TypeError(f"cannot fold a scaling factor into {type(layer).__name__}")
