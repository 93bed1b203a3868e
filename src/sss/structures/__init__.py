"""Structures that carry a learnable scaling factor, and the factors themselves."""

from sss.structures.attach import attach
from sss.structures.discovery import find_structures
from sss.structures.gate import Gate, GateRef, factor_parameters, gates
from sss.structures.residual import ResidualBlock

__all__ = ["Gate", "GateRef", "ResidualBlock", "attach", "factor_parameters", "find_structures", "gates"]
