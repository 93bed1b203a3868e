"""A pruned Hugging Face model saved as a Hugging Face model, where its config can say its shape.

``save_pretrained`` writes the weights and the config; ``from_pretrained`` builds the model
from the config and loads the weights into it. So a compact model goes through that round
trip only if some config builds exactly its shapes: every MLP the same (narrower) width
(``intermediate_size``), every attention the same number of heads, each of the old width
(``num_attention_heads``, ``num_key_value_heads``, with ``head_dim`` kept where the config
has one; a config that derives the head width from ``hidden_size / num_attention_heads``,
as BERT's and ViT's do, cannot say fewer heads of the same width), and the layers that block
factors removed whole dropped from the stack (``num_hidden_layers``). :func:`save_compact`
tries the config that the compact model's shapes imply, builds a fresh model from it, loads
the weights and compares outputs on the example; only a round trip that gives the same
function is saved that way. Anything else is saved with :func:`sss.save` (any shape).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sss.serialization import save


def _uniform(values: list[int]) -> int | None:
    """The one value all of ``values`` share (``None`` when empty or mixed)."""
    return values[0] if values and all(v == values[0] for v in values) else None


def _implied_config(model: nn.Module, dense: nn.Module) -> Any | None:
    """A copy of ``model.config`` with the widths the pruned ``model`` shows against ``dense``
    (the model its config builds): ``intermediate_size`` from the MLP dimensions that narrowed,
    the head counts from its attention modules. ``None``: a width differs between layers, the
    model lost or renamed parameters (removed layers). The caller still checks that the config builds these shapes."""
    config = copy.deepcopy(model.config)
    ours, theirs = model.state_dict(), dense.state_dict()
    if set(ours) != set(theirs):
        return None
    width, heads = getattr(config, "intermediate_size", None), getattr(config, "num_attention_heads", None)
    # A config without head_dim derives it from hidden_size / num_attention_heads; said explicitly, it
    # survives a change of the count in the models that read config.head_dim (Qwen2, Mistral, ...).
    head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    found: dict[str, list[int]] = {"intermediate_size": [], "num_attention_heads": [], "num_key_value_heads": []}
    for key, value in ours.items():
        for old, new in zip(theirs[key].shape, value.shape, strict=True):
            if old == new:
                continue
            if old == width:
                found["intermediate_size"].append(new)
            elif head_dim and heads and old == heads * head_dim:  # query heads (and their output projection)
                found["num_attention_heads"].append(new // head_dim)
            elif head_dim and kv_heads and old == kv_heads * head_dim:  # key/value heads
                found["num_key_value_heads"].append(new // head_dim)
            else:
                return None  # a width the config has no field for
    if heads and found["num_attention_heads"] and not found["num_key_value_heads"]:
        found["num_key_value_heads"] = [n * kv_heads // heads for n in found["num_attention_heads"]]
    if found["num_attention_heads"]:
        config.head_dim = head_dim  # BERT, ViT: ignored (they divide hidden_size): the round trip then fails
    for name, values in found.items():
        if values:
            if (value := _uniform(values)) is None:
                return None  # layers of different widths: one config field cannot say it
            setattr(config, name, value)
    return config


def save_compact(model: nn.Module, path: str | Path, example: torch.Tensor) -> str:
    """Saves a pruned model: as a Hugging Face model in folder ``path`` (``save_pretrained``,
    reloaded with ``from_pretrained``) when its config can say its shape and the round trip
    gives the same outputs on ``example``; otherwise with :func:`sss.save` at ``path``
    (``.safetensors`` + ``.json``, read back by :func:`sss.load`). Returns ``"pretrained"`` or
    ``"sss"``: which one it wrote."""
    path = Path(path)
    config = getattr(model, "config", None)
    if config is not None and hasattr(model, "save_pretrained"):
        shallower = _without_removed_layers(model)
        implied = _implied_config(shallower, type(model)(copy.deepcopy(shallower.config)))
        if implied is not None and _round_trip_equal(shallower, implied, example):
            shallower.config = implied
            shallower.save_pretrained(path)
            return "pretrained"
    save(model, path)
    return "sss"


def _without_removed_layers(model: nn.Module) -> nn.Module:
    """``model``, or where block factors removed whole layers (a layer of its stack left with no
    parameters: every branch gone, so it passes its input on), a copy without them whose config
    says the new depth (``num_hidden_layers``, and ``layer_types`` where the config lists one per
    layer): a model ``from_pretrained`` builds, if the caller's round trip then agrees."""
    depth = getattr(model.config, "num_hidden_layers", None)
    stacks = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == depth]
    if depth is None or len(stacks) != 1:
        return model
    path, stack = stacks[0]
    kept = [layer for layer in stack if any(True for _ in layer.parameters())]
    if len(kept) in (0, len(stack)):
        return model
    shallower = copy.copy(model)  # shares every module; only the stack and the config are its own
    shallower._modules = dict(model._modules)
    shallower.config = copy.deepcopy(model.config)
    parent, _, name = path.rpartition(".")
    owner = shallower
    for part in parent.split(".") if parent else []:
        copied = copy.copy(getattr(owner, part))
        copied._modules = dict(copied._modules)
        owner._modules[part] = copied
        owner = copied
    owner._modules[name] = nn.ModuleList(kept)
    layer_types = getattr(shallower.config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == depth:
        shallower.config.layer_types = [t for t, layer in zip(layer_types, stack, strict=True) if layer in kept]
    shallower.config.num_hidden_layers = len(kept)
    return shallower


@torch.no_grad()
def _round_trip_equal(model: nn.Module, config: Any, example: torch.Tensor) -> bool:
    """Whether a model built from ``config`` takes ``model``'s weights and computes its outputs."""
    try:  # a probe: whatever a model's __init__ raises on a config it cannot build means "cannot say it"
        rebuilt = type(model)(config)
        rebuilt.load_state_dict(model.state_dict())
    except Exception:
        return False
    was_training = model.training
    model.eval(), rebuilt.eval()
    try:
        ours, theirs = model(example), rebuilt(example)
    finally:
        model.train(was_training)
    ours = ours.logits if hasattr(ours, "logits") else ours
    theirs = theirs.logits if hasattr(theirs, "logits") else theirs
    return ours.shape == theirs.shape and torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5)
