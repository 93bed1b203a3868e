"""Pickle-free persistence: training checkpoints and compact models (safetensors + JSON)."""

from sss.serialization.model_io import load, save
from sss.serialization.state import load_state, save_state

__all__ = ["load", "load_state", "save", "save_state"]
