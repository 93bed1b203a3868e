"""The training loop: one pass that trains weights and factors, with atomic checkpoints."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sss.data import ArrayDataset, iterate_batches, load_dataset, split_validation
from sss.errors import RunFolderError
from sss.measure import count, evaluate, mac_weights
from sss.models import create
from sss.optim import build_optimizers
from sss.serialization import save, save_state
from sss.serialization.weights import load_weights
from sss.structures import attach, gates
from sss.structures.prune import prune, zero_small_factors
from sss.train.board import write_epoch
from sss.train.budget import create_budget
from sss.train.callbacks import Callback
from sss.train.checks import check_collapse, diverged, epoch_line, nonfinite_tensors, suspect_loss
from sss.train.config import TrainConfig
from sss.train.distill import create_distillation
from sss.train.freeze import FreezeMixin
from sss.train.plan import resolve_plan
from sss.train.results import BatchResult, EpochRecord, TrainResult
from sss.train.resume import ResumeMixin
from sss.train.run_folder import CHECKPOINT, RunFolder
from sss.train.runtime import create_runtime
from sss.viz.tensorboard import TensorBoardLog

#: Factor snapshots per epoch kept for the plot of λ over training.
SNAPSHOTS_PER_EPOCH = 10


def _silent(message: str) -> None:
    """The log of ranks other than 0."""


class Trainer(FreezeMixin, ResumeMixin):
    """Trains a zoo model with SSS (or densely) from a :class:`TrainConfig`.

    Every epoch it logs one line, appends a JSON record to ``metrics.jsonl`` and writes
    ``checkpoint.safetensors`` atomically. ``fit(resume=True)`` continues from that
    checkpoint at the same epoch with the same optimizer state (APG momentum included);
    data order and augmentation depend only on (seed, epoch), so a resumed run matches an
    uninterrupted one.

    Other training methods (GAL, a budget controller, another criterion) subclass it and
    override only these hooks; the loop, logging, NaN guard, factor snapshots, freeze,
    checkpoints and resume stay here:

    - :meth:`build_model` and :meth:`build_optimizers`: what is trained, and by what.
    - :meth:`on_epoch_start`: after the learning rate is set for the epoch.
    - :meth:`batch_loss`: the loss of one batch (it may take steps of its own, e.g. GAL's
      discriminator), and :meth:`optimizer_step`: the step on that loss.
    - :meth:`extra_state` / :meth:`load_extra_state`: what the checkpoint holds beyond the
      model and its two optimizers.
    - :meth:`on_finish`: after the final models are saved.
    """

    #: Label of the progress bar.
    progress_label = "epoch"

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        train_data: ArrayDataset | None = None,
        model: nn.Module | None = None,
        log: Callable[[str], None] = print,
        progress: bool = True,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        """Args:
        cfg: The run's configuration.
        train_data: Training images (default: ``cfg.dataset`` loaded from disk).
        model: A model to train instead of building ``cfg.model`` (e.g. a compact model to
            fine-tune); it must be the same on resume.
        log: Where the per-epoch lines go.
        progress: Show progress bars (on a terminal).
        callbacks: Hooks of the loop (:class:`~sss.train.callbacks.Callback`), after the
            budget's own, if the config sets a target.
        """
        cfg.validate()
        self.runtime = create_runtime(cfg.device, cfg.amp)
        if cfg.batch_size % self.runtime.world:
            raise ValueError(f"batch_size {cfg.batch_size} (the global batch) must split evenly over "
                             f"{self.runtime.world} processes")  # fmt: skip
        main = self.runtime.main
        self.cfg, self.log, self.progress = cfg, log if main else _silent, progress and main
        self.out = Path(cfg.out_dir)
        if train_data is None:
            train_data = load_dataset(cfg.dataset, True, cfg.data_dir, **cfg.dataset_options())
        full = train_data
        if cfg.train_subset:
            full = full.subset(torch.randperm(len(full), generator=torch.Generator().manual_seed(cfg.seed))
                               [: cfg.train_subset].sort().values.numpy())  # fmt: skip
        self.train_data, self.val_data = split_validation(full, cfg.val_size, seed=cfg.seed)
        self.plan = resolve_plan(cfg, len(self.train_data))
        torch.manual_seed(cfg.seed)
        self.example = torch.zeros(1, *full.shape)
        if model is None:
            model = self.build_model(full)
        model = model.to(self.runtime.device)
        self.channels_last = self.runtime.channels_last(cfg.channels_last)
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
        # Seeded, hence the same on resume: what `after_freeze: rewind` resets the weights to.
        self.init_state = copy.deepcopy(self.model.state_dict()) if cfg.after_freeze in ("rewind", "retrain") else None
        self._note_streams()  # the streams' scale where the selection starts: its end gives it back
        self.distillation = create_distillation(cfg, self.model, self.runtime.device, self.example)
        self.weights_opt, self.factors_opt = self.build_optimizers()
        self.scaler = self.runtime.grad_scaler()
        self.callbacks: list[Callback] = list(callbacks)  # the budget's goes first, at setup()
        self.is_set_up = False
        self.num_factors = sum(ref.weight.numel() for ref in gates(self.model))
        self.frozen_masks: dict[str, torch.Tensor] | None = None
        self.selected: nn.Module | None = None
        self.epoch_extras: dict[str, float] = {}  # epoch means of BatchResult.figures, for the log
        self.epoch = 0
        self.history: list[EpochRecord] = []
        self.factor_trace: list[dict] = []
        self.board = TensorBoardLog(self.out / "tensorboard") if cfg.tensorboard and main else None

    def setup(self) -> None:
        """The heavy part of getting ready, run once at the start of :meth:`fit` (as Lightning's
        ``setup``): the budget (a latency target times the model; MAC and parameter targets
        prune it once per gate to price the structures), the training forward (DDP, compiled)
        and the dense model's MACs. Call it first to inspect ``callbacks`` before fitting."""
        if self.is_set_up:
            return
        cfg = self.cfg
        budget = create_budget(self.plan, cfg, self.model, self.example, self.factors_opt, self.runtime, self.log)
        self.callbacks = [*([budget] if budget else []), *self.callbacks]
        if len({c.name for c in self.callbacks}) < len(self.callbacks):
            raise ValueError(f"callback names must be unique, got {[c.name for c in self.callbacks]}")
        self._wrap()
        self.dense_macs = count(self.model, self.example)[0]
        self.is_set_up = True

    def _wrap(self) -> None:
        """``self.net``: the model as the training forward runs it (DDP, compiled)."""
        self.net = self.runtime.wrap(self.model)
        if self.cfg.compile:
            self.net = torch.compile(self.net)

    def create_model(self, data: ArrayDataset) -> nn.Module:
        """Hook: the network before its factors (default: ``cfg.model`` from the zoo, with the
        ``init`` weights)."""
        cfg = self.cfg
        model = create(cfg.model, num_classes=data.num_classes, in_channels=data.shape[0], **cfg.model_kwargs)
        if cfg.init:
            load_weights(model, cfg.init, cfg.init_prefix)
            self.log(f"initialised {cfg.model} from {cfg.init}")
        return model

    def build_model(self, data: ArrayDataset) -> nn.Module:
        """Hook: the model to train: :meth:`create_model`'s, with factors attached."""
        cfg = self.cfg
        model = self.create_model(data)
        if cfg.sparsity != "none":
            model = attach(model, self.example, structures=cfg.structures, inplace=True)
            if self.plan.ranks_factors and not cfg.selection_start:  # the same function; the factors rank the
                self.plan.start_factors(model, data, self.example, cfg.batch_size, cfg.seed)  # trained structures
        return model

    @property
    def selecting(self) -> bool:
        """Whether the factors train now: after ``selection_start``, before the freeze."""
        return not self.frozen and self.epoch >= self.cfg.selection_start

    def build_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
        """Hook: the weights' optimizer and the factors' (``None`` without factors); rebuilt at a freeze."""
        cfg = self.cfg
        method = cfg.sparsity if cfg.sparsity != "none" else "apg"
        return build_optimizers(self.model, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                method=method, gamma=cfg.gamma, gamma_weights=self.gamma_weights(),
                                steered_by_distance=self.plan.steered_by_distance)  # fmt: skip

    def gamma_weights(self) -> dict[str, float] | None:
        """Per-gate γ multipliers by MACs (``gamma_macs_power``, ``gamma_price``; :func:`sss.measure.mac_weights`)."""
        power = self.cfg.gamma_macs_power or float(self.cfg.gamma_price == "macs")
        per_kind = self.cfg.gamma_price == "kind"
        return mac_weights(self.model, self.example, power, per_kind=per_kind) if power and gates(self.model) else None

    def _set_lr(self) -> float:
        lr = self.cfg.lr * self.cfg.lr_factor(self.epoch)
        for opt in (self.weights_opt, self.factors_opt):
            for group in opt.param_groups if opt else []:
                group["lr"] = lr
        return lr

    def on_epoch_start(self) -> None:
        """Hook: runs at the start of each epoch, after the learning rate is set."""

    def _snapshot(self, step: int) -> None:
        values = [v for ref in gates(self.model) for v in ref.weight.detach().flatten().tolist()]
        if values:
            self.factor_trace.append({"epoch": self.epoch + (step + 1) / self.steps_per_epoch, "values": values})

    def _batches(self) -> tqdm:
        """This epoch's shuffled, augmented batches (order fixed by seed and epoch), with a bar."""
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + self.epoch)
        rt, fmt = self.runtime, torch.channels_last if self.channels_last else torch.contiguous_format
        # Every rank trains on its share of the same global batch: the data, order and
        # augmentation of a one-process run with the same global batch.
        batches = iterate_batches(
            self.train_data,
            cfg.batch_size,
            shuffle=True,
            augment_pad=cfg.augment_pad,
            generator=gen,
            drop_last=True,
            shard=(rt.rank, rt.world),
            workers=cfg.workers,
        )
        batches = ((rt.to_device(x).contiguous(memory_format=fmt), rt.to_device(y)) for x, y in batches)
        desc = f"{self.progress_label} {self.epoch + 1}/{cfg.total_epochs}"
        return tqdm(batches, total=self.steps_per_epoch, desc=desc, leave=False,
                    disable=None if self.progress else True)  # fmt: skip

    def batch_loss(self, x: torch.Tensor, y: torch.Tensor) -> BatchResult:
        """Hook: the loss of one training batch (default: cross-entropy on the labels). It runs
        under the run's autocast; ``self.net`` is the model as trained (DDP-wrapped, compiled)."""
        logits = self.net(x)
        loss = self.distillation.loss(x, logits, y) if self.distillation else F.cross_entropy(logits, y)
        return BatchResult(loss, logits, y)

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Hook: one step of the weights' and the factors' optimizers on ``loss``."""
        self.weights_opt.zero_grad(set_to_none=True)
        factors = self.factors_opt if self.selecting else None  # a dense warm-up leaves the factors at 1
        if factors:
            factors.zero_grad(set_to_none=True)
        optimizers = [o for o in (self.weights_opt, factors) if o is not None]
        if self.scaler is None:
            loss.backward()
            for opt in optimizers:
                opt.step()
            return
        self.scaler.scale(loss).backward()  # fp16: scaled; a step with inf/NaN gradients is skipped
        for opt in optimizers:
            self.scaler.step(opt)
        self.scaler.update()

    def _train_epoch(self) -> tuple[float, float]:
        self.model.train()
        loss_sum, correct, seen, figures = 0.0, 0, 0, {}
        every = max(1, self.steps_per_epoch // SNAPSHOTS_PER_EPOCH)
        bar = self._batches()
        for step, (x, y) in enumerate(bar):
            with self.runtime.autocast():
                out = self.batch_loss(x, y)
            values = {"loss": out.loss.item(), **out.figures}
            bad = {k: v for k, v in values.items() if not math.isfinite(v)}
            if bad:
                what = ", ".join(f"{k} became {v}" for k, v in bad.items())
                what += f" at epoch {self.epoch + 1}, step {step + 1}"
                raise diverged(self.out / CHECKPOINT, self.saved_epoch, what)
            self.optimizer_step(out.loss)
            if self.factors_opt is not None and self.selecting:
                for callback in self.callbacks:
                    callback.on_factor_step(self)
            if step + 1 < self.steps_per_epoch and self._freeze_due(step + 1):  # a fractional freeze_epoch
                self._freeze_and_log(step + 1)
                self._set_lr()  # the compact model's new optimizers, at this epoch's rate
                self.model.train()
            n = len(x)  # this rank's share: the epoch figures are rank 0's
            loss_sum += values.pop("loss") * n
            for k, v in values.items():
                figures[k] = figures.get(k, 0.0) + v * n
            correct += int((out.logits.argmax(1) == out.targets).sum())
            seen += n
            if step % every == 0 or step == self.steps_per_epoch - 1:  # the last: the factors the epoch ends with
                self._snapshot(step)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}")
        self.epoch_extras = {k: v / seen for k, v in figures.items()}
        return loss_sum / seen, 100.0 * correct / seen

    def fit(self, resume: bool = False, overwrite: bool = False) -> TrainResult:
        """Trains until ``cfg.total_epochs``; with ``resume`` starts from the run's checkpoint.

        The output folder is locked for the run. A folder that holds another run is refused
        unless ``resume`` (continue it) or ``overwrite`` (replace it) is given.
        """
        self.setup()
        folder, problem = RunFolder(self.out), None
        if self.runtime.main:  # one process owns the folder; the others wait for its verdict
            try:
                for note in folder.open(resume=resume, overwrite=overwrite):
                    self.log(note)
                if resume and not folder.checkpoint.exists():
                    problem = f"nothing to resume in {self.out}: it has no {CHECKPOINT}; start the run without --resume"
            except RunFolderError as e:
                problem = str(e)
        problem = self.runtime.agree(problem)
        try:
            if problem:
                raise RunFolderError(problem)
            if resume:
                self.load(folder.checkpoint)
                self.log(f"resumed {folder.checkpoint} after epoch {self.epoch}")
            self.saved_epoch = self.epoch  # the epoch the checkpoint on disk holds
            if self.runtime.main:  # drop metric lines of epochs the checkpoint lacks (a crash in between)
                folder.write_metrics(folder.read_metrics(up_to_epoch=self.epoch))
            return self._loop(folder)
        finally:
            folder.close()

    def _loop(self, folder: RunFolder) -> TrainResult:
        cfg = self.cfg
        self.steps_per_epoch = len(self.train_data) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size {cfg.batch_size} exceeds the {len(self.train_data)} training images")
        probe = self._probe()  # 64 validation images: does the compact model still see them?
        if not self.factor_trace:
            self._snapshot(step=-1)  # the initial factors, before the first update
        while self.epoch < cfg.total_epochs:
            if self._freeze_due(0):
                self._freeze_and_log()
            if self.epoch == cfg.selection_start > 0 and self.factors_opt is not None:
                self._start_late_selection()
            start = time.perf_counter()
            lr = self._set_lr()
            self.on_epoch_start()
            train_loss, train_acc = self._train_epoch()
            self.runtime.sync_buffers(self.model)
            for callback in self.callbacks:
                callback.on_epoch_end(self)
            val_acc, val_loss = evaluate(self.model, self.val_data, cfg.eval_batch_size)
            broken = nonfinite_tensors(self.model)
            if broken or not math.isfinite(val_loss):
                what = f"weights {broken[:3]} hold NaN/inf" if broken else f"validation loss became {val_loss}"
                raise diverged(self.out / CHECKPOINT, self.saved_epoch, f"after epoch {self.epoch + 1} the {what}")
            compact = prune(self.model, self.cfg.prune_threshold, round_to=self.cfg.round_to)
            for warning in check_collapse(self.model, compact, probe, self.epoch + 1, self.cfg, self.callbacks):
                self.log(f"warning: {warning}")
            self.epoch += 1
            record = self._record(lr, train_loss, train_acc, val_loss, val_acc, time.perf_counter() - start, compact)
            suspect = suspect_loss(val_loss, self.history)
            self.history.append(record)
            if suspect:
                self.log(f"warning: {suspect}; the checkpoint of epoch {self.saved_epoch} is kept, not replaced")
            if self.runtime.main:
                folder.append_metrics(record)
                if self.board is not None:
                    write_epoch(self.board, record, self.model, self.factors_opt)
                if not suspect:
                    save_state(self.state(), folder.checkpoint)
            if not suspect:
                self.saved_epoch = self.epoch
        return self._finish()

    def _record(self, lr, train_loss, train_acc, val_loss, val_acc, seconds, compact: nn.Module) -> EpochRecord:
        refs = gates(self.model)
        if self.frozen_masks is not None:
            zeros = sum(int((m == 0).sum()) for m in self.frozen_masks.values())
        else:
            zeros = sum(r.num_zero for r in refs)
        total = self.num_factors
        macs = count(compact, self.example)[0]
        record: EpochRecord = {
            "epoch": self.epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss, "val_acc": val_acc, "zero_factors": zeros, "factors": total,
            "compact_macs": macs, "dense_macs": self.dense_macs, "seconds": seconds, **self.epoch_extras,
        }  # fmt: skip
        self.log(epoch_line(record, self.cfg.total_epochs, self.epoch_extras))
        return record

    def _finish(self) -> TrainResult:
        self._end_selection()  # a run without a freeze ends its selection here
        model = self.model.to(memory_format=torch.contiguous_format).eval()  # returned ready for inference
        if self.cfg.sparsity == "sgd":
            n = zero_small_factors(model, self.cfg.prune_threshold)
            self.log(f"zeroed {n} factor(s) with |λ| <= {self.cfg.prune_threshold} (L1-SGD pruning threshold)")
        compact = prune(model, round_to=self.cfg.round_to)
        if self.board is not None:
            self.board.close()
        result = TrainResult(model, compact, self.selected, self.history, self.factor_trace)
        if self.runtime.main:
            save(model, self.out / "model")
            save(compact, self.out / "compact")
            self.on_finish(result)
        return result

    def on_finish(self, result: TrainResult) -> None:
        """Hook: runs after the final models are saved (figures, reports)."""
