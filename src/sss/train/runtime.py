"""Where and how a run computes: the device, the precision, and the processes it shares work with.

One process by default. Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), the
run joins a ``torch.distributed`` process group: NCCL on GPUs, gloo on CPUs, with a timeout
(``SSS_DIST_TIMEOUT`` seconds, default 600) so a rank that hangs ends the job instead of
stalling it; a rank that dies is ended by torchrun, which stops the others.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when present, one GPU per local rank), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        device = torch.device("meta")  # refused below, with the choices
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but this torch sees no CUDA GPU; use --device cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    elif device.type != "cpu" or device.index not in (None, 0):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return device


@dataclass
class Runtime:
    """The run's device, autocast precision and place among the processes."""

    device: torch.device
    amp: str = "none"
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process logs and writes files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass; parameters, factors and their optimizers stay
        fp32, so the proximal step's exact zeros stay exact."""
        if self.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp])

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A loss scaler for fp16 (bf16 has fp32's range and needs none)."""
        return torch.amp.GradScaler(self.device.type) if self.amp == "fp16" else None

    def channels_last(self, setting: str | bool) -> bool:
        """Whether to train in ``channels_last`` memory format: ``auto`` means on CUDA only. On the
        CPU it gains little, and torch 2.13's oneDNN backward of a strided 1x1 convolution in
        that format crashes or hangs on AVX2 CPUs (AMD EPYC; docs/architecture.md, "Scale-out")."""
        return self.device.type == "cuda" if setting == "auto" else bool(setting)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True)
        return x

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in ``DistributedDataParallel`` when there are several processes (gradients,
        factor gradients included, are averaged over ranks before each step)."""
        if not self.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    @torch.no_grad()
    def sync_buffers(self, model: nn.Module) -> None:
        """Gives every rank rank 0's buffers (BN running statistics drift apart per rank)."""
        if self.distributed:
            for buf in model.buffers():
                dist.broadcast(buf, src=0)

    def agree(self, message: str | None) -> str | None:
        """Rank 0's ``message`` on every rank (for an error only rank 0 can see)."""
        if not self.distributed:
            return message
        box = [message]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def create_runtime(device: str = "auto", amp: str = "none") -> Runtime:
    """The runtime of this process; joins the process group when launched by ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Runtime(resolve_device(device), amp)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local)
    if not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        timeout = timedelta(seconds=float(os.environ.get("SSS_DIST_TIMEOUT", "600")))
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo", timeout=timeout)
    return Runtime(resolved, amp, dist.get_rank(), dist.get_world_size())
