"""Sparse structure selection inside a Hugging Face ``transformers.Trainer``: one callback.

::

    callback = SelectionCallback(model, example_ids, target_macs=0.6, structures=("channel", "head"))
    trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[callback])
    trainer.train()                  # selects, lands on 60% of the MACs, fine-tunes what is left
    callback.compact                 # the plain, smaller model; saved in output_dir/compact

The callback gates ``model`` in place when it is built (so build it before the ``Trainer``,
whose optimizer must see the factors and whose checkpoints then hold them). At the start of
training it hooks the Trainer's optimizer (:class:`~sss.integrations.selection.Selection`): the
factors never take an AdamW step or weight decay, they take their own proximal step after
each real optimizer step (so gradient accumulation, clipping and fp16 loss scaling apply to
them as to the weights), for ``select_for`` of the training; then the budget lands, the factors
freeze, and the rest of the training fine-tunes the kept structures. At the end the zero
structures are removed and the compact model is saved with ``save_pretrained`` where its
config can say the shape (:func:`~sss.integrations.hf_save.save_compact`), with
:func:`sss.save` otherwise. Each checkpoint gets ``sss_selection.safetensors`` (the factors'
optimizer and the budget), so ``trainer.train(resume_from_checkpoint=...)`` continues the
selection where it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import TrainerCallback

from sss.errors import CheckpointError
from sss.integrations.hf_save import save_compact
from sss.integrations.selection import Selection, SelectionSettings, kinds_of, selection_steps_of
from sss.serialization import load_state, save_state
from sss.viz.tensorboard import TensorBoardLog

#: The selection's state in each Trainer checkpoint folder.
STATE_FILE = "sss_selection.safetensors"


class SelectionCallback(TrainerCallback):
    """SSS for a ``transformers.Trainer`` (see the module's docstring).

    Args:
        model: The model the Trainer trains, gated in place here.
        example: An input batch its forward takes positionally (token ids, pixel values).
        structures: The kinds that get factors.
        target_macs / target_params: A budget (a fraction of dense, or a count such as ``"18M"``).
        select_for: How much of the training selects: a fraction (``0.5``) or a number of optimizer steps.
        gamma / lr / from_trained / round_to / ignore: As :class:`SelectionSettings`.
        save_dir: Where the compact model goes (``None``: ``output_dir/compact``; ``False``: not saved).
        tensorboard: A folder for TensorBoard event files of the selection (zero factors per kind,
            γ, the compact model's MACs and parameters, factor histograms), written at each of the
            Trainer's logging steps; ``True``: ``output_dir/runs/sss``. The Trainer's own
            ``report_to="tensorboard"`` logs the loss and the learning rate.
        log: Where the landing's lines go.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, *, structures: str | Sequence[str] = ("channel",),
                 target_macs: float | str | None = None, target_params: float | str | None = None,
                 select_for: float | int = 0.5, gamma: float = 1e-4, lr: float = 0.01, from_trained: bool = True,
                 round_to: int = 1, ignore: Sequence[str] = (), save_dir: str | Path | bool | None = None,
                 tensorboard: str | Path | bool | None = None, log: Callable[[str], None] = print) -> None:  # fmt: skip
        settings = SelectionSettings(kinds_of(structures), target_macs, target_params, None, gamma, lr, from_trained,
                                     round_to, tuple(ignore))  # fmt: skip
        self.selection = Selection(model, example, settings, log=log)
        self.select_for, self.save_dir, self.tensorboard = select_for, save_dir, tensorboard
        self.compact: nn.Module | None = None
        self.saved_as: str | None = None
        self._board: TensorBoardLog | None = None

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        selection = self.selection
        if selection.optimizer is None:
            selection.begin(selection_steps_of(state.max_steps, self.select_for))
            selection.hook(optimizer)
        if state.global_step > 0:  # a resumed Trainer: the selection continues from the same checkpoint
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_FILE
            if not path.is_file():
                raise CheckpointError(f"resuming at step {state.global_step}, but {path} is missing: the checkpoint "
                                      "was not written with SelectionCallback; resume from one that was, or start "
                                      "over")  # fmt: skip
            selection.load_state_dict(load_state(path))
        if self.tensorboard:
            folder = Path(args.output_dir) / "runs" / "sss" if self.tensorboard is True else Path(self.tensorboard)
            self._board = TensorBoardLog(folder)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._board is not None:
            self._board.scalars(self.selection.figures(), state.global_step, prefix="sss/")
            self._board.histograms(self.selection.factor_values(), state.global_step)

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if args.should_save and folder.is_dir():
            save_state(self.selection.state_dict(), folder / STATE_FILE)

    def on_train_end(self, args, state, control, **kwargs):
        selection = self.selection
        selection.land()  # a training shorter than the selection lands here
        selection.unhook()
        self.compact = selection.compact().eval()
        if self.save_dir is not False and args.should_save:
            where = Path(args.output_dir) / "compact" if self.save_dir in (None, True) else Path(self.save_dir)
            self.saved_as = save_compact(self.compact, where, selection.example)
            how = "save_pretrained" if self.saved_as == "pretrained" else "sss.save"
            selection.log(f"saved the compact model to {where} ({how})")
        if self._board is not None:
            self.on_log(args, state, control)
            self._board.close()
