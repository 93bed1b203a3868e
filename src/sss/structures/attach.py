"""Putting scaling factors on a model's structures."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from sss.errors import UnsupportedModelError
from sss.structures.boundary import model_errors
from sss.structures.conv1d import as_linear, convert_conv1d, is_conv1d
from sss.structures.copying import deep_copy
from sss.structures.discovery import check_not_wrapped, find_known, find_structures
from sss.structures.history import record, register_op
from sss.structures.registry import get_kind, kind_names, parse_kinds
from sss.structures.torch_transformer import convert_torch_transformers

logger = logging.getLogger("sss")


def attach(
    model: nn.Module,
    example_inputs: torch.Tensor | None = None,
    structures: str | Sequence[str] = ("block",),
    *,
    ignore: Sequence[str] = (),
    inplace: bool = False,
) -> nn.Module:
    """Returns ``model`` with a scaling factor λ = 1 on each structure of the chosen kinds.

    The kinds of a model are found by tracing (see :func:`sss.find_structures`, which also
    says why a candidate was skipped). Kinds the model has none of are reported in a log line
    and skipped; only a model with nothing at all to gate is refused.

    Args:
        model: Any model. ``"block"``: submodules whose forward adds a branch to their input
            (or a downsample of it), found by ``torch.fx`` (torchvision-style, pre-activation
            and inverted residual blocks), or :class:`sss.structures.ResidualBlock` (the
            zoo's ResNets). ``"channel"``: every removable conv/linear output channel, one
            factor shared by all layers coupled to it (residual sums, concat, depthwise
            convs), found with Torch-Pruning. ``"group"``: every group of a grouped conv.
            ``"branch"``: every branch of a module that concatenates parallel branches (GAL's
            Inception masks). ``"head"``: every attention head. ``"embedding"``: every channel of
            a residual stream read through LayerNorms (a transformer's width; the compact
            model's norms keep the full-width statistics). Kinds added with
            :func:`sss.structures.register_kind` too.
        example_inputs: An input batch; required by every kind but ``"block"``.
        structures: Which kinds get factors: names, or one string naming one kind or a
            comma-separated list (``"channel"``, ``"block,channel"``).
        ignore: Module paths (and everything below them) that get no factor, e.g. a layer
            whose width must stay fixed or a block that must stay.
        inplace: Modify ``model`` itself instead of a copy.

    ``nn.TransformerEncoder`` / ``nn.TransformerEncoderLayer`` modules are first rewritten as
    traceable modules computing the same function, whose attention has ``qkv`` / ``proj``
    layers (:mod:`sss.structures.torch_transformer`; an edit of the history, so ``sss.load``
    replays it).

    Raises:
        ValueError: ``structures`` is empty, a kind is unknown, or needs ``example_inputs`` and
            got none.
        UnsupportedModelError: The model has no structure of any requested kind, or is wrapped in
            ``nn.DataParallel`` / ``DistributedDataParallel`` (pass ``model.module``).
    """
    check_not_wrapped(model)
    structures = parse_kinds(structures)
    if not structures:
        raise ValueError(f"structures is empty: name at least one kind to gate, from {', '.join(kind_names())} "
                         "(e.g. structures=('block', 'channel'))")  # fmt: skip
    kinds = [get_kind(name) for name in structures]
    for kind in kinds:
        if kind.needs_example and example_inputs is None:
            raise ValueError(f"{kind.name} factors need example_inputs (one input batch) to trace the model")
    if not inplace:
        model = deep_copy(model)
    with model_errors(model, "gating"):
        return _gate_model(model, example_inputs, structures, ignore)


def _gate_model(model: nn.Module, example_inputs: torch.Tensor | None, structures: list[str], ignore: Sequence[str],
                known: dict[str, list[str]] | None = None) -> nn.Module:  # fmt: skip
    """:func:`attach` on ``model`` itself: its structures found (or the ``known`` ones, by kind
    and label, unchecked), gated, and recorded in the history with what was found."""
    kinds = [get_kind(name) for name in structures]
    # torch's encoder layers cannot be traced nor lose a head: rewritten first, as the same function
    if converted := convert_torch_transformers(model, example_inputs, ignore):
        record(model, [{"op": "convert_transformers", "paths": converted, "ignore": list(ignore)}])
    if converted := convert_conv1d(model, ignore):  # GPT-2's transposed linear layers, as nn.Linear
        record(model, [{"op": "convert_conv1d", "paths": converted}])
    if known is None:
        report = find_structures(model, example_inputs, structures, ignore)
    else:
        report = find_known(model, example_inputs, known, ignore)
    if not report.found:
        reasons = f" ({'; '.join(report.skipped)})" if report.skipped else ""
        raise UnsupportedModelError(f"{type(model).__name__} has nothing to gate: " + "; ".join(
            f"no {kind.not_found}" for kind in kinds) + reasons + " (sss.find_structures lists every candidate "
            "and why it was skipped)")  # fmt: skip
    if report.missing and known is None:
        logger.warning("%s has no %s structures; gating the other kinds", type(model).__name__,
                       "/".join(report.missing))  # fmt: skip
    logger.info("%s: %s", type(model).__name__, report.summary())
    for kind in sorted(kinds, key=lambda k: kind_names().index(k.name)):  # layers are wrapped before modules trace
        if report.structures.get(kind.name):
            kind.gate(model, report.structures[kind.name])
    shape = list(example_inputs.shape[1:]) if example_inputs is not None else None
    found = {name: report.names(name) for name in report.found}
    edit = {"op": "attach", "kinds": report.found, "ignore": list(ignore), "input_shape": shape, "structures": found}
    if example_inputs is not None and not example_inputs.is_floating_point():  # token ids: rebuilt with ids
        edit["input_dtype"] = str(example_inputs.dtype).removeprefix("torch.")
    record(model, [edit])
    return model


@register_op("attach")
def _replay_attach(model: nn.Module, edit: dict, *, pruned_later: bool) -> nn.Module:
    """Gates the structures the edit recorded again (found by label, not re-checked), unless a
    ``prune`` follows: gating and then folding the gates away leaves the plain model's modules
    and keys (a contract of every kind)."""
    if pruned_later:
        return model
    shape = edit.get("input_shape")
    dtype = getattr(torch, edit.get("input_dtype", "float32"))
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"its input_dtype {edit['input_dtype']!r} is not a torch dtype")
    example = torch.zeros(1, *shape, dtype=dtype) if shape else None
    if "structures" not in edit:  # written before the edit recorded them: found and checked again
        return attach(model, example, edit["kinds"], ignore=edit.get("ignore", []), inplace=True)
    return _gate_model(model, example, edit["kinds"], edit.get("ignore", []), known=edit["structures"])


@register_op("convert_transformers")
def _replay_convert_transformers(model: nn.Module, edit: dict, *, pruned_later: bool) -> nn.Module:
    """Rewrites torch's encoder layers (and the free-standing attentions the attach rewrote) again,
    checking that the same paths are rewritten."""
    standalone = any(isinstance(_module_at(model, path), nn.MultiheadAttention) for path in edit["paths"])
    paths = convert_torch_transformers(model, ignore=edit.get("ignore", []), standalone=standalone)
    if paths != edit["paths"]:
        raise ValueError(f"it rewrites torch transformer modules at {paths}, the edit at {edit['paths']}")
    return model


@register_op("convert_conv1d")
def _replay_convert_conv1d(model: nn.Module, edit: dict, *, pruned_later: bool) -> nn.Module:
    """Rewrites the recorded ``Conv1D`` layers as ``nn.Linear`` again (a layer that already is one,
    in a base rewritten before, stays as it is)."""
    for path in edit["paths"]:
        layer = _module_at(model, path)
        if is_conv1d(layer):
            model.set_submodule(path, as_linear(layer))
        elif not isinstance(layer, nn.Linear):
            raise ValueError(f"the edit rewrites a Conv1D at {path}, where the model has {type(layer).__name__}")
    return model


def _module_at(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None
