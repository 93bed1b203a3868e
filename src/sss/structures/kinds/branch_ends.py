"""Where a residual branch ends: the attention modules a trace of a layer keeps as leaves and
the output projection a factor on their output folds into, and the parameter-free stand-in left
where a removed branch's module was (:mod:`sss.structures.kinds.called_blocks`)."""

from __future__ import annotations

from torch import nn

from sss.structures.gate import ChannelGated
from sss.structures.kinds.head_layouts import fused_projections
from sss.structures.tracing import QKV_NAMES, head_count, is_attention

#: The names an attention module's output projection goes by (timm's, Hugging Face's, GPT-2's,
#: DistilBERT's; ``dense`` under Hugging Face's ``output`` submodule of ViT and Swin).
_OUTPUT_PROJECTIONS = ("proj", "o_proj", "out_proj", "c_proj", "out_lin", "dense")


class RemovedBranch(nn.Module):
    """What stands, without parameters, where a module of a removed branch of a called block was
    (:mod:`sss.structures.kinds.called_blocks`): the layer's own code still calls it when traced,
    and the traced graph drops the call with the branch. Running it is a bug."""

    def forward(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("a module of a removed residual branch ran; its layer's traced forward should skip it")


def is_attention_leaf(m: nn.Module | None) -> bool:
    """Whether ``m`` is an attention module (an int head count, or query/key/value projections:
    Hugging Face's), which a trace of a layer as it is called keeps as a leaf."""
    return m is not None and (head_count(m) is not None or fused_projections(m) is not None
                              or any(all(hasattr(m, n) for n in names) for names in QKV_NAMES))  # fmt: skip


def attention_output(m: nn.Module | None) -> nn.Module | None:
    """The output projection of attention module ``m`` (:func:`is_attention_leaf`): the layer a
    factor on the attention's output folds into, found by name and only if there is exactly one."""
    if m is None:
        return None
    if is_attention(m):
        return m.proj
    if not is_attention_leaf(m):
        return None
    found = [x for path, x in m.named_modules() if path.rpartition(".")[2] in _OUTPUT_PROJECTIONS]
    found = [x.inner if isinstance(x, ChannelGated) else x for x in found]
    return found[0] if len(found) == 1 and isinstance(found[0], nn.Linear) else None
