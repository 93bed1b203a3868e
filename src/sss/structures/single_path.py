"""The one-path check: a model whose forward takes another path on other data or in the other
mode is refused, with the deepest module to blame (docs/architecture.md, "One path")."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import torch
import torch.utils._pytree as pytree
from torch import fx, nn

from sss.errors import UnsupportedModelError
from sss.structures.paths import under
from sss.structures.tracing import LEAF_NORMS, Tracer, is_drop_path, output_tensors, trace_graph

logger = logging.getLogger("sss")


class _IgnoringTracer(Tracer):
    """Traces through everything but sss wrappers, torch layers and the ``ignore`` paths."""

    def __init__(self, ignore: Sequence[str]) -> None:
        super().__init__()
        self.ignore = ignore

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return under(qualname, self.ignore) or super().is_leaf_module(m, qualname)


def _trace(module: nn.Module, ignore: Sequence[str]) -> fx.Graph:
    return trace_graph(module, _IgnoringTracer(ignore))


def _graph_shape(module: nn.Module, training: bool, ignore: Sequence[str]) -> list[tuple[str, str]]:
    """The traced graph of ``module`` in one mode, as (op, target) pairs (constant arguments such
    as ``F.dropout(..., training=self.training)`` do not count)."""
    was_training = module.training
    try:
        graph = _trace(module.train(training), ignore)
    finally:
        module.train(was_training)
    # A plain tensor attribute becomes a fresh `_tensor_constantN` in each trace: same graph.
    return [(n.op, re.sub(r"^_tensor_constant\d+$", "_tensor_constant", str(n.target))) for n in graph.nodes]


def _culprit(model: nn.Module, fails, ignore: Sequence[str]) -> str | None:
    """The deepest module (not under ``ignore``) for which ``fails(module, ignore inside it)``
    holds, or None. A module the test itself cannot handle (it does not trace) is not it."""
    failing = []
    for name, m in model.named_modules():
        if under(name, ignore) or not any(m.children()):
            continue
        inner = [p[len(name) + 1 :] if name else p for p in ignore if not name or p.startswith(name + ".")]
        try:
            failed = fails(m, inner)
        except Exception:
            failed = False
        if failed:
            failing.append(name)
    return max(failing, key=lambda n: n.count(".") + bool(n), default=None)


def _branches_on_values(model: nn.Module, path: str, example_inputs: torch.Tensor | None) -> bool:
    """Whether the module at ``path`` branches on its input's values, not only on its shapes:
    ``torch.fx`` flags both, so the module is exported (``torch.export``, non-strict, on the
    inputs it gets from ``example_inputs``), which specialises shapes and refuses a branch on a
    value. Without an example, or if it cannot be exported for another reason, the answer is
    ``torch.fx``'s (yes)."""
    module, inputs = model.get_submodule(path), _inputs_of(model, path, example_inputs)
    if inputs is None:
        return True
    try:
        torch.export.export(_TensorsOnly(module, inputs), tuple(_TensorsOnly.tensors(inputs)), strict=False)
    except Exception:  # a branch on a value, or another failure: torch.fx's verdict stands
        return True
    return False


class _TensorsOnly(nn.Module):
    """Calls ``module`` with one call's arguments, of which only the tensors are inputs: the rest
    (a Hugging Face key/value cache, which ``torch.export`` takes no input of) is held fixed."""

    def __init__(self, module: nn.Module, inputs: tuple[tuple, dict]) -> None:
        super().__init__()
        self.module = module
        self.leaves, self.spec = pytree.tree_flatten(inputs)

    @staticmethod
    def tensors(inputs: tuple[tuple, dict]) -> list[torch.Tensor]:
        return [leaf for leaf in pytree.tree_leaves(inputs) if isinstance(leaf, torch.Tensor)]

    def forward(self, *tensors: torch.Tensor) -> object:
        given = iter(tensors)
        leaves = [next(given) if isinstance(leaf, torch.Tensor) else leaf for leaf in self.leaves]
        args, kwargs = pytree.tree_unflatten(leaves, self.spec)
        return self.module(*args, **kwargs)


def check_single_path(model: nn.Module, ignore: Sequence[str] = (), example_inputs: torch.Tensor | None = None) -> None:
    """Refuses a model whose forward takes another path on other data or in the other mode.

    Structures are found along the path that one example input takes in one mode, so a
    forward that branches on its input's values (``if x.mean() > 0``) or on ``self.training``
    would be gated and cut along that path only, and the compact model would be wrong (or
    crash) on the other. ``torch.fx`` refuses the first (and a branch on a shape, which
    ``torch.export`` then clears on ``example_inputs``) and shows the second as two different
    graphs (a difference that computes the same, a cache kept only in eval mode, is cleared by
    running the module both ways on ``example_inputs``); the module to blame is named, so it can
    be fixed or excluded with ``ignore``. A model that ``torch.fx`` cannot trace for another
    reason is not checked (logged).
    """

    def branches_on_data(m: nn.Module, inner_ignore: Sequence[str]) -> bool:
        try:
            _trace(m, inner_ignore)
        except Exception as e:
            return "control flow" in str(e)
        return False

    was_training = model.training
    try:
        same = _graph_shape(model, True, ignore) == _graph_shape(model, False, ignore)
    except Exception as e:
        culprit = _culprit(model, branches_on_data, ignore) if "control flow" in str(e) else None
        if culprit is not None and _branches_on_values(model, culprit, example_inputs):
            where = culprit or type(model).__name__
            raise UnsupportedModelError(
                f"{where} branches on the values of its input (torch.fx: {str(e).splitlines()[0]}); gating follows "
                f"the path of one example input only, so the compact model would be wrong on inputs that take "
                f"another. Make its forward branch-free, or exclude it with ignore=[{where!r}]"
            ) from None
        logger.info("%s: torch.fx cannot trace it (%s), so it is not checked for data-dependent paths",
                    type(model).__name__, type(e).__name__)  # fmt: skip
        return
    finally:
        model.train(was_training)
    if not same:
        culprit = _culprit(model, lambda m, ig: _graph_shape(m, True, ig) != _graph_shape(m, False, ig), ignore)
        if culprit is not None and not _same_in_both_modes(model, culprit, example_inputs):
            raise UnsupportedModelError(
                f"{culprit} computes a different graph in training and in eval mode (a branch on self.training); "
                "gating follows one mode only, so the compact model would differ in the other. Make both modes "
                f"run the same layers, or exclude it with ignore=[{culprit!r}]"
            )


def _inputs_of(model: nn.Module, path: str, example_inputs: torch.Tensor | None) -> tuple[tuple, dict] | None:
    """The positional and keyword inputs the module at ``path`` gets when ``model`` runs on
    ``example_inputs`` (eval mode, no grad), or ``None`` (no example, or it does not run)."""
    if example_inputs is None:
        return None
    module, captured = model.get_submodule(path), []
    hook = module.register_forward_pre_hook(lambda m, a, k: captured.append((tuple(a), dict(k))), with_kwargs=True)
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example_inputs)
    except Exception:
        return None
    finally:
        hook.remove()
        model.train(was_training)
    return captured[0] if captured else None


def _same_in_both_modes(model: nn.Module, path: str, example_inputs: torch.Tensor | None) -> bool:
    """Whether the module at ``path`` computes the same in training and eval mode on the inputs it
    gets from ``example_inputs``, its norms, dropouts and stochastic depth kept in eval mode (their
    training behaviour is no other path): then its graphs differ by a cache or a check, not a path."""
    module, inputs = model.get_submodule(path), _inputs_of(model, path, example_inputs)
    if inputs is None:
        return False
    args, kwargs = inputs
    was_training = module.training
    try:
        with torch.no_grad():
            module.train()
            for m in module.modules():
                if isinstance(m, (*LEAF_NORMS, nn.modules.dropout._DropoutNd)) or is_drop_path(m):
                    m.eval()
            trained = output_tensors(module(*args, **kwargs))
            evaluated = output_tensors(module.eval()(*args, **kwargs))
    except Exception:
        return False
    finally:
        module.train(was_training)
    return len(trained) == len(evaluated) and all(
        a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6)
        for a, b in zip(trained, evaluated, strict=True)
    )
