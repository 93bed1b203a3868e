"""Finding a model's structures of every requested kind, each checked for exact removal."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sss.errors import UnsupportedModelError
from sss.structures.boundary import model_errors
from sss.structures.conv1d import convert_conv1d, is_conv1d
from sss.structures.copying import deep_copy
from sss.structures.gate import Gate
from sss.structures.prune import prune
from sss.structures.registry import Discovery, StructureKind, get_kind, parse_kinds
from sss.structures.single_path import check_single_path
from sss.structures.torch_transformer import convert_torch_transformers, has_torch_transformers
from sss.structures.tracing import NORMS, output_tensors

logger = logging.getLogger("sss")

#: What cutting a copy whose removal is not exact may raise: a layer or reshape whose
#: width no longer fits (RuntimeError), or an index past a cut dimension (IndexError).
_INEXACT_ERRORS = (RuntimeError, IndexError)
#: Float types too coarse for the exactness check's 1e-4 tolerance: it runs on an fp32 copy.
_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass
class StructureReport:
    """What :func:`find_structures` found.

    Attributes:
        structures: Kind name → the structures of that kind that can be gated (each kind's
            own description objects; :meth:`names` gives their module paths).
        skipped: ``"path: reason"`` for every candidate that cannot be gated.
    """

    structures: dict[str, list[Any]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def names(self, kind: str) -> list[str]:
        """Module paths of the structures found of ``kind``."""
        return [get_kind(kind).label(c) for c in self.structures.get(kind, [])]

    @property
    def found(self) -> list[str]:
        """The kinds with at least one structure."""
        return [k for k, found in self.structures.items() if found]

    @property
    def missing(self) -> list[str]:
        """The requested kinds of which the model has none."""
        return [k for k, found in self.structures.items() if not found]

    def summary(self) -> str:
        """One line: how many structures of each kind, and which kinds were not found."""
        parts = [f"{len(self.structures[k])} {k}" for k in self.found]
        text = "gated " + (", ".join(parts) or "nothing")
        return text + (f"; not found: {', '.join(self.missing)}" if self.missing else "")


def find_structures(
    model: nn.Module,
    example_inputs: torch.Tensor | None,
    kinds: str | Sequence[str] = ("channel",),
    ignore: Sequence[str] = (),
) -> StructureReport:
    """Returns the structures of each kind in ``kinds`` that :func:`sss.attach` would gate and,
    for each candidate that cannot be gated, a sentence saying why. ``model`` is unchanged.

    Every structure found by a kind that asks for it (``check_exactness``) is checked on
    ``example_inputs``: a copy with random BN statistics loses half of each structure and must
    compute the same outputs; a structure that fails (an op on the way that turns zeros into
    something else) is reported, not returned. ``kinds`` may be one string: ``"channel"`` or
    ``"block,channel"``.

    Raises:
        UnsupportedModelError: ``model`` is wrapped in ``nn.DataParallel`` or
            ``DistributedDataParallel``, or takes another path on other data or in the other mode.
    """
    check_not_wrapped(model)
    kinds = parse_kinds(kinds)
    with model_errors(model, "finding the structures of"):
        if has_torch_transformers(model) or any(map(is_conv1d, model.modules())):  # what attach would gate:
            model = deep_copy(model)  # on the rewritten encoder layers and Conv1D layers
            convert_torch_transformers(model, example_inputs, ignore)
            convert_conv1d(model, ignore)
        check_single_path(model, ignore, example_inputs)
        return _find(model, example_inputs, kinds, ignore)


def find_known(
    model: nn.Module, example_inputs: torch.Tensor | None, known: dict[str, list[str]], ignore: Sequence[str] = ()
) -> StructureReport:
    """The structures an ``attach`` recorded (kind → labels), found again on a rebuilt ``model``
    without the checks they passed when they were found (one path, exact removal): loading a
    saved model replays its selection instead of rediscovering it.

    Raises:
        ValueError: A recorded structure is not in ``model`` (it is not the model that was saved).
    """
    report = _find(model, example_inputs, list(known), ignore, known)
    for name, labels in known.items():
        if missing := sorted(set(labels) - set(report.names(name))):
            raise ValueError(f"the {name} structures at {', '.join(missing[:3])} were gated when it was saved and "
                             "are not in this model")  # fmt: skip
    return report


def _find(model: nn.Module, example_inputs: torch.Tensor | None, kinds: list[str], ignore: Sequence[str],
          known: dict[str, list[str]] | None = None) -> StructureReport:  # fmt: skip
    """Each kind's structures: all that pass the exactness check, or only the ``known`` labels (unchecked)."""
    discovery = Discovery(model, example_inputs)
    if example_inputs is not None:  # one forward (the kinds reuse its call counts): a model that does not run
        _ = discovery.calls  # on the example fails here, before any kind reads it, named by the boundary
    report = StructureReport()
    for name in kinds:
        kind = get_kind(name)
        try:  # torch's or the model's own error while one kind reads the model names that kind
            with model_errors(model, f"finding the {name} structures of"):
                found, skipped = kind.find(model, example_inputs, ignore, discovery)
        except UnsupportedModelError as e:  # this kind cannot read the model; the others may
            if len(kinds) == 1:
                raise
            found, skipped = [], [f"{name}: {e}"]
        if known is not None:
            wanted = set(known[name])
            found = [c for c in found if kind.label(c) in wanted]
        elif found and kind.check_exactness and example_inputs is not None:
            found, failed = exact_subset(model, kind, found, example_inputs)
            skipped += [f"{kind.label(c)}: removing its {kind.name} structures changes the output on the example "
                        f"and a random input ({kind.inexact_causes})" for c in failed]  # fmt: skip
        report.structures[name] = found
        report.skipped += skipped
    return report


def check_not_wrapped(model: nn.Module) -> None:
    """Refuses ``nn.DataParallel`` / ``DistributedDataParallel``: their forward scatters the
    input over devices (not a graph to gate), and gates inside would be renamed ``module.*``."""
    if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
        raise UnsupportedModelError(
            f"{type(model).__name__} wraps the model to gate: pass model.module (sss attaches to the bare "
            "model; wrap it after)"
        )


def exact_subset(
    model: nn.Module, kind: StructureKind, candidates: list[Any], example_inputs: torch.Tensor
) -> tuple[list[Any], list[Any]]:
    """Splits ``candidates`` into those whose removal keeps the outputs and those whose removal
    does not: all at once first (one copy), then one at a time to find the culprits.

    A half-precision model is checked as an fp32 copy (its removal is exact or not at any
    precision; fp16 rounding alone exceeds the tolerance), on fp32 inputs."""
    inputs = _probe_inputs(example_inputs, torch.float32 if _is_low_precision(model) else None, model)
    if _removes_exactly(model, kind, candidates, inputs):
        return candidates, []
    exact, failed = [], []
    for c in candidates:
        (exact if _removes_exactly(model, kind, [c], inputs) else failed).append(c)
    return exact, failed


def _probe_inputs(example_inputs: torch.Tensor, dtype: torch.dtype | None = None,
                  model: nn.Module | None = None) -> list[torch.Tensor]:  # fmt: skip
    """The example and a random batch of its shape: an example of zeros (what the trainer traces
    with) would not exercise ops such as ``relu_(x)``. Float inputs get a signed normal batch,
    cast to ``dtype`` if given (the dtype of the checked copy); integer inputs (token ids) get
    random ids inside the smallest embedding table of ``model`` (the vocabulary, or the positions)."""
    gen = torch.Generator().manual_seed(0)
    if not example_inputs.is_floating_point():
        modules = model.modules() if model is not None else []
        tables = [m.num_embeddings for m in modules if isinstance(m, nn.Embedding)]
        if not tables or example_inputs.dtype == torch.bool:
            return [example_inputs]
        ids = torch.randint(0, min(tables), example_inputs.shape, generator=gen)
        return [example_inputs, ids.to(device=example_inputs.device, dtype=example_inputs.dtype)]
    example = example_inputs.to(dtype or example_inputs.dtype)
    noise = torch.randn(example.shape, generator=gen).to(device=example.device, dtype=example.dtype)
    return [example, noise]


def _is_low_precision(model: nn.Module) -> bool:
    """Whether ``model`` holds fp16/bf16 parameters or buffers (checked as an fp32 copy)."""
    return any(t.dtype in _LOW_PRECISION for t in [*model.parameters(), *model.buffers()])


def _check_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode to gate and prune: fp32 if it is half precision, and with
    contiguous parameters (``channels_last`` weights cannot be flattened with ``view``)."""
    trial = deep_copy(model).eval()
    if _is_low_precision(trial):
        trial.float()  # float parameters and buffers only; integer buffers (BN's count, indices) stay
    return trial.to(memory_format=torch.contiguous_format)


def _randomise_state(model: nn.Module, gen: torch.Generator) -> None:
    """Gives BN statistics and every constant tensor (a buffer or parameter of all ones or
    zeros, as at initialisation) random values: training moves them, and a removal that is
    exact only for the initial values (a per-channel buffer read by width) must be caught."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, Gate):
                continue
            if isinstance(m, NORMS) and m.affine and m.track_running_stats:
                m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.bias.uniform_(-0.3, 0.3, generator=gen)
            for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)]:
                if t.is_floating_point() and t.numel() > 1 and bool((t == t.reshape(-1)[0]).all()):
                    t.uniform_(0.5, 1.5, generator=gen)


def _removes_exactly(model: nn.Module, kind: StructureKind, candidates: list[Any], inputs: list[torch.Tensor]) -> bool:
    """Gates ``candidates`` in a copy with random state (see :func:`_check_copy`) and checks, for
    three factor patterns (every other factor zero, the rest 0.75; the other half zero; then a
    seeded random third zero, which catches channel maps that only the alternation hides, such
    as GhostNet's ``cat(...)[:, :k]`` after a cut, and removes an odd number: :func:`_odd_draw`), that
    pruning keeps the outputs (to 1e-4 relative) on every probe input: removal and folding both
    checked. A gated copy or a compact model that cannot run (any error of its forward: the
    model's code reads a wrapped layer's weights, or refuses the narrower widths), or a cut that
    raises :data:`_INEXACT_ERRORS`, fails the check; any other error of the cut is a bug and
    propagates."""
    for pattern in ("even", "odd", "random"):
        trial = _check_copy(model)
        kind.gate(trial, candidates)
        _randomise_state(trial, torch.Generator().manual_seed(0))
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            position = 0
            for m in trial.modules():
                if isinstance(m, Gate) and m.kind == kind.name:
                    flat = m.weight.view(-1).fill_(0.75)
                    if pattern == "random":
                        flat[_odd_draw(flat.numel(), gen)] = 0.0
                    else:
                        flat[(position + (pattern == "odd")) % 2 :: 2] = 0.0
                    position += flat.numel()
            try:  # clones: the model may write into x; torch.fx prints a failing traced module's code: kept quiet
                with contextlib.redirect_stderr(io.StringIO()):
                    expected = [trial(x.clone()) for x in inputs]
            except Exception:  # the model's code reads the wrapped layer (EVA: F.linear(x, self.qkv.weight))
                return False
            try:
                compact = prune(trial)
            except _INEXACT_ERRORS:
                return False
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    actual = [compact(x.clone()) for x in inputs]
            except Exception:  # the model's code refuses the narrower widths (a reshape, an assert)
                return False
        for a, e in zip(actual, expected, strict=True):
            if not _same_output(a, e):
                return False
    return True


def _odd_draw(n: int, gen: torch.Generator) -> torch.Tensor:
    """About 30% of ``n`` structures, an odd number of them where ``n > 1``: a cut that only runs
    while a width stays a multiple of something (a head's width, where query/key/value layers
    under names sss does not know were taken for channels: DistilBERT's ``q_lin``) fails here, at
    the check, instead of when a user's pattern happens to be odd."""
    zero = torch.rand(n, generator=gen) < 0.3
    if n > 1 and int(zero.sum()) % 2 == 0:
        at = int(torch.nonzero(zero)[0]) if bool(zero.any()) else 0
        zero[at] = not bool(zero[at])
    return zero


def _same_output(actual: Any, expected: Any) -> bool:
    """Whether two outputs hold the same tensors (a tensor, or a tuple, dict or ``ModelOutput``
    of them), each to 1e-4 of its largest value."""
    pairs = list(zip(output_tensors(actual), output_tensors(expected), strict=False))
    if len(pairs) != len(output_tensors(expected)):
        return False
    for a, e in pairs:
        if a.shape != e.shape:
            return False
        if e.is_floating_point():
            scale = float(e.abs().max()) if e.numel() else 0.0
            if e.numel() and float((a - e).abs().max()) > 1e-4 * (scale or 1.0):
                return False
        elif not torch.equal(a, e):
            return False
    return True
