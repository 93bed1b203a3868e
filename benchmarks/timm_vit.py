"""The ViT benchmark's real timm model (bench_vit_timm.py): timm's ``vit_tiny_patch16_224``
(192 wide, 12 blocks, 3 heads, MLP ratio 4, timm's own ``Attention`` and ``Mlp``) sized for
Fashion-MNIST, and the dense training it starts from.

7×7 patches on 28×28 images give 16 tokens and the class token: on this machine's 2 cores a
training epoch of 60k images takes about 5 minutes, where 4×4 patches (49 tokens) take 15.
The dense model is trained with AdamW, the optimizer timm's ViT recipes (and its
``trunc_normal(0.02)`` init) are made for: plain SGD trains a ViT far slower (sss's own
``vit_fmnist`` needed its init changed to train with SGD, and reached 78% in 8 epochs).
Every method then fine-tunes it with the same SGD schedule (peer_methods.py), so the optimizer
of the dense phase is shared by all of them.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import sss
from sss.data import ArrayDataset
from sss.data.loader import iterate_batches

#: The import path the runs' configs name (``sss.models.create`` builds it; ``sss.load`` rebuilds it).
MODEL = "timm_vit:vit_tiny_28"


def vit_tiny_28(*, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """timm's ViT-Tiny (``vit_tiny_patch16_224``'s widths and depth) on 28×28 images, 7×7 patches."""
    import timm  # an optional extra of sss: only this benchmark needs it

    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=28, patch_size=7,
                             in_chans=in_channels, num_classes=num_classes)  # fmt: skip


def train_adamw(folder: Path, train: ArrayDataset, *, epochs: int = 10, train_size: int = 25_000,
                val_size: int = 5_000, lr: float = 1e-3, weight_decay: float = 0.05, batch_size: int = 128,
                seed: int = 0) -> Path:  # fmt: skip
    """Trains the dense model (AdamW, one warm-up epoch then cosine, pad-crop-flip, label
    smoothing 0.1) on a seeded ``train_size``/``val_size`` split; writes ``folder/model`` and one
    ``metrics.jsonl`` line per epoch (``seconds`` counted by the report). Returns the model path."""
    torch.manual_seed(seed)
    order = np.random.default_rng(seed).permutation(len(train))
    fit, val = train.subset(np.sort(order[:train_size])), train.subset(np.sort(order[train_size:][:val_size]))
    model = sss.models.create(MODEL, num_classes=train.num_classes, in_channels=train.shape[0])
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr)  # fmt: skip
    steps_per_epoch = len(fit) // batch_size
    total, warm = epochs * steps_per_epoch, steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(total - warm, 1)))
    )
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "metrics.jsonl").open("w") as log:
        for epoch in range(epochs):
            start, model = time.perf_counter(), model.train()
            for x, y in iterate_batches(fit, batch_size, shuffle=True, augment_pad=2, generator=gen, drop_last=True):
                loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            row = {"epoch": epoch + 1, "val_acc": sss.evaluate(model, val)[0], "seconds": time.perf_counter() - start}
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(json.dumps(row), flush=True)
    path = folder / "model"
    sss.save(model.eval(), path)
    return path
