"""Training engine: SSS (or a dense baseline) with logging, checkpoints and resume."""

from sss.train.config import TrainConfig, load_config
from sss.train.engine import CHECKPOINT, BatchResult, Trainer, TrainResult

__all__ = ["CHECKPOINT", "BatchResult", "TrainConfig", "TrainResult", "Trainer", "load_config"]
