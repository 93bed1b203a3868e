"""Training engine: SSS (or a dense baseline) with logging, checkpoints and resume."""

from sss.train.config import TrainConfig, load_config
from sss.train.engine import Trainer
from sss.train.results import BatchResult, TrainResult
from sss.train.run_folder import CHECKPOINT, METRICS, RunFolder

__all__ = ["CHECKPOINT", "METRICS", "BatchResult", "RunFolder", "TrainConfig", "TrainResult", "Trainer", "load_config"]
