"""What a training checkpoint holds, and resuming from one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sss.errors import CheckpointError
from sss.serialization import load_state
from sss.train.checks import check_checkpoint, load_optimizer_state, resume_changes


class ResumeMixin:
    """The part of :class:`~sss.train.Trainer` that writes and reads its checkpoint state."""

    def state(self) -> dict:
        return {
            "epoch": self.epoch,
            "config": dataclasses.asdict(self.cfg),
            "model": self.model.state_dict(),
            "weights_opt": self.weights_opt.state_dict(),
            "factors_opt": self.factors_opt.state_dict() if self.factors_opt else None,
            "frozen_masks": self.frozen_masks,
            "stream_scales": self.stream_scales,
            "stream_reference": self.stream_reference,
            "history": self.history,
            "factor_trace": self.factor_trace,
            "extra": self.extra_state(),
            "callbacks": {c.name: c.state_dict() for c in self.callbacks},
        }

    def extra_state(self) -> dict:
        """Hook: what a subclass's checkpoint holds beyond the model and optimizers (tensors,
        numbers, strings, dicts, lists; see :func:`sss.serialization.save_state`)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Hook: restores what :meth:`extra_state` saved."""

    def load(self, path: Path) -> None:
        """Restores the run from checkpoint ``path``. The config may differ only in
        :data:`~sss.train.config.RESUMABLE_KEYS` (lr, schedule, γ, epochs, ...): those changes
        are logged and take effect from here."""
        state = load_state(path)
        check_checkpoint(state, path, self.cfg.total_epochs)
        for line in resume_changes(state["config"], dataclasses.asdict(self.cfg), path):
            self.log(line)
        self.stream_scales = dict(state.get("stream_scales") or {})  # the freeze replays them
        if state.get("stream_reference") is not None:  # measured where the selection started
            self.stream_reference = dict(state["stream_reference"])
        try:
            if state.get("frozen_masks") is not None:
                self._freeze(state["frozen_masks"])
            self.model.load_state_dict(state["model"])
            load_optimizer_state(self.weights_opt, state["weights_opt"])
            if self.factors_opt is not None:
                load_optimizer_state(self.factors_opt, state["factors_opt"])
            self.load_extra_state(state.get("extra", {}))
            saved = dict(state.get("callbacks") or {})
            if state.get("budget") is not None:  # checkpoints written before callbacks
                saved.setdefault("budget", state["budget"])
            for callback in self.callbacks:
                if callback.name in saved:
                    callback.load_state_dict(saved[callback.name])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path} does not fit the model this run built ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:200]}): the model's code or keywords changed since the "
                                  "checkpoint was written; resume with the model it was written with (the same "
                                  "--model and model_kwargs), or start a new run with another --out"
                                  ) from e  # fmt: skip
        self.epoch, self.history, self.factor_trace = state["epoch"], state["history"], state["factor_trace"]
