"""Pickle-free persistence: training checkpoints and compact models (safetensors + JSON)."""

from sss.serialization.model_io import load, save
from sss.serialization.onnx_export import export_onnx
from sss.serialization.state import load_state, save_state

__all__ = ["export_onnx", "load", "load_state", "save", "save_state"]
