"""sss: Sparse Structure Selection for PyTorch.

Learn a scaling factor per structure with an L1 penalty and a proximal optimizer, then
remove the structures whose factor is exactly zero::

    model = sss.models.create("resnet56", num_classes=10)
    gated = sss.attach(model, structures=("block",))
    ...train with sss.build_optimizers(gated, lr=0.1, gamma=0.01)...
    compact = sss.prune(gated)          # plain nn.Module, same outputs, fewer blocks
    macs, params = sss.count(compact, torch.randn(1, 3, 32, 32))

or, from a trained model to a budget in one call (the ``sss compress`` recipe)::

    compact, report = sss.compress(model, example, train_data, val_data, target_macs=0.5, epochs=4)
"""

from sss import models
from sss.errors import CheckpointError, DataError, SSSError, TrainingDivergedError, UnsupportedModelError
from sss.measure import compare_latency, count, evaluate
from sss.optim import APG, ISTA, L1SGD, build_optimizers
from sss.recipes.compress_api import compress
from sss.serialization import export_onnx, load, save
from sss.structures import Gate, GateRef, attach, find_structures, gates
from sss.structures.prune import prune, zero_small_factors

__version__ = "0.1.0"

__all__ = [
    "APG",
    "ISTA",
    "L1SGD",
    "CheckpointError",
    "DataError",
    "Gate",
    "GateRef",
    "SSSError",
    "TrainingDivergedError",
    "UnsupportedModelError",
    "attach",
    "build_optimizers",
    "compare_latency",
    "compress",
    "count",
    "evaluate",
    "export_onnx",
    "find_structures",
    "gates",
    "load",
    "models",
    "prune",
    "save",
    "zero_small_factors",
]
