"""A run's epochs in TensorBoard (``tensorboard: true`` / ``--tensorboard``)."""

from __future__ import annotations

import torch
from torch import nn

from sss.structures import gates
from sss.train.results import EpochRecord
from sss.viz.tensorboard import TensorBoardLog


def write_epoch(board: TensorBoardLog, record: EpochRecord, model: nn.Module,
                factors_opt: torch.optim.Optimizer | None) -> None:  # fmt: skip
    """The epoch's record (loss, accuracy, lr, compact MACs, zero factors), the zero factors and γ
    per kind, and a histogram of each kind's factors, at step ``record["epoch"]``."""
    step = record["epoch"]
    board.scalars({k: v for k, v in record.items() if k != "epoch"}, step)
    refs = gates(model)
    kinds: dict[str, list[torch.Tensor]] = {}
    for ref in refs:
        kinds.setdefault(ref.kind, []).append(ref.weight.detach().flatten().cpu())
    board.scalars({f"zero_factors/{k}": int((torch.cat(v) == 0).sum()) for k, v in kinds.items()}, step)
    board.histograms({k: torch.cat(v) for k, v in kinds.items()}, step)
    if factors_opt is not None:
        kind_of = {id(ref.weight): ref.kind for ref in refs}
        board.scalars({f"gamma/{kind_of[id(g['params'][0])]}": float(g["gamma"]) for g in factors_opt.param_groups
                       if g["params"] and id(g["params"][0]) in kind_of}, step)  # fmt: skip
    board.flush()
