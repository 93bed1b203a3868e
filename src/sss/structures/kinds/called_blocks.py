"""Block factors on layers that ``torch.fx`` traces only as they are called: Hugging Face's
encoder and decoder layers.

Such a layer's forward takes ``**kwargs`` (which ``torch.fx`` cannot turn into placeholders on
Python 3.11 and later) and arguments that are not tensors: a key/value cache, ``use_cache``, a
tuple of rotary tables, ``None`` for a mask. Traced through a wrapper that calls it with one call's
arguments (its tensors, and objects such as a cache, as the graph's inputs; ``None``, numbers and
flags fixed), its graph is a residual block like any other (:func:`.traced_blocks.residual_adds`),
its attention (query/key/value projections) kept a leaf.

The layer itself stays in the model, because the model's code reads its attributes (Gemma's
``attention_type``, a cache's ``layer_idx``); its forward becomes a dispatcher that runs the graph
traced for the call's pattern (the mode, the kind of each input, the values of the rest), traced
on the first call of a pattern and cached, with each branch scaled by its λ (gated) or the removed
branches cut (compact). The modules only a removed branch used are replaced by parameter-free
:class:`.traced_blocks.RemovedBranch` stand-ins, so the layer's own code still traces. A graph
never fixes what a later call could change: Python branches on a tensor's values or shape do not
trace, and the fixed arguments are part of the pattern.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import fx, nn

from sss.errors import UnsupportedModelError
from sss.structures.gate import Gate, fold_output_scale
from sss.structures.kinds.branch_ends import RemovedBranch, is_attention_leaf
from sss.structures.kinds.traced_blocks import (
    SCALES,
    fold_targets,
    foldable,
    residual_adds,
    scale_branches,
    scale_kept,
)
from sss.structures.tracing import Tracer, eliminate_dead_code

#: The attribute a called block keeps its state in: branch count, removed branches, traced forwards.
STATE = "_sss_called_block"


class CalledBlock(str):
    """A block found on a layer as it is called: its path, with the call's :func:`template`."""

    template: tuple[tuple, dict]

    def __new__(cls, path: str, template: tuple[tuple, dict]) -> CalledBlock:
        block = super().__new__(cls, path)
        block.template = template
        return block


class _Input:
    """Stands for one input of a call in a template: a tensor, or an object passed on as it is."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"<{self.kind}>"


def _fixed(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _leaves(tree: Any) -> list[Any]:
    """The leaves of nested tuples, lists and dicts, in order (a cache object is one leaf, even
    where a library registered it with ``torch.utils._pytree``: it is passed on, not rebuilt)."""
    if isinstance(tree, tuple | list):
        return [leaf for item in tree for leaf in _leaves(item)]
    if isinstance(tree, dict):
        return [leaf for item in tree.values() for leaf in _leaves(item)]
    return [tree]


def _rebuild(tree: Any, leaves: Iterator[Any]) -> Any:
    if isinstance(tree, tuple | list):
        return type(tree)(_rebuild(item, leaves) for item in tree)
    if isinstance(tree, dict):
        return {key: _rebuild(item, leaves) for key, item in tree.items()}
    return next(leaves)


def template(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A call's arguments with each input (any leaf but ``None``, a number, a string or a flag)
    replaced by a marker naming its type."""
    return _template(args, kwargs, _leaves((args, kwargs)))


def _template(args: tuple, kwargs: dict, leaves: list[Any]) -> tuple[tuple, dict]:
    markers = [v if _fixed(v) else _Input(type(v).__name__) for v in leaves]
    return _rebuild((tuple(args), dict(kwargs)), iter(markers))


def fixes_arguments(args: tuple, kwargs: dict) -> bool:
    """Whether a call passes anything but tensors after its first argument (``None``, a flag, a
    cache): a trace of the module alone would take each for an input tensor."""
    return any(not isinstance(v, torch.Tensor) for v in _leaves((args[1:], kwargs)))


class _Call(nn.Module):
    """Calls ``layer``'s own forward with a template's inputs filled in, in order."""

    def __init__(self, layer: nn.Module, call: tuple[tuple, dict]) -> None:
        super().__init__()
        self.layer, self.call = layer, call

    def forward(self, *inputs: Any) -> Any:
        given = iter(inputs)
        args, kwargs = _rebuild(self.call, iter([next(given) if isinstance(v, _Input) else v
                                                 for v in _leaves(self.call)]))  # fmt: skip
        out = type(self.layer).forward(self.layer, *args, **kwargs)
        self.returns = [type(v).__name__ for v in _leaves(out) if not isinstance(v, fx.Proxy) and not _fixed(v)]
        if not isinstance(out, tuple | list | fx.Proxy):  # a ModelOutput or dict: a graph returns a plain dict
            self.returns.append(type(out).__name__)
        return out


class _CallTracer(Tracer):
    """Keeps attention modules (:func:`.traced_blocks.is_attention_leaf`) and removed branches' stand-ins as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, RemovedBranch) or is_attention_leaf(m) or super().is_leaf_module(m, qualname)


def _trace(layer: nn.Module, call: tuple[tuple, dict]) -> tuple[fx.GraphModule, list[fx.Node]]:
    """``layer`` traced as called with ``call`` (a template), and its residual sums.

    Raises:
        ValueError: It does not trace, or is not a residual block (the reason).
    """
    wrapper = _Call(layer, call)
    inputs = [leaf for leaf in _leaves(call) if isinstance(leaf, _Input)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            graph = _CallTracer().trace(wrapper, concrete_args=(fx.PH,) * len(inputs))
    except Exception as e:
        raise ValueError(f"torch.fx cannot trace it as it is called ({type(e).__name__})") from e
    if wrapper.returns:
        raise ValueError(f"it returns a {wrapper.returns[0]}, which a traced graph cannot rebuild")
    gm = fx.GraphModule(wrapper, graph)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for node, leaf in zip(placeholders, inputs, strict=True):
        if leaf.kind != "Tensor" and any(user.op != "call_module" for user in node.users):
            raise ValueError(f"its code reads the {leaf.kind} it is given (a trace would fix what it reads)")
    if any(n.op == "get_attr" and not n.target.startswith("layer.") for n in graph.nodes):
        raise ValueError("its trace holds a constant the layer does not")
    adds = residual_adds(gm)
    if isinstance(adds, str):
        raise ValueError(adds)
    return gm, adds


def called_block(path: str, layer: nn.Module, args: tuple, kwargs: dict) -> CalledBlock | str:
    """``layer`` (at ``path``) as a block to gate, found on its call with ``args`` and ``kwargs``, or why not."""
    if hasattr(layer, "gate"):
        return "it already has an attribute named 'gate'"
    call = template(args, kwargs)
    try:
        _trace(layer, call)
    except ValueError as e:
        return str(e)
    return CalledBlock(path, call)


def gate_called_block(layer: nn.Module, call: tuple[tuple, dict], device: torch.device, dtype: torch.dtype) -> None:
    """Puts a :class:`Gate` with one λ per branch on ``layer`` and makes its forward the dispatcher."""
    _, adds = _trace(layer, call)
    layer.gate = Gate("block", len(adds)).to(device=device, dtype=dtype)
    setattr(layer, STATE, {"branches": len(adds), "removed": None, "call": call, "forwards": {}})
    layer.forward = types.MethodType(_dispatch, layer)


def is_called_block(module: nn.Module) -> bool:
    """Whether ``module`` is a block gated by :func:`gate_called_block` (not yet compact)."""
    state = getattr(module, STATE, None)
    return state is not None and state["removed"] is None


def is_compact_called_block(module: nn.Module) -> bool:
    """Whether ``module`` is a called block made compact with branches removed or scaled."""
    state = getattr(module, STATE, None)
    return state is not None and state["removed"] is not None


def compact_called_block(layer: nn.Module, threshold: float = 0.0) -> tuple[list[int], list[str], list[int]]:
    """Makes ``layer`` gate-free, in place: branches with ``|λ_j| <= threshold`` removed, the
    others with ``λ_j`` folded into their last layer, or kept as a scale where none ends them.
    Returns the removed branches' indices, the paths (in ``layer``) of the modules replaced by
    stand-ins, and the scaled branches' indices."""
    state = getattr(layer, STATE)
    gm, adds = _trace(layer, state["call"])
    lam = layer.gate.weight.detach()
    modules = dict(gm.named_modules())
    removed = [j for j in range(len(adds)) if float(lam[j].abs()) <= threshold]
    scaled = [j for j, add in enumerate(adds) if j not in removed and not foldable(add.args[0], modules)]
    for j, add in enumerate(adds):
        if j not in removed and j not in scaled:
            for target in fold_targets(add.args[0], modules):
                fold_output_scale(target, lam[j])
    if scaled:
        layer.register_buffer(SCALES, lam[: max(scaled) + 1].clone())
    used = _used_modules(gm)
    _cut(gm, adds, removed)
    gone = used - _used_modules(gm)  # only the removed branches used them
    stand_ins = sorted(path for path in gone if not any(path.startswith(f"{p}.") for p in gone))
    del layer.gate
    remove_branches(layer, removed, stand_ins, scaled)
    return removed, stand_ins, scaled


def remove_branches(layer: nn.Module, removed: list[int], stand_ins: list[str], scaled: Sequence[int] = ()) -> None:
    """``layer`` (ungated) without branches ``removed``, whose modules at ``stand_ins`` are replaced
    by :class:`RemovedBranch`, and with branches ``scaled`` scaled by its :data:`SCALES` buffer
    (the compact form, also rebuilt so on load, the buffer's values then from the saved state)."""
    for path in stand_ins:
        layer.set_submodule(path, RemovedBranch())
    if scaled and not hasattr(layer, SCALES):
        layer.register_buffer(SCALES, torch.ones(max(scaled) + 1))
    if removed or scaled:
        state = {"branches": None, "removed": list(removed), "scaled": list(scaled), "forwards": {}}
        setattr(layer, STATE, state)
        layer.forward = types.MethodType(_dispatch, layer)
    else:  # every branch kept: the layer's own forward is the same function
        layer.__dict__.pop("forward", None)
        layer.__dict__.pop(STATE, None)


def _used_modules(gm: fx.GraphModule) -> set[str]:
    """The paths (in the layer) of the modules ``gm`` calls or reads a tensor of."""
    paths = {n.target if n.op == "call_module" else n.target.rpartition(".")[0]
             for n in gm.graph.nodes if n.op in ("call_module", "get_attr")}  # fmt: skip
    return {p.removeprefix("layer.") for p in paths if p.startswith("layer.")}


def _cut(gm: fx.GraphModule, adds: list[fx.Node], removed: list[int]) -> None:
    for j in removed:
        add = adds[j]
        add.replace_all_uses_with(add.args[1])
        gm.graph.erase_node(add)
    eliminate_dead_code(gm)


class _Live:
    """What a traced forward reads its modules through: the layer as it is now."""

    __slots__ = ("layer",)

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer


def _dispatch(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    state = getattr(self, STATE)
    leaves = _leaves((args, kwargs))  # walked once: the call's pattern and its inputs
    call = _template(args, kwargs, leaves)
    key = (self.training, repr(call))
    forward = state["forwards"].get(key)
    if forward is None:
        forward = state["forwards"][key] = _compile(self, call, state)
    return forward(_Live(self), *[v for v in leaves if not _fixed(v)])


def _compile(layer: nn.Module, call: tuple[tuple, dict], state: dict) -> Callable[..., Any]:
    """The forward of ``layer`` traced for ``call``, gated or cut as ``state`` says."""
    try:
        gm, adds = _trace(layer, call)
        if state["branches"] is not None and len(adds) != state["branches"]:
            raise ValueError(f"it has {len(adds)} branches as called so, {state['branches']} as gated")
    except ValueError as e:
        raise UnsupportedModelError(
            f"{type(layer).__name__} (a gated residual block) was called with arguments {call} that its traced "
            f"forward cannot take: {e}. Call it as on the example input given to sss.attach, or exclude it there "
            "with ignore=[...]"
        ) from None
    if state["removed"] is None:
        gm.add_submodule("layer.gate", layer.gate)  # the graph checks it; the forward reads the live one
        scale_branches(gm.graph, adds, "layer.gate")
        gm.recompile()
    else:
        if state["scaled"]:  # the graph checks it; the forward reads the live one
            gm.get_submodule("layer").register_buffer(SCALES, getattr(layer, SCALES))
        scale_kept(gm.graph, adds, state["scaled"], owner="layer")
        _cut(gm, adds, state["removed"])
    return type(gm).forward
