"""The selection in a training loop of your own: ``Selection`` hooks your optimizer (CPU).

    python examples/plain_loop.py

Your loop keeps its optimizer (AdamW here), loss and batches. The factors skip your optimizer
and take their own proximal step after each of its steps; after ``selection_steps`` the budget
lands and the factors freeze, and the loop fine-tunes the rest. ``compact()`` removes the zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import sss
from sss.data import iterate_batches, load_dataset
from sss.integrations import Selection, SelectionSettings


def main(quick: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    model, example = sss.models.create("resnet20", width=8, in_channels=1), torch.zeros(1, 1, 28, 28)
    dense = sss.count(model, example)[0]
    steps = 20 if quick else 200
    settings = SelectionSettings(structures=("block", "channel"), target_macs=0.5, from_trained=False)
    selection = Selection(model, example, settings, selection_steps=steps // 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # built after the factors: it holds them
    selection.hook(optimizer)
    batches = iterate_batches(load_dataset("fashion-mnist", True), 64, shuffle=True,
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
    for _, (x, y) in zip(range(steps), batches, strict=False):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()  # the factors' proximal step and the budget run inside, after it
    compact = selection.compact()
    print(f"dense {dense / 1e6:.2f}M MACs -> compact {sss.count(compact, example)[0] / 1e6:.2f}M MACs "
          f"after {steps} steps (landed: {selection.landed})")  # fmt: skip
    return compact


if __name__ == "__main__":
    main()
