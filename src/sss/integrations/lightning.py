"""Sparse structure selection inside a Lightning ``Trainer``: one callback.

::

    callback = SelectionCallback(example, target_macs=0.5, structures=("channel",))
    trainer = lightning.Trainer(max_epochs=4, callbacks=[callback])
    trainer.fit(module, train_loader)      # selects, lands on half the MACs, fine-tunes the rest
    callback.compact                       # the plain, smaller model (sss.save it, export it)

Where Lightning's own ``ModelPruning`` masks weights (nothing is removed), this callback removes
channels, heads and blocks, exactly. At ``setup`` it gates the LightningModule (or its
``model_attr`` submodule) in place, before a checkpoint is restored into it, so a resumed fit
gets its factors back; at the start of the fit it hooks the optimizers that
``configure_optimizers`` built (:class:`~sss.integrations.selection.Selection`: the factors skip
the user's optimizer and take their own proximal step after each of its steps, with gradient
accumulation, clipping and mixed precision as Lightning applies them). The selection runs
``select_for`` of the training, lands on the budget and freezes; the rest fine-tunes. Its state
(the step, the factors' optimizer, the budget) is in Lightning's checkpoints, under this
callback's key, so ``fit(ckpt_path=...)`` continues the selection where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

from sss.integrations.selection import Selection, SelectionSettings, kinds_of, selection_steps_of
from sss.viz.tensorboard import TensorBoardLog


class SelectionCallback(pl.Callback):
    """SSS for a Lightning ``Trainer`` (see the module's docstring).

    Args:
        example: An input batch the gated module's forward takes positionally.
        model_attr: The attribute of the LightningModule that holds the network to gate (``None``:
            the LightningModule itself, whose ``forward`` then takes ``example``).
        structures: The kinds that get factors.
        target_macs / target_params: A budget (a fraction of dense, or a count such as ``"18M"``).
        select_for: How much of the training selects: a fraction (``0.5``) or a number of optimizer steps.
        gamma / lr / from_trained / round_to / ignore: As :class:`SelectionSettings`.
        tensorboard: Write the selection's numbers (zero factors per kind, γ, the compact model's
            MACs and parameters, factor histograms) every ``log_every_n_steps``: ``True`` into the
            Trainer's ``TensorBoardLogger`` (its default logger), or into this folder.
        log: Where the landing's lines go.
    """

    def __init__(self, example: torch.Tensor, *, model_attr: str | None = None,
                 structures: str | Sequence[str] = ("channel",), target_macs: float | str | None = None,
                 target_params: float | str | None = None, select_for: float | int = 0.5, gamma: float = 1e-4,
                 lr: float = 0.01, from_trained: bool = True, round_to: int = 1, ignore: Sequence[str] = (),
                 tensorboard: str | Path | bool | None = None, log: Callable[[str], None] = print) -> None:  # fmt: skip
        # Not `self.log`: Lightning sets every callback's `log` to the LightningModule's own.
        self.example, self.model_attr, self.select_for, self.log_line = example, model_attr, select_for, log
        self.settings = SelectionSettings(kinds_of(structures), target_macs, target_params, None, gamma, lr,
                                          from_trained, round_to, tuple(ignore))  # fmt: skip
        self.tensorboard = tensorboard
        self.selection: Selection | None = None
        self.compact: nn.Module | None = None
        self._restored: dict | None = None
        self._board: TensorBoardLog | None = None

    @property
    def state_key(self) -> str:
        return "sss.SelectionCallback"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.selection is None:
            network = getattr(pl_module, self.model_attr) if self.model_attr else pl_module
            self.selection = Selection(network, self.example.to(pl_module.device), self.settings, log=self.log_line)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        selection = self._selection()
        if selection.optimizer is None:
            selection.begin(selection_steps_of(int(trainer.estimated_stepping_batches), self.select_for))
            for optimizer in trainer.optimizers:
                selection.hook(optimizer)
        if self._restored is not None:
            selection.load_state_dict(self._restored)
            self._restored = None
        if self.tensorboard:
            from lightning.pytorch.loggers import TensorBoardLogger

            if self.tensorboard is True and isinstance(trainer.logger, TensorBoardLogger):
                self._board = TensorBoardLog(writer=trainer.logger.experiment)
            else:
                folder = Path(trainer.default_root_dir) / "sss" if self.tensorboard is True else self.tensorboard
                self._board = TensorBoardLog(folder)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:  # fmt: skip
        if self._board is not None and trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            self._write(trainer.global_step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        selection = self._selection()
        selection.land()  # a fit shorter than the selection lands here
        selection.unhook()
        self.compact = selection.compact().eval()
        if self._board is not None:
            self._write(trainer.global_step)
            self._board.flush()

    def _write(self, step: int) -> None:
        self._board.scalars(self._selection().figures(), step, prefix="sss/")
        self._board.histograms(self._selection().factor_values(), step)

    def _selection(self) -> Selection:
        if self.selection is None:
            raise RuntimeError("SelectionCallback gates the model at Trainer.fit's setup; call fit first")
        return self.selection

    def state_dict(self) -> dict:
        return self.selection.state_dict() if self.selection is not None and self.selection.optimizer else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = state_dict or None  # applied at on_fit_start, once the optimizers exist
