"""TensorBoard event files for a selection: scalars and factor histograms per kind.

Uses ``torch.utils.tensorboard`` (which needs the ``tensorboard`` package: the ``tensorboard``
extra); the writer is opened on first use, so a run that never logs makes no file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from sss.errors import SSSError


def _summary_writer(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch's module imports the tensorboard package
        raise SSSError("TensorBoard logging needs the tensorboard package: pip install 'sss[tensorboard]' "
                       "(or pip install tensorboard), or leave tensorboard off") from e  # fmt: skip
    return SummaryWriter(log_dir=str(log_dir))


class TensorBoardLog:
    """Writes a run's numbers to TensorBoard under ``log_dir``.

    Args:
        log_dir: The folder of the event files (``tensorboard --logdir`` it).
        writer: An open ``SummaryWriter`` to write into instead (Lightning's logger's).
    """

    def __init__(self, log_dir: str | Path | None = None, *, writer=None) -> None:
        if writer is None and log_dir is None:
            raise ValueError("TensorBoardLog needs a log_dir or a writer")
        self.log_dir, self._writer = Path(log_dir) if log_dir is not None else None, writer

    @property
    def writer(self):
        if self._writer is None:
            self._writer = _summary_writer(self.log_dir)
        return self._writer

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        """One point per value (names with ``/`` group into sections: ``zero_factors/channel``)."""
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(prefix + name, value, step)

    def histograms(self, values: Mapping[str, torch.Tensor], step: int, prefix: str = "factors/") -> None:
        """One histogram per tensor (the factors of one kind)."""
        for name, tensor in values.items():
            if tensor.numel():
                self.writer.add_histogram(prefix + name, tensor.float(), step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
