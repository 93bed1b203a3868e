"""The budget as a training callback: :class:`~sss.budget.controller.BudgetController` steered
after every factor step and landed where the selection ends (docs/architecture.md, "Budgets")."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sss.budget.controller import BudgetController, dense_architecture
from sss.budget.magnitude import hold_largest_at_one
from sss.budget.targets import is_relative
from sss.measure import compare_latency
from sss.measure.latency import device_name
from sss.measure.latency_model import calibrate_latency
from sss.train.batchnorm import recalibrate_batchnorm
from sss.train.callbacks import Callback, TrainerState
from sss.train.config import TrainConfig
from sss.train.plan import SelectionPlan
from sss.train.runtime import Runtime


class BudgetCallback(Callback):
    """The budget as a training callback: steers γ after every factor step and lands the
    selection where it ends; a latency target is then checked against a timing of the compact
    model (a fraction of dense against the dense model, timed in the same interleaved pass and
    put on the calibration's clock, so that a drift of the machine cancels)."""

    name = "budget"

    def __init__(self, controller: BudgetController, *, relative_latency: bool = False) -> None:
        self.controller, self.relative_latency = controller, relative_latency

    def on_factor_step(self, trainer: TrainerState) -> None:
        if self.controller.steering.relative_factors:  # steered by distance
            hold_largest_at_one(trainer.model)
        self.controller.after_step(trainer.model, trainer.factors_opt)

    def on_epoch_end(self, trainer: TrainerState) -> None:
        if self.controller.steering.relative_factors and trainer.selecting:
            recalibrate_batchnorm(trainer.model, trainer.train_data, trainer.cfg.batch_size, trainer.runtime)

    def on_selection_end(self, trainer: TrainerState) -> None:
        budget = self.controller
        if budget.target.metric != "latency":
            lines = budget.land(trainer.model)[1]
        else:
            lines = budget.land_measured(trainer.model, self._timer(trainer, passes := []))
            lines += passes
        if budget.steering.relative_factors:  # the landing's zeros shift the statistics too
            recalibrate_batchnorm(trainer.model, trainer.train_data, trainer.cfg.batch_size, trainer.runtime)
        for line in lines:
            trainer.log(line)

    def _timer(self, trainer: TrainerState, passes: list[str]) -> Callable[[nn.Module], float]:
        batch, shape = trainer.cfg.latency_batch, tuple(trainer.example.shape[1:])
        dense = dense_architecture(trainer.model) if self.relative_latency else None

        def measure(compact: nn.Module) -> float:  # as saved: contiguous, eval mode
            models = {"m": compact.to(memory_format=torch.contiguous_format)}
            if dense is not None:
                models["dense"] = dense
            ms = {k: v[batch] for k, v in compare_latency(models, shape, (batch,), rounds=5,
                                                           device=trainer.runtime.device).items()}  # fmt: skip
            if dense is not None:
                passes.append(
                    f"budget: check {len(passes) + 1}: {ms['m']:.2f} ms, the dense model "
                    f"{ms['dense']:.2f} ms in the same pass: {ms['m'] / ms['dense']:.1%} of dense"
                )
            value = ms["m"] * (self.controller.ranking.dense / ms["dense"] if dense is not None else 1.0)
            return trainer.runtime.agree(value if trainer.runtime.main else None)

        return measure

    def state_dict(self) -> dict:
        return self.controller.state()

    def load_state_dict(self, state: dict) -> None:
        self.controller.load_state(state)


def create_budget(plan: SelectionPlan, cfg: TrainConfig, model: nn.Module, example: torch.Tensor,
                  optimizer: torch.optim.Optimizer | None, runtime: Runtime,
                  log: Callable[[str], None]) -> BudgetCallback | None:  # fmt: skip
    """The run's budget callback (``None`` without a target or factors). A latency target first
    fits a :class:`~sss.measure.latency_model.LatencyModel` on rank 0 (every rank uses its fit)."""
    if plan.target is None or optimizer is None:
        return None
    metric, value = plan.target
    latency = None
    if metric == "latency":
        fitted = calibrate_latency(model, example, batch=cfg.latency_batch, device=runtime.device, seed=cfg.seed)
        latency = runtime.agree(fitted if runtime.main else None)
        log(f"latency model at batch {latency.batch} on {device_name(runtime.device)}: "
            f"{latency.predict(model, example):.2f} ms predicted for the dense model, fit within "
            f"{latency.fit_error:.0%} of its timings")  # fmt: skip
    controller = BudgetController(
        model,
        example,
        metric,
        value,
        optimizer,
        round_to=cfg.round_to,
        latency=latency,
        selection_steps=plan.selection_steps if plan.steered_by_distance else None,
    )
    return BudgetCallback(controller, relative_latency=metric == "latency" and is_relative(value))
