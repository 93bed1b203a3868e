"""Channel and neuron factors on arbitrary models, found by tracing with ``torch.fx``.

A *channel site* is the output of a conv/linear layer (optionally followed by a BatchNorm
and an activation) that reaches exactly one consumer conv/linear layer through ops that keep
channels apart and scale with them (pooling, flatten, dropout, identity). A factor per
channel sits at the end of that chain; a zero factor makes the channel exactly zero, so the
producer's filter, its BN entry and the consumer's input slice can be removed with no change
to the function. Outputs that feed a residual add, a concat or the model output are not
sites (their width is coupled to other layers); issue 3's dependency handling extends this.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from sss.errors import UnsupportedModelError
from sss.structures.gate import Gate

_LAYERS = (nn.Conv2d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
# Activations with f(0) = 0, so a zero channel stays zero after them.
_ACTS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Tanh, nn.ELU, nn.Mish)
# Ops between producer and consumer that act per channel and commute with a factor λ ≥ 0.
_PASS_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Identity,
                 nn.Flatten)  # fmt: skip
_PASS_FUNCTIONS = (torch.flatten, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.dropout)
_RELU_FUNCTIONS = (F.relu, torch.relu)


@dataclass(frozen=True)
class ChannelSite:
    """Where a channel factor sits and which layers its removal touches (module paths)."""

    producer: str
    norm: str | None
    gated: str  # the module wrapped by the gate: producer, norm or activation
    consumer: str
    spatial: int  # elements per channel when a flatten feeds a linear consumer (else 1)
    channels: int


class ChannelGated(nn.Module):
    """Runs ``inner`` then multiplies channel ``c`` of its output by ``gate.weight[c]``."""

    def __init__(self, inner: nn.Module, gate: Gate, site: ChannelSite) -> None:
        super().__init__()
        self.inner, self.gate, self.site = inner, gate, site

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.inner(x))


def _single_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _is_module(node: fx.Node | None, modules: dict[str, nn.Module], types: tuple[type, ...]) -> bool:
    return node is not None and node.op == "call_module" and isinstance(modules[node.target], types)


def _is_passthrough(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if _is_module(node, modules, _PASS_MODULES):
        return True
    if node.op == "call_function" and node.target in _PASS_FUNCTIONS:
        return True
    return node.op == "call_method" and node.target in ("flatten", "contiguous")


def find_channel_sites(model: nn.Module, example_inputs: torch.Tensor) -> tuple[list[ChannelSite], list[str]]:
    """Returns the removable channel sites of ``model`` and, for the conv/linear layers that
    are not sites, a sentence each saying why (for error messages and ``attach`` reports)."""
    try:
        graph_module = fx.symbolic_trace(model)
    except Exception as e:
        raise UnsupportedModelError(
            f"torch.fx cannot trace {type(model).__name__} ({type(e).__name__}: {e}); channel factors need a "
            "traceable forward (no data-dependent Python control flow); use structures=('block',) or "
            "exclude the untraceable submodule"
        ) from e
    was_training = model.training
    graph_module.eval()
    ShapeProp(graph_module).propagate(example_inputs)
    model.train(was_training)
    modules = dict(graph_module.named_modules())
    calls: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    sites, skipped = [], []
    for node in graph_module.graph.nodes:
        if not _is_module(node, modules, _LAYERS):
            continue
        producer = modules[node.target]
        if isinstance(producer, nn.Conv2d) and producer.groups != 1:
            skipped.append(f"{node.target}: grouped conv (group structures are not supported yet)")
            continue
        end, norm = node, None
        nxt = _single_user(end)
        if _is_module(nxt, modules, _NORMS):
            end, norm, nxt = nxt, nxt.target, _single_user(nxt)
        gate_after = end
        if _is_module(nxt, modules, _ACTS):
            gate_after, end, nxt = nxt, nxt, _single_user(nxt)
        elif nxt is not None and nxt.op == "call_function" and nxt.target in _RELU_FUNCTIONS:
            end, nxt = nxt, _single_user(nxt)  # gate before a functional ReLU: exact for λ ≥ 0
        spatial = 1
        while nxt is not None and _is_passthrough(nxt, modules):
            end, nxt = nxt, _single_user(nxt)
        if not _is_module(nxt, modules, _LAYERS):
            skipped.append(f"{node.target}: its output reaches {nxt.format_node() if nxt else 'several ops'}, "
                           "not a single conv/linear layer")  # fmt: skip
            continue
        consumer = modules[nxt.target]
        if isinstance(consumer, nn.Conv2d) and consumer.groups != 1:
            skipped.append(f"{node.target}: feeds the grouped conv {nxt.target}")
            continue
        channels = producer.out_channels if isinstance(producer, nn.Conv2d) else producer.out_features
        if isinstance(consumer, nn.Linear):
            in_shape = nxt.args[0].meta["tensor_meta"].shape
            spatial = in_shape[-1] // channels
            if in_shape[-1] % channels:
                skipped.append(f"{node.target}: {channels} channels do not divide {nxt.target}'s inputs")
                continue
        if calls[gate_after.target] > 1:
            skipped.append(f"{node.target}: module {gate_after.target} is used more than once in forward")
            continue
        sites.append(ChannelSite(node.target, norm, gate_after.target, nxt.target, spatial, channels))
    return sites, skipped


def attach_channel_gates(
    model: nn.Module, example_inputs: torch.Tensor, ignore: Sequence[str] = ()
) -> list[ChannelSite]:
    """Wraps each channel site's last module in :class:`ChannelGated`, in place; sites whose
    producer lies under a path in ``ignore`` are left alone."""
    sites, _ = find_channel_sites(model, example_inputs)
    sites = [s for s in sites if not any(s.producer == p or s.producer.startswith(p + ".") for p in ignore)]
    ref = next(iter(model.parameters()))
    for site in sites:
        inner = model.get_submodule(site.gated)
        gate = Gate("channel", site.channels).to(device=ref.device, dtype=ref.dtype)
        model.set_submodule(site.gated, ChannelGated(inner, gate, site))
    return sites


def _unwrapped(model: nn.Module, path: str) -> nn.Module:
    module = model.get_submodule(path)
    return module.inner if isinstance(module, ChannelGated) else module


def _index(t: torch.Tensor, dim: int, keep: torch.Tensor) -> nn.Parameter | torch.Tensor:
    out = t.detach().index_select(dim, keep).clone()
    return nn.Parameter(out, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else out


def _kept_channels(lam: torch.Tensor, round_to: int) -> torch.Tensor:
    """Indices of the nonzero factors, topped up with the first zero-factor channels to a
    multiple of ``round_to`` (at least one channel): a kept zero channel adds nothing."""
    nonzero = lam != 0
    target = max(1, math.ceil(int(nonzero.sum()) / round_to) * round_to)
    extra = target - int(nonzero.sum())
    if extra > 0:
        zero_idx = torch.nonzero(~nonzero).flatten()[:extra]
        nonzero[zero_idx] = True
    return torch.nonzero(nonzero).flatten()


def prune_channels(model: nn.Module, threshold: float = 0.0, round_to: int = 1) -> None:
    """Removes the zero-factor channels of every :class:`ChannelGated`, in place, and unwraps it.

    The surviving factors are folded into the consumer's input weights (exact for λ ≥ 0 through
    pooling and activations). A layer keeps at least one channel, and with ``round_to`` a
    multiple of that many (fast kernels prefer widths like 8 or 16): the extra channels keep a
    zero factor, so they contribute exactly nothing and the function is unchanged.
    """
    wrapped = [(name, m) for name, m in model.named_modules() if isinstance(m, ChannelGated)]
    for name, wrapper in wrapped:
        site, lam = wrapper.site, wrapper.gate.weight.detach()
        if bool((lam < 0).any()):
            raise UnsupportedModelError(
                f"{name}: negative channel factors cannot be folded exactly; train them with nonneg=True"
            )
        lam = torch.where(lam.abs() <= threshold, torch.zeros_like(lam), lam)
        keep = _kept_channels(lam, round_to)
        producer, consumer = _unwrapped(model, site.producer), _unwrapped(model, site.consumer)
        with torch.no_grad():
            if isinstance(consumer, nn.Conv2d):
                consumer.weight.mul_(lam.view(1, -1, 1, 1))
                consumer.weight = _index(consumer.weight, 1, keep)
                consumer.in_channels = keep.numel()
            else:
                cols = (keep[:, None] * site.spatial + torch.arange(site.spatial)).flatten()
                consumer.weight.mul_(lam.repeat_interleave(site.spatial).view(1, -1))
                consumer.weight = _index(consumer.weight, 1, cols)
                consumer.in_features = cols.numel()
            producer.weight = _index(producer.weight, 0, keep)
            if producer.bias is not None:
                producer.bias = _index(producer.bias, 0, keep)
            if isinstance(producer, nn.Conv2d):
                producer.out_channels = keep.numel()
            else:
                producer.out_features = keep.numel()
            if site.norm is not None:
                norm = _unwrapped(model, site.norm)
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    setattr(norm, attr, _index(getattr(norm, attr), 0, keep))
                norm.num_features = keep.numel()
        model.set_submodule(name, wrapper.inner)
