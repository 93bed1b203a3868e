"""Block factors on any model's residual blocks, found by tracing each submodule with ``torch.fx``.

A submodule is a *block* when its traced graph has exactly one residual sum
``add(branch, shortcut)`` whose two operands both come from the module's input along
disjoint paths (the shortcut may be the input itself, or a downsample), and whose branch
ends in a BatchNorm, conv or linear layer (or an attention module, folded into its ``proj``):
torchvision's BasicBlock and Bottleneck, pre-activation blocks, MobileNetV2's inverted
residuals, and a pre-norm transformer block's attention branch (its MLP branch is the second
sum, which is kept after the first: removing the block removes the attention branch only).
The block is replaced by its traced
``GraphModule`` with a :class:`Gate` (``.gate``) on the branch: ``post(shortcut + λ·branch)``.

When ``λ = 0`` the block becomes the same graph without its branch: the shortcut and the ops
after the sum (a final ReLU), exactly. Otherwise λ is folded into the branch's last layer.
"""

from __future__ import annotations

from torch import fx, nn

from sss.structures.gate import ChannelGated, Gate, fold_output_scale
from sss.structures.tracing import (
    ADDS,
    AFFINE,
    ancestors,
    eliminate_dead_code,
    is_attention,
    trace_and_find,
    trace_module,
)


def _residual_add(gm: fx.GraphModule) -> fx.Node | str:
    """The block's one residual sum (args: branch, shortcut), or why there is none."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return "its forward takes more than one input"
    x = placeholders[0]
    modules = dict(gm.named_modules())
    found = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in ADDS or len(node.args) != 2:
            continue
        a, b = node.args
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            continue
        anc_a, anc_b = ancestors(a) | {a}, ancestors(b) | {b}
        if x not in anc_a or x not in anc_b:
            continue
        # The branch is the operand with layers of its own; the shortcut shares none of them.
        if (anc_a & anc_b) - ({x} | (ancestors(x))):
            continue
        branch, shortcut = (a, b) if len(anc_a) >= len(anc_b) else (b, a)
        found.append((node, branch, shortcut))
    if len(found) != 1:
        return f"it has {len(found)} residual sums of its input (a block has exactly one)"
    node, branch, shortcut = found[0]
    last = modules.get(branch.target) if branch.op == "call_module" else None
    last = last.inner if isinstance(last, ChannelGated) else last
    if not isinstance(last, AFFINE) and not is_attention(last):
        return (
            f"its branch ends in {branch.format_node()}, not a BatchNorm/conv/linear layer or attention to fold λ into"
        )
    node.args = (branch, shortcut)
    return node


def gate_block(module: nn.Module, device, dtype) -> fx.GraphModule | str:
    traced = trace_and_find(module, _residual_add)
    if isinstance(traced, str):
        return traced
    gm, add = traced
    if hasattr(gm, "gate"):
        return "it already has an attribute named 'gate'"
    gm.add_submodule("gate", Gate("block").to(device=device, dtype=dtype))
    branch = add.args[0]
    with gm.graph.inserting_after(branch):
        gated = gm.graph.call_module("gate", (branch,))
    add.replace_input_with(branch, gated)
    gm.recompile()
    return gm


def is_traced_block(module: nn.Module) -> bool:
    """Whether ``module`` is a block gated by :func:`gate_block`."""
    gate = getattr(module, "gate", None)
    return isinstance(module, fx.GraphModule) and isinstance(gate, Gate) and gate.kind == "block"


def compact_traced_block(gm: fx.GraphModule, threshold: float = 0.0) -> fx.GraphModule:
    """The gate-free block: its shortcut and post-sum ops if ``|λ| <= threshold``, else the
    block with λ folded into the branch's last layer. ``gm`` is modified in place."""
    lam = gm.gate.weight.detach()
    gate_node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == "gate")
    branch = gate_node.args[0]
    if float(lam.abs().max()) <= threshold:
        return _drop_branch(gm, next(iter(gate_node.users)), gate_node)
    last = gm.get_submodule(branch.target)
    fold_output_scale(last.proj if is_attention(last) else last, lam)  # attention: its output projection
    gate_node.replace_all_uses_with(branch)
    gm.graph.erase_node(gate_node)  # nothing else changes: no dead-code pass over the user's ops
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _drop_branch(gm: fx.GraphModule, add: fx.Node, branch: fx.Node) -> fx.GraphModule:
    """Replaces the residual sum ``add`` by its shortcut operand; the branch goes as dead code."""
    shortcut = add.args[1] if add.args[0] is branch else add.args[0]
    add.replace_all_uses_with(shortcut)
    gm.graph.erase_node(add)
    eliminate_dead_code(gm)  # keeps in-place ops whose write is still read (a shortcut's x.mul_())
    return gm


def removed_traced_block(module: nn.Module) -> fx.GraphModule:
    """What is left of an ungated block (any module :func:`gate_block` accepts) without its
    branch: the form a zero-factor block is pruned to, rebuilt from the block itself."""
    gm = trace_module(module)
    add = _residual_add(gm)
    if isinstance(add, str):
        raise ValueError(f"{type(module).__name__} is not a residual block: {add}")
    return _drop_branch(gm, add, add.args[0])
