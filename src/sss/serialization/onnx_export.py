"""ONNX export of (compact) models, for onnxruntime and other deployment runtimes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from sss.errors import MissingDependencyError
from sss.structures.gate import gates


def export_onnx(model: nn.Module, example_inputs: torch.Tensor, path: str | Path) -> Path:
    """Writes ``model`` (in eval mode) as ONNX with a dynamic batch dimension.

    Export the compact model (:func:`sss.prune`): a gated model would carry its factors into
    the graph. Uses torch's TorchScript-based exporter (``dynamo=False``), which needs the
    ``onnx`` package (``pip install 'sss[onnx]'``); onnxruntime's outputs match torch's to float
    rounding (tested).
    """
    if importlib.util.find_spec("onnx") is None:
        raise MissingDependencyError(
            "ONNX export needs the onnx package: pip install onnx (or 'sss[onnx]' for onnxruntime too)"
        )
    if gates(model):
        raise ValueError("export the compact model: call sss.prune(model) first")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        torch.onnx.export(
            model, (example_inputs,), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
    finally:
        model.train(was_training)
    return path
