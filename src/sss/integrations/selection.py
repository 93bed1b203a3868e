"""The selection as an object any training loop can drive: factors attached in place, their
proximal step taken right after the loop's own optimizer step, a budget steered and landed.

The loop keeps its optimizer, its loss, its batches, its mixed precision and its gradient
accumulation: :meth:`Selection.hook` registers a step pre-hook and post-hook on that optimizer.
Before the optimizer steps, the factors' gradients are taken out (so it never moves, decays or
keeps state for a factor, whatever its param groups hold); after it steps, they are put back and
the factors take their own proximal step (APG, docs/design.md "The optimizer"), which alone makes
the exact zeros. A step the loop skips (a GradScaler that found inf, an accumulation micro-batch)
is skipped for the factors too, because the hooks run inside ``optimizer.step`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer

from sss.budget.controller import BudgetController
from sss.budget.magnitude import hold_largest_at_one, init_from_magnitudes
from sss.budget.targets import chosen_target
from sss.measure import count
from sss.optim import APG
from sss.optim.param_groups import factor_param_groups
from sss.structures import attach, gates
from sss.structures.prune import prune


@dataclass(frozen=True)
class SelectionSettings:
    """What a :class:`Selection` selects and how (the CLI's names, so a config reads the same).

    Attributes:
        structures: The kinds that get factors (``channel``, ``head``, ``block``, ...).
        target_macs / target_params: A budget (a fraction of dense, ``0.5``, or a count,
            ``"18M"``); at most one. ``None`` everywhere: γ alone decides.
        target_latency: Read by sss's own loop only (a latency target times the model as it lands).
        gamma: The L1 strength without a budget (with one, the budget steers it).
        lr: The factors' learning rate (constant: the loop's own schedule belongs to its
            optimizer, which may be Adam at 5e-5 where a proximal step wants ~1e-2).
        from_trained: The model starts from trained weights: factors from the structures'
            magnitudes and a budget steered by distance (docs/design.md "From a trained model");
            ``False``: λ = 1 and the doubling steering, as from scratch.
        round_to: Pruned widths a multiple of this.
        ignore: Module paths that get no factor.
    """

    structures: tuple[str, ...] = ("channel",)
    target_macs: float | str | None = None
    target_params: float | str | None = None
    target_latency: float | str | None = None
    gamma: float = 1e-4
    lr: float = 0.01
    from_trained: bool = True
    round_to: int = 1
    ignore: tuple[str, ...] = ()


def _torch_optimizer(optimizer) -> Optimizer:
    """The innermost ``torch.optim.Optimizer`` of a framework's wrapper (accelerate's
    ``AcceleratedOptimizer``, itself an ``Optimizer`` subclass, and Lightning's
    ``LightningOptimizer`` keep it as ``.optimizer`` / ``._optimizer``): its ``step`` is what
    every wrapper's ``step`` reaches, so its hooks are the ones that run."""
    for _ in range(4):
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"Selection.hook needs a torch.optim.Optimizer (or a wrapper holding one as .optimizer), "
                        f"got {type(optimizer).__name__}")  # fmt: skip
    return optimizer


class Selection:
    """Sparse structure selection inside a training loop that is not sss's own.

    ::

        selection = Selection(model, example, SelectionSettings(target_macs=0.5), selection_steps=1000)
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)   # built after: sees the factors
        selection.hook(optimizer)
        for batch in loader:                       # the loop as it was
            loss = loss_fn(model(batch["x"]), batch["y"])
            loss.backward(); optimizer.step(); optimizer.zero_grad()
        compact = selection.compact()              # plain, smaller, the same function

    ``model`` is gated in place (its modules are replaced by gated ones), so whatever holds it
    (a LightningModule, a Hugging Face ``PreTrainedModel``) trains the gated model. The
    selection runs for ``selection_steps`` optimizer steps, then the budget lands (within ±2% of
    its target) and the factors freeze: zero factors stay zero, the loop goes on fine-tuning what
    is left, and :meth:`compact` removes the zero structures exactly.

    Args:
        model: The model, gated in place.
        example: An input batch the model's forward takes positionally (a tensor, or a tuple of them).
        settings: What to select and how.
        selection_steps: Optimizer steps of the selection (the budget's path spans them); ``None``:
            said later, to :meth:`begin`, before the first step.
        log: Where the landing's lines go.
    """

    def __init__(self, model: nn.Module, example, settings: SelectionSettings = SelectionSettings(), *,
                 selection_steps: int | None = None, log: Callable[[str], None] = print) -> None:  # fmt: skip
        self.settings, self.example, self.log = settings, example, log
        self.model = attach(model, example, structures=settings.structures, ignore=settings.ignore, inplace=True)
        if settings.from_trained:
            init_from_magnitudes(self.model)  # the same function; the factors rank the trained structures
        self.factors = [ref.weight for ref in gates(self.model)]
        self.optimizer: APG | None = None
        self.budget: BudgetController | None = None
        self.selection_steps, self.step_count, self.landed = 0, 0, False
        self._held: list[torch.Tensor | None] = []
        self._handles: list = []
        if selection_steps is not None:
            self.begin(selection_steps)

    def begin(self, selection_steps: int) -> None:
        """Builds the factors' optimizer and the budget for a selection of ``selection_steps``
        optimizer steps (the budget's path spans them); a framework callback calls it once the
        length of the training is known. Pricing the structures for a budget prunes the model
        once per gate: seconds on a small model."""
        if selection_steps < 1:
            raise ValueError(f"selection_steps must be >= 1, got {selection_steps}")
        settings, self.selection_steps = self.settings, selection_steps
        target = chosen_target(settings)
        if target is not None and target[0] == "latency":
            raise ValueError("a latency target needs sss's own loop, which times the model as it lands "
                             "(sss.compress on an ArrayDataset, sss train/compress); aim Selection at target_macs "
                             "or target_params")  # fmt: skip
        steered_by_distance = settings.from_trained and target is not None
        # Steered by distance, the factors get no momentum (it would carry them past the budget's path).
        self.optimizer = APG(factor_param_groups(self.model, settings.gamma), lr=settings.lr, gamma=0.0,
                             momentum=0.0 if steered_by_distance else 0.9)  # fmt: skip
        if target is not None:
            steps = selection_steps if steered_by_distance else None
            self.budget = BudgetController(self.model, self.example, target[0], target[1], self.optimizer,
                                           round_to=settings.round_to, selection_steps=steps)  # fmt: skip

    def _begun(self) -> APG:
        if self.optimizer is None:
            raise RuntimeError("the selection has not begun: call Selection.begin(selection_steps) first")
        return self.optimizer

    @property
    def selecting(self) -> bool:
        """Whether the factors still move (before the landing)."""
        return not self.landed

    def hook(self, optimizer) -> None:
        """Registers the selection on the loop's optimizer (a torch optimizer or a framework's
        wrapper of one); call it once per optimizer the loop steps."""
        self._begun()
        opt = _torch_optimizer(optimizer)
        self._handles += [opt.register_step_pre_hook(self._take_grads),
                          opt.register_step_post_hook(self._after_step)]  # fmt: skip

    def unhook(self) -> None:
        """Removes the hooks :meth:`hook` registered."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _take_grads(self, optimizer: Optimizer, args, kwargs):
        # torch passes the step's own arguments, the optimizer first: (optimizer, closure?)
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if closure is None:
            self._hold_grads()
            return None

        # A step with a closure (Lightning's) computes the gradients inside the step: the factors'
        # are taken out after the closure, before the optimizer reads them.
        def closure_then_hold():
            loss = closure()
            self._hold_grads()
            return loss

        if "closure" in kwargs:
            return args, {**kwargs, "closure": closure_then_hold}
        return (args[0], closure_then_hold, *args[2:]), kwargs

    def _hold_grads(self) -> None:
        self._held = [p.grad for p in self.factors]
        for p in self.factors:
            p.grad = None

    def _after_step(self, optimizer: Optimizer, args, kwargs) -> None:
        held, self._held = self._held, []
        if self.landed or not held:
            return
        for p, grad in zip(self.factors, held, strict=True):
            p.grad = grad
        self.step()
        for p in self.factors:
            p.grad = None

    def step(self) -> None:
        """One factor step on the factors' current gradients, then the budget's steering (what the
        hooks call; a loop without hooks calls it after its own optimizer step)."""
        self._begun().step()
        self.step_count += 1
        if self.budget is not None:
            if self.budget.steering.relative_factors:
                hold_largest_at_one(self.model)
            self.budget.after_step(self.model, self.optimizer)
        if self.step_count >= self.selection_steps:
            self.land()

    def land(self) -> list[str]:
        """Ends the selection: the budget lands inside its band and the factors freeze. Returns
        (and logs) the landing's lines; a second call does nothing."""
        if self.landed:
            return []
        self.landed = True
        lines = self.budget.land(self.model)[1] if self.budget is not None else []
        for p in self.factors:
            p.requires_grad_(False)  # frozen: zero stays zero while the loop fine-tunes the rest
        for line in lines:
            self.log(line)
        return lines

    def compact(self) -> nn.Module:
        """The plain model without the zero structures: the same function as the gated model (in fp32:
        a framework's mixed-precision wrapper on the model's forward is not copied into it)."""
        # accelerate (the HF Trainer's, Lightning's) sets an instance `forward` that runs the *original*
        # model's forward under autocast; copied into the compact model, it would call the gated one.
        wrapper = self.model.__dict__.pop("forward", None)
        try:
            return prune(self.model, round_to=self.settings.round_to)
        finally:
            if wrapper is not None:
                self.model.forward = wrapper

    def figures(self) -> dict[str, float]:
        """Numbers worth plotting now: zero factors per kind, γ of each kind's factors, and the MACs
        and parameters of the compact model the current zeros give."""
        out: dict[str, float] = {}
        for ref in gates(self.model):
            key = f"zero_factors/{ref.kind}"
            out[key] = out.get(key, 0) + ref.num_zero
        for group, ref_kind in zip(self._begun().param_groups, _group_kinds(self.model), strict=True):
            out[f"gamma/{ref_kind}"] = float(group["gamma"])
        macs, params = count(self.compact(), self.example)
        out["compact_macs"], out["compact_params"] = float(macs), float(params)
        return out

    def factor_values(self) -> dict[str, torch.Tensor]:
        """Every factor, by kind (for histograms)."""
        values: dict[str, list[torch.Tensor]] = {}
        for ref in gates(self.model):
            values.setdefault(ref.kind, []).append(ref.weight.detach().flatten().cpu())
        return {kind: torch.cat(parts) for kind, parts in values.items()}

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the selection beyond the model's own state (which holds the
        factors): the step, whether it landed, the factors' optimizer and the budget."""
        return {"step": self.step_count, "landed": self.landed, "optimizer": self._begun().state_dict(),
                "budget": self.budget.state() if self.budget is not None else None}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        """Restores :meth:`state_dict` (on a model gated the same way, its weights loaded)."""
        self.step_count, self.landed = int(state["step"]), bool(state["landed"])
        self._begun().load_state_dict(state["optimizer"])
        if self.budget is not None and state.get("budget") is not None:
            self.budget.load_state(state["budget"])
        for p in self.factors:
            p.requires_grad_(not self.landed)


def _group_kinds(model: nn.Module) -> list[str]:
    """The kind of each factor param group (:func:`factor_param_groups` makes one per kind, in
    the order the kinds first appear)."""
    return list(dict.fromkeys(ref.kind for ref in gates(model)))


def selection_steps_of(total_steps: int, select_for: float | int) -> int:
    """Steps of the selection: ``select_for`` steps (an int), or that fraction of ``total_steps``."""
    if isinstance(select_for, bool) or select_for <= 0:
        raise ValueError(f"select_for must be a positive fraction of the training or a number of steps, "
                         f"got {select_for}")  # fmt: skip
    if isinstance(select_for, float) and select_for <= 1:
        return max(1, int(total_steps * select_for))
    return int(select_for)


def kinds_of(structures: str | Sequence[str]) -> tuple[str, ...]:
    """``"channel,head"`` or ``["channel", "head"]`` as a tuple of kinds."""
    if isinstance(structures, str):
        return tuple(s.strip() for s in structures.split(",") if s.strip())
    return tuple(structures)
