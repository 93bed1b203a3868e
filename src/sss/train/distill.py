"""Knowledge distillation from the model a run starts from (Hinton et al., 2015).

In the trained-model workflow a good teacher is at hand: the model itself, before any of it
was removed. Its softened predictions carry what the labels do not (which wrong classes are
close), and they keep the selection and the fine-tune near the function that was trained.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from sss.serialization.model_io import load
from sss.structures.prune import prune


class Distillation:
    """``(1 - weight)·CE(student, y) + weight·T²·KL(teacher_T ‖ student_T)``, the teacher frozen
    in eval mode (``T²`` keeps the soft term's gradients on the scale of the hard one's)."""

    def __init__(self, teacher: nn.Module, temperature: float, weight: float) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.weight = temperature, weight

    def loss(self, x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher(x).float()
        t = self.temperature
        soft = F.kl_div(F.log_softmax(logits.float() / t, 1), F.log_softmax(target / t, 1), log_target=True,
                        reduction="batchmean") * t * t  # fmt: skip
        return (1 - self.weight) * F.cross_entropy(logits, y) + self.weight * soft


def create_distillation(cfg, model: nn.Module, device: torch.device,
                        example: torch.Tensor | None = None) -> Distillation | None:  # fmt: skip
    """The run's distillation (``None`` unless ``cfg.distill``): from ``cfg.distill_teacher``, or
    from ``model`` as the run starts (pruned with nothing removed: the same function, no gates).
    With ``example`` (one input of the run's shape) the teacher runs on it once, here, so that
    a teacher that does not fit the student is a ``ValueError`` before training, not a traceback
    at the first batch (:func:`check_teacher`)."""
    if cfg.distill is None:
        return None
    if cfg.distill_teacher:
        teacher = load(cfg.distill_teacher, trust_code=cfg.trusted_code)
    else:
        teacher = prune(copy.deepcopy(model))
    teacher = teacher.to(device)
    if example is not None:
        x = example.to(device)
        source = f"distill_teacher {cfg.distill_teacher}" if cfg.distill_teacher else "the starting model"
        check_teacher(teacher, x, tuple(_eval_forward(model, x).shape), source)
    return Distillation(teacher, cfg.distill, cfg.distill_weight)


@torch.no_grad()
def _eval_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` in eval mode (a batch of one has no batch statistics), its mode restored."""
    was_training = model.training
    try:
        return model.eval()(x)
    finally:
        model.train(was_training)


def check_teacher(teacher: nn.Module, example: torch.Tensor, expected: tuple[int, ...], source: str,
                  needs: str | None = None) -> None:  # fmt: skip
    """Runs ``teacher`` once on ``example``; ``ValueError`` naming both shapes if it refuses that
    input or its output shape is not ``expected`` (``needs`` says whose it is: by default the
    student's).

    Only the forward's ``RuntimeError`` is rephrased (what torch raises for a convolution or a
    matrix of the wrong size), with torch's own first line in the message; an out-of-memory
    error stays itself.
    """
    shape = "x".join(map(str, example.shape[1:]))
    try:
        out = _eval_forward(teacher, example)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"the teacher ({source}) does not fit this run: it refuses the run's input of shape {shape} "
                         f"({first}); use a teacher trained on these images") from e  # fmt: skip
    if tuple(out.shape) != tuple(expected):
        needs = needs or f"the student {list(expected)}"
        raise ValueError(f"the teacher ({source}) does not fit this run: for an input of shape {shape} it gives "
                         f"outputs of shape {list(out.shape)}, {needs}; use a teacher trained for the same "
                         "classes")  # fmt: skip
