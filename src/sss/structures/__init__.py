"""Structures that carry a learnable scaling factor, and the factors themselves.

Importing this package registers the built-in kinds: channel, embedding, head, group, block, branch (the order
in which ``attach`` gates them and ``prune`` removes them; see ``StructureKind.order``).
"""

from sss.structures.attach import attach
from sss.structures.discovery import StructureReport, find_structures
from sss.structures.full_width_norm import FullWidthLayerNorm, use_stock_norms
from sss.structures.gate import Gate, GateRef, factor_parameters, gates
from sss.structures.history import history, removed_blocks
from sss.structures.kinds import blocks, branches, channels, embedding, groups, heads  # noqa: F401  (the built-in kinds register)
from sss.structures.registry import Discovery, Removal, StructureKind, kind_names, register_kind, unregister_kind
from sss.structures.residual import ResidualBlock

__all__ = [
    "Discovery",
    "FullWidthLayerNorm",
    "Gate",
    "GateRef",
    "Removal",
    "ResidualBlock",
    "StructureKind",
    "StructureReport",
    "attach",
    "factor_parameters",
    "find_structures",
    "gates",
    "history",
    "kind_names",
    "register_kind",
    "removed_blocks",
    "unregister_kind",
    "use_stock_norms",
]
