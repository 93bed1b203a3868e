"""Top-1 accuracy and mean loss over a dataset."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sss.data.loader import ArrayDataset, iterate_batches


@torch.inference_mode()
def evaluate(model: nn.Module, data: ArrayDataset, batch_size: int = 500) -> tuple[float, float]:
    """Returns ``(accuracy in %, mean cross-entropy)`` of ``model`` on ``data`` in eval mode."""
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for x, y in iterate_batches(data, batch_size, shuffle=False):
        x, y = x.to(device), y.to(device)
        logits = model(x).float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    model.train(was_training)
    n = len(data)
    return 100.0 * correct / n, loss_sum / n
