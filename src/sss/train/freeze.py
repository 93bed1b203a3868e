"""Freezing the selection: the gated model becomes its compact form mid-run (``freeze_epoch``)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from sss.measure import evaluate
from sss.structures import gates
from sss.structures.prune import prune


class FreezeMixin:
    """The part of :class:`~sss.train.Trainer` that ends the selection early: the zero
    structures are removed exactly, and with ``after_freeze: rewind`` the compact model
    restarts from the run's initial weights (docs/design.md, "freezing the selection")."""

    frozen_masks: dict[str, torch.Tensor] | None
    selected: nn.Module | None

    @property
    def frozen(self) -> bool:
        return self.frozen_masks is not None

    def _freeze(self, masks: dict[str, torch.Tensor] | None = None) -> None:
        """Ends the selection: the model becomes its compact form, trained from here on by SGD.

        ``masks`` (gate name → 1 kept / 0 removed, as stored in a checkpoint) rebuild a frozen
        structure on resume; without them the current zero factors decide, and with
        ``after_freeze: rewind`` the weights return to their initial values first.
        """
        refs = gates(self.model)
        restore = masks is not None
        if masks is None:
            masks = {r.name: (r.weight.detach().abs() > self.cfg.prune_threshold).float() for r in refs}
            if self.init_state is not None:
                self.model.load_state_dict(self.init_state)
                restore = True
        if restore:
            with torch.no_grad():
                for ref in refs:
                    ref.weight.copy_(masks[ref.name])
        self.model = prune(self.model, self.cfg.prune_threshold, round_to=self.cfg.round_to)
        self.weights_opt, self.factors_opt = self.build_optimizers()
        self.frozen_masks = masks
        self._wrap()

    def _freeze_and_log(self) -> None:
        self._end_selection()  # a target: the selection lands inside its band first
        self.selected = copy.deepcopy(self.model).to(memory_format=torch.contiguous_format)
        gated_acc = evaluate(self.selected, self.val_data, self.cfg.eval_batch_size)[0]
        compact = prune(self.selected, self.cfg.prune_threshold, round_to=self.cfg.round_to)
        compact_acc = evaluate(compact, self.val_data, self.cfg.eval_batch_size)[0]
        if self.history:  # the selection epoch's record: its accuracy before and after the landing
            self.history[-1]["val_acc_landed"] = gated_acc
        self._freeze()
        zeros = sum(int((m == 0).sum()) for m in self.frozen_masks.values())
        rewound = "; weights rewound to their initial values" if self.init_state is not None else ""
        self.log(f"selection frozen after epoch {self.epoch}: {zeros} zero factor(s) removed; validation accuracy "
                 f"{gated_acc:.2f}% gated, {compact_acc:.2f}% compact{rewound}")  # fmt: skip
