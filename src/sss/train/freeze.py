"""Where the selection starts and ends: the gated model becomes its compact form mid-run
(``freeze_epoch``), and each transformer stream gets back the scale it had at the start."""

from __future__ import annotations

import copy

import torch
from torch import nn

from sss.data import iterate_batches
from sss.measure import evaluate
from sss.structures import gates
from sss.structures.history import record
from sss.structures.prune import prune
from sss.structures.stream_scale import keep_stream, scale_stream, stream_rms, streams


class FreezeMixin:
    """The part of :class:`~sss.train.Trainer` that starts and ends the selection: the zero
    structures are removed exactly at the freeze (between epochs, or inside one where
    ``freeze_epoch`` is a fraction), with ``after_freeze: rewind`` the compact
    model restarts from the run's initial weights (docs/design.md, "freezing the selection"),
    and each residual stream the selection shrank gets its scale back (``rescale_streams``)."""

    frozen_masks: dict[str, torch.Tensor] | None
    selected: nn.Module | None
    stream_reference: dict[str, float]  # each embedding stream's RMS where the selection started
    stream_scales: dict[str, float]  # the factor each stream was rescaled by where the selection ended

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
        resuming = restore = masks is not None
        if masks is None:
            masks = {r.name: (r.weight.detach().abs() > self.cfg.prune_threshold).float() for r in refs}
            if self.init_state is not None:
                self.model.load_state_dict(self.init_state)
                restore = True
        if restore:
            with torch.no_grad():
                for ref in refs:
                    ref.weight.copy_(masks[ref.name])
        if resuming:
            self._replay_stream_scales()
        self.model = prune(self.model, self.cfg.prune_threshold, round_to=self.cfg.round_to)
        self.weights_opt, self.factors_opt = self.build_optimizers()
        self.frozen_masks = masks
        self._wrap()

    def _end_selection(self, rescale: bool = True) -> None:
        """Where the selection ends (the freeze, or the end of a run without one): each callback's
        :meth:`~sss.train.callbacks.Callback.on_selection_end` (the budget lands here), then, with
        ``rescale``, each stream back at its starting scale (the same function)."""
        if not self.frozen:
            for callback in self.callbacks:
                callback.on_selection_end(self)
            if rescale:
                self._rescale_streams()

    def _start_late_selection(self) -> None:
        """At ``selection_start``: the factors start ranked (under a ranking ``factor_init``) and
        the streams' scale is measured here, where the selection starts."""
        if self.plan.ranks_factors:
            self.plan.start_factors(self.model, self.train_data, self.example, self.cfg.batch_size, self.cfg.seed)
            self.log(f"selection starts at epoch {self.epoch + 1}: factors by {self.plan.factor_init}")
        self._note_streams()

    def _freeze_due(self, steps_into_epoch: int) -> bool:
        """Whether the selection ends after ``steps_into_epoch`` steps of this epoch: where the
        plan's ``selection_steps`` (the steps the budget steers over) run out."""
        if self.cfg.freeze_epoch is None or self.frozen:
            return False
        steps = self.epoch * self.steps_per_epoch + steps_into_epoch
        return steps == self.cfg.selection_start * self.steps_per_epoch + self.plan.selection_steps

    def _freeze_and_log(self, steps_into_epoch: int = 0) -> None:
        # A target: the selection lands inside its band first. A rewind puts the starting weights
        # back, at their own scale: no rescale then.
        self._end_selection(rescale=self.init_state is None)
        self.selected = copy.deepcopy(self.model).to(memory_format=torch.contiguous_format)
        gated_acc = evaluate(self.selected, self.val_data, self.cfg.eval_batch_size)[0]
        compact = prune(self.selected, self.cfg.prune_threshold, round_to=self.cfg.round_to)
        compact_acc = evaluate(compact, self.val_data, self.cfg.eval_batch_size)[0]
        if self.history and not steps_into_epoch:  # the selection epoch's record: its accuracy after the landing
            self.history[-1]["val_acc_landed"] = gated_acc
        self._freeze()
        zeros = sum(int((m == 0).sum()) for m in self.frozen_masks.values())
        rewound = "; weights rewound to their initial values" if self.init_state is not None else ""
        where = f"step {steps_into_epoch} of epoch {self.epoch + 1}" if steps_into_epoch else f"epoch {self.epoch}"
        self.log(f"selection frozen after {where}: {zeros} zero factor(s) removed; validation accuracy "
                 f"{gated_acc:.2f}% gated, {compact_acc:.2f}% compact{rewound}")  # fmt: skip

    def _probe(self) -> torch.Tensor:
        """The first 64 validation images (the same on every call and on resume)."""
        images, _ = next(iterate_batches(self.val_data, min(64, len(self.val_data)), shuffle=False))
        return self.runtime.to_device(images)

    def _note_streams(self) -> None:
        """Measures each embedding stream's scale where the selection starts (at construction,
        seeded and so the same on resume, or at ``selection_start``, kept in the checkpoint):
        what :meth:`_rescale_streams` gives back."""
        self.stream_scales, training = {}, self.model.training
        found = streams(self.model) if self.cfg.rescale_streams else []
        probe = self._probe() if found else None
        self.model.eval()  # no dropout: the run's random numbers stay as they were
        self.stream_reference = {s.gate: stream_rms(self.model, s, probe) for s in found}
        self.model.train(training)

    @torch.no_grad()
    def _rescale_streams(self) -> None:
        """Each embedding stream smaller than where the selection started gets that scale back,
        the same function (:mod:`sss.structures.stream_scale`: the penalty shrinks the stream,
        and the fine-tune of a shrunken stream diverges). The output is checked on the probe
        images (rank 0's verdict on every rank); where it moved, the stream is restored as it was."""
        if not self.stream_reference:
            return
        probe, training = self._probe(), self.model.training
        self.model.eval()
        for stream in streams(self.model):
            now, reference = stream_rms(self.model, stream, probe), self.stream_reference.get(stream.gate, 0.0)
            if not (now > 0 and reference > now * 1.05):
                continue  # not smaller than it was (within 5%): left as it is
            before, restore = self.model(probe), keep_stream(self.model, stream)
            edit = scale_stream(self.model, stream, reference / now)
            moved = float((self.model(probe) - before).abs().max() / before.abs().max().clamp_min(1e-12))
            problem = self.runtime.agree(f"the output moved by {moved:.2g} (relative)" if moved > 1e-3 else None)
            if problem is None:
                record(self.model, [edit])
                self.stream_scales[stream.gate] = reference / now
                self.log(f"stream {stream.gate} rescaled ×{reference / now:.3g} to its scale where the selection "
                         f"started (RMS {now:.3g} → {reference:.3g}; output moved {moved:.1g})")  # fmt: skip
            else:  # e.g. a layer reads the stream without a norm: it is not scale-free
                restore()
                self.log(f"stream {stream.gate} not rescaled: {problem}")
        self.model.train(training)

    def _replay_stream_scales(self) -> None:
        """On resume after the freeze: the scales the run used (the norms' ε and the history; the
        weights come with the checkpoint)."""
        for stream in streams(self.model):
            if stream.gate in self.stream_scales:
                record(self.model, [scale_stream(self.model, stream, self.stream_scales[stream.gate])])
