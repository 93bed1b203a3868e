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
from sss.surgery.prune import prune


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


def create_distillation(cfg, model: nn.Module, device: torch.device) -> Distillation | None:
    """The run's distillation (``None`` unless ``cfg.distill``): from ``cfg.distill_teacher``, or
    from ``model`` as the run starts (pruned with nothing removed: the same function, no gates)."""
    if cfg.distill is None:
        return None
    teacher = load(cfg.distill_teacher) if cfg.distill_teacher else prune(copy.deepcopy(model))
    return Distillation(teacher.to(device), cfg.distill, cfg.distill_weight)
