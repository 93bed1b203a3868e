"""A residual stream read through LayerNorms, rescaled: the same function at another scale.

The embedding kind's factors multiply every write into a transformer's stream, so a selection
that shrinks them (the L1 penalty pulls every factor toward zero, the kept ones too) leaves the
folded model with a small stream: on timm's ViT-Tiny at 0.3 of the MACs its RMS at the norms
fell from 2.77 to 0.25 (seed 1, averaged over the 25 norms: the Trainer logs both). A norm's
gradient with respect to its input grows as ``1/σ``, so every parameter that writes into the
stream gets a relative SGD step ``~1/σ²`` larger than it had: the fine-tune after the cut
diverged (training accuracy 78.1% → 49.5% in its first epoch, while the uniform-width control
trained). ``LN(c·x; c²·ε) = LN(x; ε)``, so multiplying every write by ``c`` and every norm's
``ε`` by ``c²`` changes no output and gives the stream back its scale (the same epoch: 74.9%
training accuracy, 78.3% validation against 63.1%; ``benchmarks/bench_vit_timm.py --targets 0.3
--seeds 1 --methods sss-rank sss-scaled``, each run's ``metrics.jsonl``).

:func:`streams` finds each stream that can be rescaled (every write a layer whose whole output is
the stream, every norm a LayerNorm); :func:`scale_stream` rescales one, and records the norms'
``ε`` in the model's history (``scale_stream``, replayed by the embedding kind) so that a saved
model loads the same. A stream that a layer reads directly (not through a norm) is not
scale-free: the caller checks the output (the Trainer's ``_rescale_streams``) and puts the
stream back as it was (:func:`keep_stream`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from sss.structures.gate import ChannelGated
from sss.structures.registry import Edit


@dataclass(frozen=True)
class Stream:
    """One residual stream of a gated model: its embedding gate, the layers and tensors that
    write into it, and the norms that read it (paths in the model)."""

    gate: str
    writes: tuple[str, ...]
    tokens: tuple[str, ...]
    norms: tuple[str, ...]


def _layer(model: nn.Module, path: str) -> nn.Module:
    module = model.get_submodule(path)
    return module.inner if isinstance(module, ChannelGated) else module


def _outputs(layer: nn.Module) -> int | None:
    for name in ("out_features", "out_channels", "embedding_dim"):
        if isinstance(getattr(layer, name, None), int):
            return getattr(layer, name)
    return None


def streams(model: nn.Module) -> list[Stream]:
    """The embedding-kind streams of gated ``model`` that :func:`scale_stream` can rescale."""
    found = []
    for wrapper in model.modules():
        group = getattr(wrapper, "group", None)
        if not isinstance(wrapper, ChannelGated) or group is None or group.kind != "embedding":
            continue
        if wrapper is not model.get_submodule(group.gated[0].path):
            continue  # each stream once: at its gate's first layer
        writes, norms = [], []
        for s in group.gated:
            layer = _layer(model, s.path)
            if isinstance(layer, nn.LayerNorm):
                norms.append(s.path)
            elif _outputs(layer) == sum(len(ix) for ix in s.index):
                writes.append(s.path)
            else:
                break  # a write that is partly something else: not rescaled
        else:
            found.append(Stream(group.name, tuple(writes), tuple(p[0] for p in group.per_structure), tuple(norms)))
    return found


@torch.no_grad()
def stream_rms(model: nn.Module, stream: Stream, inputs: torch.Tensor) -> float:
    """The stream's root mean square at its norms' inputs on ``inputs``, averaged over the norms."""
    seen: list[float] = []
    hooks = [model.get_submodule(p).register_forward_pre_hook(
        lambda _m, args: seen.append(float(args[0].float().pow(2).mean().sqrt()))) for p in stream.norms]  # fmt: skip
    try:
        model(inputs)
    finally:
        for h in hooks:
            h.remove()
    return sum(seen) / max(len(seen), 1)


def _written(model: nn.Module, stream: Stream) -> list[torch.Tensor]:
    """What writes into ``stream``: the writes' weights and biases (their whole output is the
    stream, so scaling them scales it) and the tokens' tensors (a parametrization's original)."""
    tensors = [_layer(model, p).weight for p in stream.writes]
    tensors += [b for p in stream.writes if (b := _layer(model, p).bias) is not None]
    for path in stream.tokens:
        owner_path, _, name = path.rpartition(".")
        owner = model.get_submodule(owner_path)
        tensors.append(owner.parametrizations[name].original if parametrize.is_parametrized(owner, name)
                       else getattr(owner, name))  # fmt: skip
    return tensors


@torch.no_grad()
def scale_stream(model: nn.Module, stream: Stream, factor: float) -> Edit:
    """Multiplies every write into ``stream`` by ``factor`` and its norms' ``ε`` by ``factor²``,
    in place: no output changes if every read goes through the norms. Returns the edit for the
    model's history (:func:`sss.structures.history.record`; the caller records it once the
    output is checked)."""
    for tensor in _written(model, stream):
        tensor.mul_(factor)
    edit: Edit = {"op": "scale_stream", "norms": list(stream.norms), "eps_factor": factor * factor}
    scale_norm_eps(model, edit)
    return edit


def keep_stream(model: nn.Module, stream: Stream) -> Callable[[], None]:
    """A copy of what :func:`scale_stream` changes (the writes, the norms' ``ε``); calling the
    result puts them back exactly."""
    tensors = _written(model, stream)
    saved = [t.detach().clone() for t in tensors]
    eps = {path: _layer(model, path).eps for path in stream.norms}

    @torch.no_grad()
    def restore() -> None:
        for tensor, copy in zip(tensors, saved, strict=True):
            tensor.copy_(copy)
        for path, value in eps.items():
            _layer(model, path).eps = value

    return restore


def scale_norm_eps(model: nn.Module, edit: Edit) -> None:
    """Replays a ``scale_stream`` edit: the norms' ``ε`` (the weights come with the state dict)."""
    for path in edit["norms"]:
        norm = _layer(model, path)
        norm.eps = norm.eps * float(edit["eps_factor"])
