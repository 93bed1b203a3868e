"""The compress recipe on any batches: a plain loop that :class:`~sss.integrations.Selection` drives.

For data that is not sss's own :class:`~sss.data.ArrayDataset`: tuples ``(inputs, targets)`` or
dicts of tensors (Hugging Face datasets), with the user's loss or the model's own ``.loss``.
One epoch selects (the selection lands on the budget at its last step), the zero structures are
removed, and the other epochs fine-tune the compact model, with SGD (Nesterov momentum) on a
cosine schedule, as ``sss compress``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from sss.integrations.selection import Selection, SelectionSettings
from sss.measure import count
from sss.optim.param_groups import weight_param_groups
from sss.serialization import save

#: ``loss(outputs, batch) -> Tensor``: the user's loss of one batch.
BatchLoss = Callable[[Any, Any], torch.Tensor]


def _loader(data, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen, drop_last=shuffle)


def _forward(model: nn.Module, batch) -> Any:
    """The model's outputs for one batch: ``model(**batch)`` for a dict, ``model(batch[0])`` for a
    tuple, ``model(batch)`` for a tensor."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(batch[0])
    return model(batch)


def _logits(outputs) -> torch.Tensor | None:
    if isinstance(outputs, torch.Tensor):
        return outputs
    return getattr(outputs, "logits", None)


def _targets(batch) -> torch.Tensor | None:
    if isinstance(batch, Mapping):
        return batch.get("labels")
    if isinstance(batch, (tuple, list)) and len(batch) > 1:
        return batch[1]
    return None


def default_loss(outputs, batch) -> torch.Tensor:
    """The output's ``.loss`` (a Hugging Face model given ``labels``), else cross-entropy of the
    logits against the batch's targets."""
    if getattr(outputs, "loss", None) is not None:
        return outputs.loss
    logits, targets = _logits(outputs), _targets(batch)
    if logits is None or targets is None:
        raise ValueError("sss.compress cannot tell the loss of these batches: give loss=fn(outputs, batch), or "
                         "batches of (inputs, targets) or dicts with labels")  # fmt: skip
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten())


def _to(batch, device: torch.device):
    if isinstance(batch, Mapping):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(v, device) for v in batch)
    return batch.to(device) if isinstance(batch, torch.Tensor) else batch


@torch.no_grad()
def evaluate_batches(model: nn.Module, loader: DataLoader, loss: BatchLoss) -> dict[str, float]:
    """Mean loss and, where the batches have class targets for the logits, accuracy in %."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, correct, counted, seen = 0.0, 0, 0, 0
    for batch in loader:
        batch = _to(batch, device)
        outputs = _forward(model, batch)
        logits, targets = _logits(outputs), _targets(batch)
        n = len(targets) if targets is not None else 1
        total, seen = total + float(loss(outputs, batch)) * n, seen + n
        if logits is not None and targets is not None and logits.dim() == 2 and targets.dim() == 1:
            correct += int((logits.argmax(1) == targets).sum())
            counted += len(targets)
    model.train(was_training)
    out = {"loss": total / max(seen, 1)}
    if counted:
        out["accuracy"] = 100.0 * correct / counted
    return out


def _distilled(loss: BatchLoss, teacher: nn.Module, temperature: float) -> BatchLoss:
    """``0.5·loss + 0.5·T²·KL(teacher_T ‖ student_T)`` on the logits."""

    def mixed(outputs, batch) -> torch.Tensor:
        with torch.no_grad():
            target = _logits(_forward(teacher, batch)).float()
        logits = _logits(outputs).float()
        kl = F.kl_div(F.log_softmax(logits / temperature, -1), F.log_softmax(target / temperature, -1),
                      reduction="batchmean", log_target=True)  # fmt: skip
        return 0.5 * loss(outputs, batch) + 0.5 * temperature**2 * kl

    return mixed


def compress_batches(model: nn.Module, example, train_data, val_data, settings: SelectionSettings, *, epochs: int,
                     lr: float, batch_size: int, loss: BatchLoss | None, distill: float | None, seed: int,
                     out_dir: Path, log: Callable[[str], None]) -> tuple[nn.Module, dict]:  # fmt: skip
    """:func:`sss.compress` on batches that are not an ArrayDataset (see the module's docstring)."""
    if epochs < 2:
        raise ValueError(f"epochs must be >= 2 for compress (one selection epoch, then at least one fine-tune epoch), "
                         f"got {epochs}")  # fmt: skip
    torch.manual_seed(seed)
    loss = loss or default_loss
    trained = copy.deepcopy(model).eval()
    network = copy.deepcopy(model).train()
    train, val = (
        _loader(train_data, batch_size, True, seed),
        _loader(val_data, batch_size, False, seed) if val_data is not None else None,
    )
    if distill:
        loss = _distilled(loss, trained, distill)
    selection = Selection(network, example, settings, selection_steps=len(train), log=log)
    history: list[dict] = []
    for epoch in range(epochs):
        if epoch == 1:  # the selection landed at its last step: remove what it zeroed, fine-tune the rest
            selection.unhook()
            network = selection.compact().train()
        if epoch <= 1:
            optimizer = torch.optim.SGD(weight_param_groups(network, 1e-4), lr=lr, momentum=0.9, nesterov=True)
            if epoch == 0:
                selection.hook(optimizer)
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        device, total, steps = next(network.parameters()).device, 0.0, 0
        for batch in train:
            batch = _to(batch, device)
            value = loss(_forward(network, batch), batch)
            if not torch.isfinite(value):
                raise ValueError(f"the loss became {float(value)} at epoch {epoch + 1}, step {steps + 1}: lower lr")
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            total, steps = total + float(value.detach()), steps + 1
        record = {"epoch": epoch + 1, "train_loss": total / max(steps, 1),
                  "compact_macs": count(selection.compact() if epoch == 0 else network, example)[0]}  # fmt: skip
        if val is not None:
            record.update({f"val_{k}".replace("val_accuracy", "val_acc"): v
                           for k, v in evaluate_batches(network, val, loss).items()})  # fmt: skip
        history.append(record)
        log(" ".join(f"{k} {v:.4g}" for k, v in record.items()))
    compact = network.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    save(compact, out_dir / "compact")
    rows = {}
    for name, m in (("trained", trained), ("compact", compact)):
        macs, params = count(m, example)
        rows[name] = {"macs": macs, "params": params, **(evaluate_batches(m, val, loss) if val is not None else {})}
    return compact, {"models": rows, "history": history}
