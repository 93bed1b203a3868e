"""Tracing a model: the layer-type table, ``torch.fx`` graphs of modules, Torch-Pruning's
dependency graph, call counts and layer widths. Every structure kind reads the model through
these; this module imports nothing else of ``sss.structures``, so it closes no import circle.

Two things plain ``torch.fx`` gets wrong for pruning are handled here:

- *Tensor constants.* An op on a buffer outside the graph (``self.mean.view(1, -1, 1, 1)``)
  is evaluated once at trace time and stored on the traced root as ``_tensor_constantN``.
  :class:`Tracer` proxies buffers (they stay ``get_attr`` nodes, so a pruned or trained
  buffer is read live), and :func:`trace_module` removes whatever the tracer left on the
  user's module.
- *In-place ops.* ``Graph.eliminate_dead_code`` drops ``x.mul_(0.5)`` when its result is
  unused, although ``x`` is read later. :func:`eliminate_dead_code` keeps an in-place op
  whose mutated tensor is read after it, or is the module's input or state.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import torch
import torch_pruning as tp
from torch import fx, nn

from sss.errors import UnsupportedModelError
from sss.structures.copying import keep_non_persistent
from sss.structures.dependency_graph import DependencyGraph
from sss.structures.full_width_norm import FullWidthLayerNorm
from sss.structures.gate import ChannelGated, Gate

#: Normalisation layers whose per-channel affine takes a channel factor.
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
#: Layers whose output channels are structures (conv and linear).
LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
#: Layers a factor folds into exactly (their output is affine in their weights).
AFFINE = (*NORMS, *LAYERS)
#: Layers whose ``weight`` gets weight decay (any conv, linear or BatchNorm; not biases or factors).
DECAYED = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)

ADDS = (operator.add, operator.iadd, torch.add)
# Ops whose result shares its input's storage: an in-place op on the result mutates the input.
_VIEW_METHODS = {"view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "squeeze", "unsqueeze",
                 "transpose", "permute", "t", "expand", "expand_as", "narrow", "select", "unfold", "contiguous",
                 "__getitem__", "chunk", "split", "unbind", "as_strided", "detach", "movedim"}  # fmt: skip
_VIEW_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute,
                   torch.narrow, torch.select, torch.chunk, torch.split, torch.unbind, torch.movedim,
                   operator.getitem}  # fmt: skip
_INPLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.setitem}


#: The attribute names an attention module keeps its head count in (timm's and most others';
#: torchvision MaxViT's ``n_heads``; Hiera's ``heads``, read only beside a ``qkv`` layer: PiT
#: names a stage's head count so).
HEAD_COUNTS = ("num_heads", "n_heads", "heads")


def head_count(m: nn.Module) -> int | None:
    """``m``'s head count, if it keeps one under a name of :data:`HEAD_COUNTS`."""
    for name in HEAD_COUNTS:
        count = getattr(m, name, None)
        if isinstance(count, int) and not isinstance(count, bool) and (name != "heads" or hasattr(m, "qkv")):
            return count
    return None


def is_attention(m: nn.Module) -> bool:
    """Whether ``m`` looks like timm's ``Attention``: a ``qkv`` linear layer (or PVT's ``q`` and
    ``kv``), a ``proj`` linear layer that gives its output (all maybe gated), and an int
    ``num_heads`` (the ``head`` kind's structures; a block's λ folds into ``proj``)."""

    def linear(*names: str) -> bool:
        layers = [getattr(m, n, None) for n in names]
        return all(isinstance(x.inner if isinstance(x, ChannelGated) else x, nn.Linear) for x in layers)

    return (linear("qkv", "proj") or linear("q", "kv", "proj")) and isinstance(getattr(m, "num_heads", None), int)


#: Norm layers, and every subclass of theirs (timm's ``BatchNormAct2d``), stay leaves of a trace:
#: a subclass's forward branches on ``self.training`` to update its running statistics, as
#: ``nn.BatchNorm2d``'s does, and that is no other path through the model. A compact model's
#: ``FullWidthLayerNorm`` too: a norm, whatever its forward.
LEAF_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, FullWidthLayerNorm)


#: Attribute names of the separate query/key/value projections of Hugging Face-style attention.
QKV_NAMES = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"), ("q_lin", "k_lin", "v_lin"))


def qkv_projections(model: nn.Module) -> list[nn.Module]:
    """The query, key and value projections of every attention module with separate ones (Hugging
    Face's ``q_proj``/``k_proj``/``v_proj`` or ``query``/``key``/``value`` linear layers)."""
    found = []
    for m in model.modules():
        for names in QKV_NAMES:
            layers = [getattr(m, n, None) for n in names]
            if all(isinstance(layer, nn.Linear | ChannelGated) for layer in layers):
                found += layers
    return found


#: Stochastic depth as timm (``DropPath``, ``DropBlock2d``) and torchvision (``StochasticDepth``) name
#: it: a regulariser like dropout (it rescales the branch in training), not another path.
_DROP_PATHS = ("DropPath", "DropBlock2d", "StochasticDepth")


def is_drop_path(m: nn.Module | None) -> bool:
    """Whether ``m`` is a stochastic-depth module (timm's or torchvision's, by class name)."""
    return type(m).__name__ in _DROP_PATHS


class Tracer(fx.Tracer):
    """Keeps sss wrappers, torch.nn layers, norm layers (and their subclasses) and attention
    modules (any module with an int head count, :func:`head_count`) as leaves, and proxies buffers (no baked
    constants). An attention module stays a leaf because tracing through it would bake its
    ``num_heads`` into the graph's reshapes, and removing heads changes it (LeViT's convolutional
    attention, traced inside a block, crashed after a cut)."""

    proxy_buffer_attributes = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (isinstance(m, (ChannelGated, Gate, *LEAF_NORMS)) or head_count(m) is not None
                or super().is_leaf_module(m, qualname))  # fmt: skip


@contextmanager
def _untouched(module: nn.Module) -> Iterator[None]:
    """Removes the attributes that tracing adds to ``module`` (``_tensor_constantN``)."""
    before = set(vars(module))
    try:
        yield
    finally:
        for name in set(vars(module)) - before:
            delattr(module, name)


def trace_graph(module: nn.Module, tracer: fx.Tracer | None = None) -> fx.Graph:
    """The ``torch.fx`` graph of ``module`` (``module`` is left as it was)."""
    with _untouched(module):
        return (tracer or Tracer()).trace(module)


def trace_module(module: nn.Module) -> fx.GraphModule:
    """``module`` as a ``GraphModule`` traced with :class:`Tracer` (submodule paths preserved;
    ``module`` is left as it was)."""
    with _untouched(module):
        gm = fx.GraphModule(module, Tracer().trace(module), type(module).__name__)
    keep_non_persistent(module, gm)  # GraphModule registers what it copies as persistent
    return gm


def trace_and_find(module: nn.Module, find: Callable[[fx.GraphModule], Any]) -> tuple[fx.GraphModule, Any] | str:
    """``module`` traced (:func:`trace_module`) and what ``find`` sees in its graph, or why not:
    ``torch.fx`` cannot trace it, or ``find``'s own reason (a string)."""
    try:
        gm = trace_module(module)
    except Exception as e:
        return f"torch.fx cannot trace it ({type(e).__name__})"
    found = find(gm)
    return found if isinstance(found, str) else (gm, found)


def ancestors(node: fx.Node) -> set[fx.Node]:
    """Every node ``node`` depends on."""
    seen, stack = set(), [node]
    while stack:
        for arg in stack.pop().all_input_nodes:
            if arg not in seen:
                seen.add(arg)
                stack.append(arg)
    return seen


def is_inplace(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` writes into its first argument (``x.mul_()``, ``relu(x, inplace=True)``,
    ``x += y``, ``nn.ReLU(inplace=True)``)."""
    if node.op == "call_method":
        return (node.target.endswith("_") and not node.target.endswith("__")) or node.target in ("__setitem__",)
    if node.op == "call_function":
        return node.target in _INPLACE_OPERATORS or bool(node.kwargs.get("inplace"))
    if node.op == "call_module":
        return bool(getattr(modules.get(node.target), "inplace", False))
    return False


def _is_view(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target in _VIEW_METHODS) or (
        node.op == "call_function" and node.target in _VIEW_FUNCTIONS
    )


def storage_root(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node:
    """The node whose storage ``node`` shares (through views and in-place ops)."""
    while (_is_view(node) or is_inplace(node, modules)) and node.args and isinstance(node.args[0], fx.Node):
        node = node.args[0]
    return node


def _aliases(root: fx.Node, modules: dict[str, nn.Module]) -> set[fx.Node]:
    out, stack = {root}, [root]
    while stack:
        for user in stack.pop().users:
            if user not in out and (_is_view(user) or is_inplace(user, modules)) and user.args[0] in out:
                out.add(user)
                stack.append(user)
    return out


def mutates_live_tensor(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether in-place ``node`` writes into a tensor that is read after it, or that outlives the
    forward (the module's input, a buffer or parameter): then removing it changes the function."""
    if not (node.args and isinstance(node.args[0], fx.Node)):
        return False
    root = storage_root(node.args[0], modules)
    if root.op in ("placeholder", "get_attr"):
        return True
    order = {n: i for i, n in enumerate(node.graph.nodes)}
    return any(order[user] > order[node] for alias in _aliases(root, modules) for user in alias.users
               if user is not node)  # fmt: skip


def eliminate_dead_code(gm: fx.GraphModule) -> None:
    """Removes unused nodes and submodules from ``gm``, keeping every in-place op whose write is
    still read (see :func:`mutates_live_tensor`), then recompiles."""
    modules = dict(gm.named_modules())

    def impure(node: fx.Node) -> bool:
        if node.op in ("placeholder", "output"):
            return True
        return (is_inplace(node, modules) and mutates_live_tensor(node, modules)) or node.is_impure()

    gm.graph.eliminate_dead_code(is_impure_node=impure)
    gm.delete_all_unused_submodules()
    gm.recompile()


def build_graph(model: nn.Module, example_inputs: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` (traced in eval mode, so BN statistics stay)."""
    was_training = model.training
    try:
        with warnings.catch_warnings():  # a parameter outside any layer (a ViT's cls_token): its
            # channels join the embedding's group, which a LayerNorm keeps out of reach anyway
            warnings.filterwarnings("ignore", message="Unwrapped parameters")
            return DependencyGraph().build_dependency(model.eval(), example_inputs=example_inputs,
                                                      output_transform=output_tensors)  # fmt: skip
    except Exception as e:
        raise UnsupportedModelError(
            f"cannot trace {type(model).__name__} on the example input ({type(e).__name__}: {e}); channel "
            "factors need a forward that runs on example_inputs; exclude the failing submodule with ignore=[...] "
            "or use structures=('block',)"
        ) from e
    finally:
        model.train(was_training)


def output_tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor of a model's output, in order: a tensor, or tuples, lists and dicts of them
    (Hugging Face's ``ModelOutput`` is a dict); anything else (a key/value cache) is left out."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, list | tuple):
        return [t for item in out for t in output_tensors(item)]
    return []


def _run_hooked(model: nn.Module, example_inputs: torch.Tensor, hooks: list) -> None:
    """Runs ``model`` on ``example_inputs`` (eval mode, no grad), then removes ``hooks``."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example_inputs)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()


def observe_calls(model: nn.Module, example_inputs: torch.Tensor) -> tuple[dict[nn.Module, int], dict[str, tuple]]:
    """One forward of ``model`` on ``example_inputs`` (eval mode, no grad), recording how many
    times each conv/linear/BN runs (a shared layer's width is not free) and the positional and
    keyword arguments each module with submodules gets on its first call, by path."""
    counts: dict[nn.Module, int] = {}
    calls: dict[str, tuple[tuple, dict]] = {}

    def keep(path: str) -> Callable[..., None]:
        return lambda m, args, kwargs: calls.setdefault(path, (tuple(args), dict(kwargs)))

    hooks = [m.register_forward_hook(lambda m, i, o: counts.__setitem__(m, counts.get(m, 0) + 1))
             for m in model.modules() if isinstance(m, AFFINE)]  # fmt: skip
    hooks += [m.register_forward_pre_hook(keep(path), with_kwargs=True)
              for path, m in model.named_modules() if path and any(m.children())]  # fmt: skip
    _run_hooked(model, example_inputs, hooks)
    return counts, calls


def shared_modules(model: nn.Module) -> dict[nn.Module, list[str]]:
    """Modules with parameters or buffers that stand at more than one path → those paths."""
    paths: dict[nn.Module, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False)):
            paths.setdefault(m, []).append(name)
    return {m: p for m, p in paths.items() if len(p) > 1}


def out_width(m: nn.Module) -> int:
    """Output channels of a conv/linear layer, or features of a norm (Torch-Pruning's count)."""
    return tp.pruner.function.PrunerBox[tp.ops.module2type(m)].get_out_channels(m)


def in_width(m: nn.Module) -> int:
    """Input channels of a conv/linear layer (all groups), or features of a norm."""
    return tp.pruner.function.PrunerBox[tp.ops.module2type(m)].get_in_channels(m)


def role_width(module: nn.Module, role: str) -> int:
    """How many indices a cut of ``role`` numbers in ``module``: output channels (``out``,
    ``groups``) or input channels (``in``)."""
    return in_width(module) if role == "in" else out_width(module)


class Discovery:
    """What several kinds need to trace once per ``attach``: Torch-Pruning's dependency graph,
    module names and call counts of the plain model, built on first use."""

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor | None) -> None:
        self.model, self.example_inputs = model, example_inputs

    @cached_property
    def graph(self) -> tp.DependencyGraph:
        return build_graph(self.model, self.example_inputs)

    @cached_property
    def names(self) -> dict[nn.Module, str]:
        return {m: n for n, m in self.model.named_modules()}

    @cached_property
    def _observed(self) -> tuple[dict[nn.Module, int], dict[str, tuple[tuple, dict]]]:
        return observe_calls(self.model, self.example_inputs)

    @property
    def calls(self) -> dict[nn.Module, int]:
        """How many times each conv/linear/BN runs in one forward."""
        return self._observed[0]

    @property
    def first_calls(self) -> dict[str, tuple[tuple, dict]]:
        """Each module-with-submodules' arguments on its first call, by path."""
        return self._observed[1]
