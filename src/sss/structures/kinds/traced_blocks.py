"""Block factors on any model's residual blocks, found by tracing each submodule with ``torch.fx``.

A submodule is a *block* when its traced graph has exactly one residual sum
``add(branch, shortcut)`` whose two operands both come from the module's input along
disjoint paths (the shortcut may be the input itself, or a downsample), and whose branch
ends in a BatchNorm, conv, linear or affine LayerNorm layer (or an attention module, folded into
its ``proj``), maybe followed by ops λ commutes with (dropout, stochastic depth, a scale by a
constant such as LayerScale's γ): torchvision's BasicBlock and Bottleneck, pre-activation blocks, MobileNetV2's inverted
residuals. Residual sums *chained* after it (``y = x + f(x); z = y + g(y)``, with ``g``'s ops
used by nothing else) are branches of the same block: a pre-norm transformer block has two,
attention then MLP. The block is replaced by its traced ``GraphModule`` with a :class:`Gate`
(``.gate``, one factor per branch) on each branch: ``post(shortcut + λ_j·branch_j)``.

When ``λ_j = 0`` branch ``j`` goes and its sum becomes its shortcut, exactly (a block with one
branch becomes its shortcut and the ops after the sum, a final ReLU). Otherwise ``λ_j`` is
folded into the branch's last layer.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch import fx, nn

from sss.structures.gate import ChannelGated, Gate, fold_output_scale
from sss.structures.kinds.branch_ends import RemovedBranch, attention_output
from sss.structures.tracing import (
    ADDS,
    AFFINE,
    LEAF_NORMS,
    ancestors,
    eliminate_dead_code,
    is_drop_path,
    trace_and_find,
    trace_module,
)

#: Products and quotients: λ (one number per branch) commutes with a scale by anything that does
#: not depend on the model's input (NFNet's ``α · branch``, LayerScale's ``branch · γ``).
_SCALES = (operator.mul, operator.truediv, torch.mul, torch.div)
_SCALE_METHODS = ("mul", "mul_", "div", "div_")


def _constant(arg: object) -> bool:
    """Whether ``arg`` is a number, or a node computed from parameters, buffers and numbers alone."""
    if isinstance(arg, int | float):
        return True
    return isinstance(arg, fx.Node) and not any(n.op == "placeholder" for n in ancestors(arg) | {arg})


def _scaled(node: fx.Node) -> fx.Node | None:
    """The tensor that ``node`` scales by a constant (:func:`_constant`), if it does so."""
    scale = (node.op == "call_function" and node.target in _SCALES) or (
        node.op == "call_method" and node.target in _SCALE_METHODS)  # fmt: skip
    if not scale or len(node.args) != 2 or node.kwargs:
        return None
    a, b = node.args
    divides = "div" in str(getattr(node.target, "__name__", node.target))
    if isinstance(a, fx.Node) and not _constant(a) and _constant(b):
        return a
    if not divides and isinstance(b, fx.Node) and not _constant(b) and _constant(a):
        return b
    return None


#: Layout ops (they move a tensor's entries, never mix them): λ, one number, commutes with them
#: (torchvision's ConvNeXt block ends in a ``Permute`` back to channels-first).
_LAYOUTS = (torch.permute, torch.transpose, torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze)
_LAYOUT_METHODS = ("permute", "transpose", "reshape", "view", "flatten", "contiguous", "squeeze", "unsqueeze")


def _layout(node: fx.Node) -> bool:
    """Whether ``node`` is a layout op (:data:`_LAYOUTS`) of the tensor that is its first argument."""
    moves = (node.op == "call_method" and node.target in _LAYOUT_METHODS) or (
        node.op == "call_function" and node.target in _LAYOUTS)  # fmt: skip
    return moves and bool(node.args) and isinstance(node.args[0], fx.Node)


def _norm(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules.get(node.target), LEAF_NORMS)


def _passed(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The tensor that ``node`` passes on to the branch's end with nothing but a rescaling λ commutes
    with (``λ·op(y) = op(λ·y)``), if it is such an op: dropout or stochastic depth (a module, or
    torchvision's ``stochastic_depth`` function, which ``torch.fx`` keeps as a call), a layout op
    (a permute, reshape or view), a scale by a constant (:func:`_scaled`), or the ``[0]`` of an
    attention module's ``(output, weights)``."""
    if (scaled := _scaled(node)) is not None:
        return scaled
    source = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    if source is None:
        return None
    if node.op == "call_module":
        module = modules.get(node.target)
        return source if isinstance(module, nn.Dropout | nn.Identity) or is_drop_path(module) else None
    if node.op == "call_method":
        return source if node.target in _LAYOUT_METHODS else None
    if node.op != "call_function":
        return None
    if getattr(node.target, "__name__", None) == "stochastic_depth" or node.target in _LAYOUTS:
        return source
    if node.target is operator.getitem and node.args[1] == 0 and source.op == "call_module":
        module = modules.get(source.target)
        return source if attention_output(module) is not None or isinstance(module, RemovedBranch) else None
    return None


def _fold_nodes(branch: fx.Node, modules: dict[str, nn.Module]) -> list[fx.Node]:
    """The ops ``λ`` is folded into: the branch's last op, looking back through the ops ``λ``
    commutes with (:func:`_passed`); both operands of a sum that ends it (Phi's attention and MLP
    side by side: ``λ(a + b) = λa + λb``)."""
    node = branch
    while (source := _passed(node, modules)) is not None:
        node = source
    a, b = node.args if _is_add(node) else (None, None)
    if a is not None and a not in ancestors(b) and b not in ancestors(a):  # side by side, not one after the other
        return [last for operand in (a, b) for last in _fold_nodes(operand, modules)]
    return [node]


def _foldable(branch: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """Why ``λ`` cannot be folded into the ops that end ``branch`` (``None``: it can)."""
    for node in _fold_nodes(branch, modules):
        last = modules.get(node.target) if node.op == "call_module" else None
        last = last.inner if isinstance(last, ChannelGated) else last
        affine_norm = isinstance(last, nn.LayerNorm) and last.weight is not None  # a post-norm branch (Swin V2)
        # a removed branch's stand-in (a called block, compact) was a layer λ folded into or dropped with
        if not (isinstance(last, (*AFFINE, RemovedBranch)) or affine_norm or attention_output(last) is not None):
            return (f"its branch ends in {node.format_node()}, not a BatchNorm/conv/linear layer, affine LayerNorm "
                    "or attention to fold λ into")  # fmt: skip
    return None


def foldable(branch: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether a branch's λ folds into the layers that end it (:func:`fold_targets`)."""
    return _foldable(branch, modules) is None


def fold_targets(branch: fx.Node, modules: dict[str, nn.Module]) -> list[nn.Module]:
    """The layers a branch's λ folds into: its last layers, or an attention's output projection."""
    lasts = [modules[node.target] for node in _fold_nodes(branch, modules)]
    return [last if attention_output(last) is None else attention_output(last) for last in lasts]


def _is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in ADDS and len(node.args) == 2
            and all(isinstance(a, fx.Node) for a in node.args))  # fmt: skip


def _chained(add: fx.Node, previous: fx.Node, modules: dict[str, nn.Module]) -> tuple[fx.Node, fx.Node] | None:
    """(branch, shortcut) of ``add`` if it is ``s + g(s)``, where ``s`` is ``previous`` or a norm of it
        (post-norm: BERT's ``LN(x + attn(x))`` feeds its MLP and that sum) or a layout op of it (OPT
    flattens the tokens between its two sums), with ``g``'s ops used only
        by ``g`` (so dropping the branch drops nothing else), else ``None``."""
    for shortcut, branch in (add.args, reversed(add.args)):
        s = shortcut
        while s is not previous and (_layout(s) or _norm(s, modules)):
            s = s.args[0]
        if s is not previous:
            continue
        own = (ancestors(branch) | {branch}) - ancestors(shortcut) - {shortcut}
        if shortcut not in ancestors(branch) or not own:
            return None
        if any(user not in own and user is not add for n in own for user in n.users):
            return None
        return branch, shortcut
    return None


_SHAPE_READS = ("size", "dim", "numel")


def _reading(x: fx.Node) -> set[fx.Node]:
    """The nodes computed from ``x``'s values (not from its shape alone: ``x.shape``, ``x.size()``)."""
    found, stack = {x}, [x]
    while stack:
        for user in stack.pop().users:
            shape = (user.op == "call_function" and user.target is getattr and user.args[1] in ("shape", "dtype",
                     "device")) or (user.op == "call_method" and user.target in _SHAPE_READS)  # fmt: skip
            if user not in found and not shape:
                found.add(user)
                stack.append(user)
    return found


def residual_adds(gm: fx.GraphModule) -> list[fx.Node] | str:
    """The block's residual sums, each with args (branch, shortcut): the one sum of its first
    input, then the sums chained after it; or why it is not a block. Other inputs (an attention
    mask) may feed a branch: removing the branch drops those uses and nothing else."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not placeholders:
        return "its forward takes no input"
    x = placeholders[0]
    modules = dict(gm.named_modules())
    reads_x = _reading(x)
    found = []
    for node in gm.graph.nodes:
        if not _is_add(node):
            continue
        a, b = node.args
        anc_a, anc_b = ancestors(a) | {a}, ancestors(b) | {b}
        if a not in reads_x or b not in reads_x:  # BERT's token-type embeddings read only x's shape
            continue
        # The branch is the operand with layers of its own; the shortcut shares none of them.
        if (anc_a & anc_b) - ({x} | (ancestors(x))):
            continue
        branch, shortcut = (a, b) if len(anc_a) >= len(anc_b) else (b, a)
        found.append((node, branch, shortcut))
    # a sum inside another's operand is part of its branch (GPT-NeoX: x + (attn(ln1(x)) + mlp(ln2(x))))
    found = [f for f in found if not any(f[0] in (other[1], other[2]) for other in found)]
    if len(found) != 1:
        return f"it has {len(found)} residual sums of its input (a block has exactly one)"
    node, branch, shortcut = found[0]
    if why := _unscalable(branch, shortcut, modules):
        return why
    node.args = (branch, shortcut)
    adds = [node]
    for later in gm.graph.nodes:
        chained = _chained(later, adds[-1], modules) if _is_add(later) else None
        if chained is not None and _unscalable(*chained, modules) is None:
            later.args = chained
            adds.append(later)
    return adds


def _unscalable(branch: fx.Node, shortcut: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """Why a branch is no block's (``None``: it is). λ folds into a branch that ends in a layer
    (:func:`_foldable`); any other branch keeps ``λ`` as a scale of its own once compact (an SE
    module's ``y · sigmoid(...)``, PoolFormer's ``pool(y) - y``, a roll), unless it holds residual
    sums itself: then it is a container of blocks, whose blocks are found inside it instead."""
    if (why := _foldable(branch, modules)) is None:
        return None
    own = (ancestors(branch) | {branch}) - ancestors(shortcut) - {shortcut}
    return why + " and holds residual sums of its own" if any(_is_add(n) for n in own) else None


def gate_block(module: nn.Module, device, dtype) -> fx.GraphModule | str:
    traced = trace_and_find(module, residual_adds)
    if isinstance(traced, str):
        return traced
    gm, adds = traced
    if hasattr(gm, "gate"):
        return "it already has an attribute named 'gate'"
    gm.add_submodule("gate", Gate("block", len(adds)).to(device=device, dtype=dtype))
    scale_branches(gm.graph, adds, "gate")
    gm.recompile()
    return gm


def scale_branches(graph: fx.Graph, adds: list[fx.Node], gate: str) -> None:
    """Scales each branch of ``adds`` (args: branch, shortcut) by its λ, read from the :class:`Gate`
    at path ``gate``: the gate's own call for a block with one branch, ``branch · λ_j`` otherwise."""
    for j, add in enumerate(adds):
        branch = add.args[0]
        with graph.inserting_after(branch):
            if len(adds) == 1:
                gated = graph.call_module(gate, (branch,))
            else:  # λ_j: one entry of the block's gate per branch
                weight = graph.get_attr(f"{gate}.weight")
                with graph.inserting_after(weight):
                    lam = graph.call_function(operator.getitem, (weight, j))
                with graph.inserting_after(lam):
                    gated = graph.call_function(operator.mul, (branch, lam))
        add.replace_input_with(branch, gated)


def is_traced_block(module: nn.Module) -> bool:
    """Whether ``module`` is a block gated by :func:`gate_block`."""
    gate = getattr(module, "gate", None)
    return isinstance(module, fx.GraphModule) and isinstance(gate, Gate) and gate.kind == "block"


def _gated_branches(gm: fx.GraphModule) -> list[tuple[int, fx.Node, fx.Node]]:
    """(branch index, the gated node, the branch node) of each gated branch of a traced block."""
    out = []
    for n in gm.graph.nodes:
        if n.op == "call_module" and n.target == "gate":
            out.append((0, n, n.args[0]))
        elif n.op == "call_function" and n.target is operator.mul and isinstance(n.args[1], fx.Node):
            lam = n.args[1]
            if lam.target is operator.getitem and lam.args[0].op == "get_attr" and lam.args[0].target == "gate.weight":
                out.append((lam.args[1], n, n.args[0]))
    return out


def compact_traced_block(gm: fx.GraphModule, threshold: float = 0.0) -> tuple[list[int], list[int]]:
    """Makes ``gm`` gate-free, in place: each branch with ``|λ_j| <= threshold`` dropped (its sum
    becomes its shortcut), the others with ``λ_j`` folded into their last layer, or kept as a
    scale (:data:`SCALES`) where the branch does not end in one. Returns the indices of the
    dropped branches and of the scaled ones."""
    lam = gm.gate.weight.detach()
    modules = dict(gm.named_modules())
    branches = _gated_branches(gm)
    dropped = [j for j, _, _ in branches if float(lam[j].abs()) <= threshold]
    scaled = [j for j, _, branch in branches if j not in dropped and not foldable(branch, modules)]
    if scaled:
        gm.register_buffer(SCALES, lam[: max(scaled) + 1].clone())
    for j, gated, branch in branches:
        if j in dropped:
            add = next(iter(gated.users))
            add.replace_all_uses_with(add.args[1] if add.args[0] is gated else add.args[0])
            gm.graph.erase_node(add)
            continue
        kept = branch
        if j in scaled:
            kept = _scale_by_buffer(gm.graph, branch, j)
        else:
            for layer in fold_targets(branch, modules):
                fold_output_scale(layer, lam[j])
        gated.replace_all_uses_with(kept)
        gm.graph.erase_node(gated)
    for n in reversed(list(gm.graph.nodes)):  # the λ_j lookups of folded branches
        if not n.users and (n.op == "get_attr" or (n.op == "call_function" and n.target is operator.getitem
                                                   and n.args[0].op == "get_attr")):  # fmt: skip
            gm.graph.erase_node(n)
    if dropped:
        eliminate_dead_code(gm)  # keeps in-place ops whose write is still read (a shortcut's x.mul_())
    gm.delete_all_unused_submodules()  # with no dropped branch nothing else changes: no pass over the user's ops
    gm.recompile()
    return dropped, scaled


#: The buffer of a compact block that keeps its branches' factors where they fold into no layer.
SCALES = "sss_branch_scales"


def _scale_by_buffer(graph: fx.Graph, branch: fx.Node, j: int, owner: str = "") -> fx.Node:
    """Inserts ``branch · scales[j]`` after ``branch`` (``scales``: the :data:`SCALES` buffer of the
    module at path ``owner``) and returns it; its users still read ``branch``."""
    with graph.inserting_after(branch):
        scales = graph.get_attr(f"{owner}.{SCALES}" if owner else SCALES)
    with graph.inserting_after(scales):
        entry = graph.call_function(operator.getitem, (scales, j))
    with graph.inserting_after(entry):
        return graph.call_function(operator.mul, (branch, entry))


def scale_kept(graph: fx.Graph, adds: list[fx.Node], scaled: list[int], owner: str = "") -> None:
    """Scales the branches ``scaled`` of ``adds`` by their entries of the :data:`SCALES` buffer."""
    for j in scaled:
        branch = adds[j].args[0]
        adds[j].replace_input_with(branch, _scale_by_buffer(graph, branch, j, owner))


def removed_traced_block(module: nn.Module, branches: list[int] | None = None,
                         scaled: Sequence[int] = ()) -> fx.GraphModule:  # fmt: skip
    """What is left of an ungated block (any module :func:`gate_block` accepts) without the
    given branches (default: its first, the only one a block had before chained branches), the
    ``scaled`` ones scaled by a :data:`SCALES` buffer (its values: the saved state's): the form a
    pruned block is rebuilt to from the block itself."""
    gm = trace_module(module)
    adds = residual_adds(gm)
    if isinstance(adds, str):
        raise ValueError(f"{type(module).__name__} is not a residual block: {adds}")
    if scaled:
        gm.register_buffer(SCALES, torch.ones(max(scaled) + 1))
        scale_kept(gm.graph, adds, list(scaled))
    for j in branches if branches is not None else [0]:
        add = adds[j]
        add.replace_all_uses_with(add.args[1])
        gm.graph.erase_node(add)
    eliminate_dead_code(gm)
    gm.recompile()
    return gm
