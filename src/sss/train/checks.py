"""Checks that keep a run from going on silently wrong: non-finite weights, a selection that
cut everything, and checkpoints that are not what they claim."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sss.errors import CheckpointError, SelectionCollapsedError, TrainingDivergedError
from sss.measure import format_count
from sss.measure.collapse import collapse_warnings, is_constant_output
from sss.train.budget import BudgetCallback
from sss.train.config import RESUMABLE_KEYS


def nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``model`` that hold NaN or inf."""
    return [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


#: A validation loss this many times the best so far marks an epoch whose weights are not kept.
SUSPECT_LOSS_RATIO = 100.0


def suspect_loss(val_loss: float, history: list[dict]) -> str | None:
    """Why an epoch whose validation loss is finite but orders of magnitude above the best so
    far must not replace the checkpoint (a run on its way to NaN), or ``None``."""
    best = min((r["val_loss"] for r in history), default=None)
    if best is None or val_loss <= SUSPECT_LOSS_RATIO * max(best, 0.1):
        return None
    return f"validation loss {val_loss:.3g} is over {SUSPECT_LOSS_RATIO:.0f}x the best so far ({best:.3g})"


def check_collapse(model: nn.Module, compact: nn.Module, probe: torch.Tensor, epoch: int, cfg: Any,
                   callbacks: Sequence[Any] = ()) -> list[str]:  # fmt: skip
    """Returns warnings about layers and stages the selection empties (:func:`collapse_warnings`);
    raises ``SelectionCollapsedError`` when the compact model no longer depends on its input
    (the same output for every image of ``probe``), unless ``cfg.allow_collapse``. With a budget
    among ``callbacks`` the advice is the budget's (γ is steered: a too small target, or lr)."""
    warnings = collapse_warnings(model)
    if cfg.allow_collapse or not is_constant_output(compact, probe):
        return warnings
    detail = f" ({'; '.join(warnings)})" if warnings else ""
    budget = next((c.controller for c in callbacks if isinstance(c, BudgetCallback)), None)
    advice = budget.collapse_advice(compact) if budget is not None else "Lower gamma or lr"
    raise SelectionCollapsedError(
        f"after epoch {epoch} the compact model gives the same output for every input: the selection cut every "
        f"path{detail}. The last checkpoint is kept. {advice}, or set allow_collapse=true to train on anyway."
    )


def resume_changes(saved: dict, current: dict, path: Path) -> list[str]:
    """Log lines for the config keys a resume changes; ``ValueError`` if one of them may not
    change (:data:`~sss.train.config.RESUMABLE_KEYS`), naming the values the checkpoint was
    written with: the checkpoint is good, the command is what changed."""
    changed = sorted(k for k in current if saved.get(k) != current[k])
    refused = [k for k in changed if k not in RESUMABLE_KEYS]
    if "model" in refused:
        model, others = saved.get("model"), [k for k in refused if k != "model"]
        written = f" (with {', '.join(f'{k}={saved.get(k)!r}' for k in others)})" if others else ""
        raise ValueError(f"cannot resume {path}: the checkpoint was written for model {model}{written}, not "
                         f"{current['model']}; resume with --model {model} (or --set model={model}"
                         f"{' and those values' if others else ''}), or start a new run with another "
                         "--out")  # fmt: skip
    if refused:
        written = ", ".join(f"{k}={saved.get(k)!r}" for k in refused)
        raise ValueError(f"cannot resume {path}: the config differs in {refused}, which change the model or its "
                         f"data; resume with the values it was written with ({written}), or start a new run with "
                         f"another --out (only {sorted(RESUMABLE_KEYS)} may change)")  # fmt: skip
    return [f"resume changes {k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed if k != "out_dir"]


#: Checkpoint keys and the types a real one has (a crafted file gets a clear error, not a crash).
_TYPES: dict[str, type | tuple[type, ...]] = {"epoch": int, "config": dict, "model": dict, "weights_opt": dict,
                                              "history": list, "factor_trace": list}  # fmt: skip


def check_checkpoint(state: Any, path: Path, epochs: int) -> None:
    """Raises ``CheckpointError`` naming ``path`` unless ``state`` looks like this trainer's checkpoint."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a training checkpoint; delete it")
    problems = [f"{key} is {type(state.get(key)).__name__}, expected {typ.__name__}"
                for key, typ in _TYPES.items()
                if not isinstance(state.get(key), typ) or isinstance(state.get(key), bool)]  # fmt: skip
    if not problems:
        if not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
            problems.append("the model state holds non-tensors")
        masks = state.get("frozen_masks")
        if masks is not None and not (isinstance(masks, dict) and all(isinstance(v, torch.Tensor)
                                                                      for v in masks.values())):  # fmt: skip
            problems.append("frozen_masks is not a mapping of tensors")
        for key in ("stream_scales", "stream_reference"):
            value = state.get(key)
            if value is not None and not (isinstance(value, dict) and all(
                    isinstance(k, str) and isinstance(v, float | int) for k, v in value.items())):  # fmt: skip
                problems.append(f"{key} is not a mapping of names to numbers")
        if state["epoch"] < 0 or len(state["history"]) != state["epoch"]:
            problems.append(f"epoch {state['epoch']} does not match its {len(state['history'])} history records")
    if problems:
        raise CheckpointError(f"{path} is not a valid training checkpoint ({'; '.join(problems)}); delete it, or "
                              "resume from a copy of an earlier one")  # fmt: skip
    if state["epoch"] > epochs:
        raise CheckpointError(f"{path} is at epoch {state['epoch']}, beyond epochs={epochs}: resume with "
                              f"--epochs {state['epoch']} or more")  # fmt: skip


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Loads ``state`` (buffers such as momentum) but keeps the hyperparameters the optimizer was
    built with, so a resume that changes lr, momentum, weight decay or γ trains with the new ones."""
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, values in zip(optimizer.param_groups, fresh, strict=True):
        group.update(values)


def diverged(checkpoint: Path, saved_epoch: int, what: str) -> TrainingDivergedError:
    """The error that stops a diverged run, with the rerun command that works from here."""
    if checkpoint.exists():
        kept = f"The last good checkpoint ({checkpoint}, epoch {saved_epoch}) is kept"
        then = "rerun the same command with --resume --set lr=... (a lower lr or gamma; a resume may change them)"
    else:
        kept = "No checkpoint was written (no epoch ended well)"
        then = "rerun the same command with --set lr=... (a lower lr or gamma)"
    return TrainingDivergedError(f"{what}. {kept}. Check the input data for NaN/inf, then {then}.")


def epoch_line(record: dict, total_epochs: int, extras: dict[str, float]) -> str:
    """The log line of one epoch's record."""
    r, macs = record, record["compact_macs"]
    factors = f"  zero factors {r['zero_factors']}/{r['factors']}" if r["factors"] else ""
    factors += "".join(f"  {k} {v:.3f}" for k, v in extras.items())
    return (f"epoch {r['epoch']}/{total_epochs}  lr {r['lr']:.4f}  loss {r['train_loss']:.4f}  train "
            f"{r['train_acc']:.2f}%  val {r['val_acc']:.2f}%{factors}  compact MACs {format_count(macs)} "
            f"({100 * (1 - macs / r['dense_macs']):.1f}% fewer)  {r['seconds']:.0f}s")  # fmt: skip
