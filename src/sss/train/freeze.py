"""Freezing the selection: the gated model becomes its compact form mid-run (``freeze_epoch``)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from sss.data import iterate_batches
from sss.measure import evaluate
from sss.structures import gates
from sss.structures.history import record
from sss.structures.prune import prune
from sss.structures.stream_scale import scale_stream, stream_rms, streams


class FreezeMixin:
    """The part of :class:`~sss.train.Trainer` that ends the selection early: the zero
    structures are removed exactly, and with ``after_freeze: rewind`` the compact model
    restarts from the run's initial weights (docs/design.md, "freezing the selection")."""

    frozen_masks: dict[str, torch.Tensor] | None
    selected: nn.Module | None
    stream_reference: dict[str, float]  # each embedding stream's RMS as the run started
    stream_scales: dict[str, float]  # the factor each stream was rescaled by at the freeze
    _resuming: bool  # this freeze rebuilds a checkpoint's

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
        self._resuming = masks is not None
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
        if self._resuming:
            self._replay_stream_scales()
        self.model = prune(self.model, self.cfg.prune_threshold, round_to=self.cfg.round_to)
        self.weights_opt, self.factors_opt = self.build_optimizers()
        self.frozen_masks = masks
        self._wrap()

    def _end_selection(self) -> None:
        """Where the selection ends (the freeze, or the end of a run without one): each callback's
        :meth:`~sss.train.callbacks.Callback.on_selection_end` (the budget lands here), then each
        stream back at its starting scale (the same function)."""
        if not self.frozen:
            for callback in self.callbacks:
                callback.on_selection_end(self)
            self._rescale_streams()

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

    def _probe(self) -> torch.Tensor:
        """The first 64 validation images (the same on every call and on resume)."""
        images, _ = next(iterate_batches(self.val_data, min(64, len(self.val_data)), shuffle=False))
        return self.runtime.to_device(images)

    def _note_streams(self) -> None:
        """Measures each embedding stream's scale as the run starts (seeded, hence the same on
        resume): what :meth:`_freeze` gives back."""
        self.stream_scales, training = {}, self.model.training
        found = streams(self.model) if self.cfg.rescale_streams else []
        self.model.eval()  # no dropout: the run's random numbers stay as they were
        self.stream_reference = {s.gate: stream_rms(self.model, s, self._probe()) for s in found}
        self.model.train(training)

    @torch.no_grad()
    def _rescale_streams(self) -> None:
        """Each embedding stream back at the scale it had as the run started, the same function
        (:mod:`sss.structures.stream_scale`: the selection shrinks the stream, and the fine-tune of
        a shrunken stream diverges); checked on the probe images, undone where it is not exact."""
        if not self.stream_reference:
            return
        probe, training = self._probe(), self.model.training
        self.model.eval()
        for stream in streams(self.model):
            now, reference = stream_rms(self.model, stream, probe), self.stream_reference.get(stream.gate, 0.0)
            if not (now > 0 and reference > 0) or abs(math.log(reference / now)) < 0.05:
                continue  # within 5% of its scale: left as it is
            before = self.model(probe)
            edit = scale_stream(self.model, stream, reference / now)
            after = self.model(probe)
            if torch.allclose(after, before, rtol=1e-4, atol=1e-5 * float(before.abs().max())):
                record(self.model, [edit])
                self.stream_scales[stream.gate] = reference / now
                self.log(f"stream {stream.gate} rescaled ×{reference / now:.3g} to its starting scale (RMS {now:.3g} "
                         f"→ {reference:.3g}; the same function)")  # fmt: skip
            else:  # a layer reads the stream without a norm: not scale-free
                scale_stream(self.model, stream, now / reference)
                self.log(f"stream {stream.gate} not rescaled: a layer reads it without a LayerNorm")
        self.model.train(training)

    def _replay_stream_scales(self) -> None:
        """On resume after the freeze: the scales the run used (the norms' ε and the history; the
        weights come with the checkpoint)."""
        for stream in streams(self.model):
            if stream.gate in self.stream_scales:
                record(self.model, [scale_stream(self.model, stream, self.stream_scales[stream.gate])])
