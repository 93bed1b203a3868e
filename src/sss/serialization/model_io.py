"""``sss.save`` / ``sss.load``: a compact model as safetensors weights plus a JSON spec."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sss.errors import CheckpointError
from sss.models import create
from sss.serialization.state import atomic_write
from sss.structures.attach import attach
from sss.structures.branches import drop_branches
from sss.structures.gate import gates
from sss.structures.traced_blocks import trace_module
from sss.surgery.prune import remove_blocks
from sss.surgery.shapes import apply_layer_shapes


def _paths(path: str | Path) -> tuple[Path, Path]:
    base = Path(path)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def save(model: nn.Module, path: str | Path) -> None:
    """Saves a zoo model (gated, pruned or plain) as ``path.safetensors`` + ``path.json``.

    The JSON says how to rebuild the architecture (model name, builder keywords, removed
    blocks, whether it is gated); the safetensors file holds the weights and buffers.
    """
    spec = getattr(model, "sss_spec", None)
    if spec is None:
        raise ValueError("sss.save needs a model built by sss.models.create (it carries model.sss_spec)")
    weights_path, spec_path = _paths(path)
    spec = {**spec, "gated": sorted({g.kind for g in gates(model)})}  # the gate kinds to re-attach
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(weights_path, lambda tmp: save_file(tensors, tmp, metadata={"format": "sss-model/1"}))
    atomic_write(spec_path, lambda tmp: Path(tmp).write_text(json.dumps(spec, indent=2) + "\n"))


def load(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuilds a model saved by :func:`save`; never unpickles anything.

    Raises:
        CheckpointError: A file is missing or corrupt, or the weights do not fit the spec.
    """
    weights_path, spec_path = _paths(path)
    for p in (weights_path, spec_path):
        if not p.is_file():
            raise CheckpointError(f"{p} not found; sss.save writes both {weights_path.name} and {spec_path.name}")
    try:
        spec = json.loads(spec_path.read_text())
        model = create(spec["name"], **spec["kwargs"])
        if spec.get("gated"):
            shape = spec.get("attach_input_shape")
            example = torch.zeros(1, *shape) if shape else None
            model = attach(model, example, spec["gated"], inplace=True)
        remove_blocks(model, spec.get("removed", []))
        for path, dropped in spec.get("dropped_branches", {}).items():
            model.set_submodule(path, drop_branches(trace_module(model.get_submodule(path)), set(dropped)))
        apply_layer_shapes(model, spec.get("shapes", {}))
        state = load_file(str(weights_path), device=str(map_location))
        model.load_state_dict(state, strict=True)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"cannot load the model saved at {weights_path.with_suffix('')}: {e}") from e
    keys = ("name", "kwargs", "removed", "dropped_branches", "shapes", "attach_input_shape")
    model.sss_spec = {k: spec[k] for k in keys if k in spec}
    return model.to(map_location).eval()
