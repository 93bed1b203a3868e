"""A forward for a compact attention whose own code reads its input's width as its heads' width.

Many attention modules take ``B, N, C = x.shape`` and then use ``C`` where they mean the width of
the heads' concatenated outputs: ``C // self.num_heads`` for the head width, ``reshape(B, N, C)``
to merge the heads before the output projection (timm's relative-position ViT, EVA, BEiT, NesT,
XCiT, DaViT...). The two widths are equal until heads are removed; then that code refuses the
narrower tensors. Rewriting a forward per class would copy, and go stale with, each model's code;
instead the compact attention is traced with ``torch.fx`` (after its cut, so the graph holds its
new ``num_heads``), and in the ops *between* its query/key/value layers and its output projection,
the only place where the input's width can stand for the heads', every shape argument computed
from the input's width is recomputed with the heads' new width. Outside that region (a window
partition of the input, the output's shape) the input's width keeps its meaning.

The traced forward is specialised on what tracing fixes: the module's mode and the arguments that
are not tensors (``None`` for an optional bias, a flag). It is traced on the first call of each
such combination and cached on the module. Whatever the rewrite misses (a width read some other
way) makes the compact model differ from the gated one, and the exactness check that every kind
passes before anything is gated then refuses the heads with the reason.
"""

from __future__ import annotations

import inspect
import operator
import types
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import fx, nn

#: The attribute a compact attention keeps its traced forwards in, by mode and non-tensor arguments.
CACHE = "_sss_width_free_forwards"
_INT_OPS = {operator.floordiv, operator.mul, operator.add, operator.sub, operator.truediv, operator.pow,
            operator.neg, operator.mod}  # fmt: skip


class _Tracer(fx.Tracer):
    """Traces through everything but torch's own layers (so a helper module's use of the width,
    such as a relative-position MLP's, is in the graph); buffers stay live ``get_attr`` reads."""

    proxy_buffer_attributes = True


def install(attention: nn.Module, sources: Iterable[str], sinks: Iterable[str]) -> bool:
    """Gives ``attention`` (already cut) a traced forward where its code reads its input's width
    between ``sources`` (its query/key/value layers) and ``sinks`` (its output projection);
    whether it did. Traced once here with the forward's defaults: where that shows the width is
    not read there (timm's ``Attention``), or where it cannot be traced, its own forward stays;
    where it needs an argument it has no default for (PVT's size), the traced forward is tried on
    the first call, and the module's own forward runs if that fails too."""
    sources, sinks = tuple(sources), tuple(sinks)
    params = list(inspect.signature(type(attention).forward).parameters.values())[2:]
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return False  # arguments a trace cannot fix (Hugging Face's **kwargs); such forwards infer widths
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty
                and not isinstance(p.default, torch.Tensor)}  # fmt: skip
    try:
        if _rewrite(attention, sources, sinks, defaults) is None:
            return False
    except Exception:  # untraceable, unless an argument it requires (a size) was missing
        if len(defaults) == len(params):
            return False
    signature = inspect.signature(type(attention).forward)  # read once: bound on every call
    setattr(attention, CACHE, {"sources": sources, "sinks": sinks, "signature": signature})
    attention.forward = types.MethodType(_width_free_forward, attention)
    return True


def _width_free_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    cache = getattr(self, CACHE)
    bound = cache["signature"].bind(self, *args, **kwargs)
    bound.apply_defaults()
    fixed = {k: v for k, v in list(bound.arguments.items())[1:] if not isinstance(v, torch.Tensor)}
    if not all(_plain(v) for v in fixed.values()):  # tensors in a tuple, a cache object: not traced per value
        return type(self).forward(*bound.args, **bound.kwargs)
    key = (self.training, repr(sorted(fixed.items())))
    if key not in cache:
        try:
            forward = _rewrite(self, cache["sources"], cache["sinks"], fixed)
        except Exception:  # untraceable even so: its own forward runs (and the exactness check decides)
            forward = None
        cache[key] = forward if forward is not None else type(self).forward
    return cache[key](*bound.args, **bound.kwargs)  # a traced forward keeps the fixed arguments' places


def _plain(value: Any) -> bool:
    """Whether ``value`` may key a traced forward: ``None``, a number, a string or a flag, or a
    list or tuple of them (a size)."""
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)


def _rewrite(attention: nn.Module, sources: tuple[str, ...], sinks: tuple[str, ...],
             fixed: dict[str, Any]) -> Callable[..., Any] | None:  # fmt: skip
    """The forward of ``attention`` traced with ``fixed`` arguments and its input's width
    replaced between ``sources`` and ``sinks``, or ``None`` where that width is not read there."""
    forward = attention.__dict__.pop("forward", None)  # trace the class's own forward
    try:
        before = set(vars(attention))
        with warnings.catch_warnings():  # fx cannot guard the fixed arguments: the cache is keyed by them
            warnings.simplefilter("ignore", UserWarning)
            graph = _Tracer().trace(attention, concrete_args=fixed or None)
    finally:
        for name in set(vars(attention)) - before:
            delattr(attention, name)
        if forward is not None:
            attention.forward = forward
    channels_first = isinstance(attention.get_submodule(sources[0]), nn.Conv2d)
    width = _heads_width(attention, sinks[0])
    region = _between(graph, sources, sinks)
    first = list(inspect.signature(type(attention).forward).parameters)[1]  # the input, after self
    x = next(n for n in graph.nodes if n.op == "placeholder" and n.target == first)
    widths = _width_nodes(x, channels_first)
    if not widths or not _substitute(graph, widths, region, width):
        return None
    if any(n.op == "get_attr" and not _has_path(attention, n.target) for n in graph.nodes):
        return None  # a constant the tracer made: the module cannot read it
    traced = fx.GraphModule(attention, graph)
    forward, specs = type(traced).forward, {k: v for k, v in vars(traced).items() if k in _SPECS}
    return forward if not specs else lambda module, *a, **k: forward(_WithSpecs(module, specs), *a, **k)


#: What a forward traced with fixed arguments reads off its module besides the module's own
#: attributes: the layout of its flattened arguments and output (``torch.fx``'s pytree codegen).
_SPECS = ("_in_spec", "_out_spec")


class _WithSpecs:
    """A module as a traced forward sees it: its own attributes, and the argument layouts."""

    def __init__(self, module: nn.Module, specs: dict[str, Any]) -> None:
        self.__dict__.update(specs, _module=module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_module"], name)


def _heads_width(attention: nn.Module, sink: str) -> int:
    layer = attention.get_submodule(sink)
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


def _has_path(module: nn.Module, target: str) -> bool:
    try:
        owner, _, name = target.rpartition(".")
        return hasattr(module.get_submodule(owner), name)
    except AttributeError:
        return False


def _uses_layer(node: fx.Node, names: tuple[str, ...]) -> bool:
    if node.op not in ("call_module", "get_attr"):
        return False
    return any(node.target == n or node.target.startswith(f"{n}.") for n in names)


def _between(graph: fx.Graph, sources: tuple[str, ...], sinks: tuple[str, ...]) -> set[fx.Node]:
    """The nodes computed from a source layer (its call, or a read of its weight) that a sink
    layer's call depends on."""
    after: set[fx.Node] = set()
    for node in graph.nodes:
        if _uses_layer(node, sources) or any(a in after for a in node.all_input_nodes):
            after.add(node)
    before: set[fx.Node] = set()
    for node in reversed(graph.nodes):
        if (node.op == "call_module" and _uses_layer(node, sinks)) or any(u in before for u in node.users):
            before.add(node)
    return after & before


def _width_nodes(x: fx.Node, channels_first: bool) -> set[fx.Node]:
    """The nodes holding the channel count of input ``x``: ``x.shape[-1]`` (the last of an
    unpacked ``x.shape``, or ``x.size(-1)``), or axis 1 of a channels-first input."""
    found: set[fx.Node] = set()
    for shape in x.users:
        if (shape.op == "call_function" and shape.target is getattr and shape.args[1] == "shape") or (
                shape.op == "call_method" and shape.target == "size" and len(shape.args) == 1):  # fmt: skip
            items = {u.args[1]: u for u in shape.users if u.target is operator.getitem and isinstance(u.args[1], int)}
            last = max(items, default=None)
            unpacked = last is not None and last > 0 and set(items) == set(range(last + 1))  # B, N, C = x.shape
            axis = 1 if channels_first else (last if unpacked else -1)
            if axis in items:
                found.add(items[axis])
        elif shape.op == "call_method" and shape.target == "size" and shape.args[1:] == ((1,) if channels_first
                                                                                       else (-1,)):  # fmt: skip
            found.add(shape)
    return found


def _derived(node: Any, widths: set[fx.Node], memo: dict[fx.Node, bool]) -> bool:
    """Whether ``node`` is an int expression computed from a width node."""
    if not isinstance(node, fx.Node):
        return False
    if node not in memo:
        memo[node] = node in widths or (node.op == "call_function" and node.target in _INT_OPS
                                        and any(_derived(a, widths, memo) for a in node.args))  # fmt: skip
    return memo[node]


def _substitute(graph: fx.Graph, widths: set[fx.Node], region: set[fx.Node], width: int) -> bool:
    """Replaces, in every op of ``region``, each shape argument computed from the input's width by
    the same expression of ``width``; whether any was."""
    memo: dict[fx.Node, bool] = {}
    changed = False
    for node in [n for n in graph.nodes if n in region]:

        def swap(arg: Any, node: fx.Node = node) -> Any:
            nonlocal changed
            if not _derived(arg, widths, memo):
                return arg
            changed = True
            return _evaluate(arg, widths, width, graph, node)

        node.args = fx.node.map_aggregate(node.args, swap)
        node.kwargs = fx.node.map_aggregate(node.kwargs, swap)
    return changed


def _evaluate(node: Any, widths: set[fx.Node], width: int, graph: fx.Graph, before: fx.Node) -> Any:
    """``node``'s expression with every width node set to ``width``: a number where nothing else
    is symbolic, else a copy of the expression inserted before ``before``."""
    if not isinstance(node, fx.Node):
        return node
    if node in widths:
        return width
    if node.op != "call_function" or node.target not in _INT_OPS:
        return node
    args = tuple(_evaluate(a, widths, width, graph, before) for a in node.args)
    if not any(isinstance(a, fx.Node) for a in args):
        return node.target(*args)
    with graph.inserting_before(before):
        return graph.call_function(node.target, args)
