"""Torch-Pruning's dependency graph, with its channel search made linear and bounded.

Torch-Pruning finds a group (every layer whose channels go with a root layer's) by following
index mappings from the root until nothing new is reached. Two things in it fail on real models:
``Group.has_pruning_op`` compares the index list of every item so far (quadratic: minutes on a
wide stage of Visformer, LeViT or ReXNet), and a search whose reshapes map channels around a cycle
(Visformer's attention) or multiply them by positions flatten after flatten (MaxViT's and LeViT's)
never settles: it grows until memory runs out. :class:`DependencyGraph` runs Torch-Pruning's own
search, unchanged, with a group that answers the first by a set lookup and stops the second, and
a flatten mapping that refuses to make more indices than the bound; a search that is stopped gives
a group of its root alone, whose :func:`unsettled` says why (the kinds report it as the reason).
Its build stops on a concat or reshape whose widths it cannot infer; that op is left unmapped
instead, as Torch-Pruning means to leave it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch_pruning as tp
from torch_pruning.dependency import graph as tp_graph
from torch_pruning.dependency import index_mapping

#: How often the search may reach one layer (with other indices each time) before it is taken for
#: a search that does not settle.
MAX_VISITS = 32
#: How many channel indices one group may hold (and one flatten make) per index of the model's
#: layers (the sum of their input and output widths; a settled group reaches an index once or
#: twice, and Torch-Pruning's op nodes between layers as often), and at least.
INDICES_PER_LAYER_INDEX, MIN_MAX_INDICES = 4, 1_000_000


class _Unsettled(Exception):
    """The search went past a bound (``where``: the node it was at, or the op)."""


class _IndexedGroup(tp.dependency.group.Group):
    """Torch-Pruning's group, with a set of its items (for ``has_pruning_op``) and the bounds."""

    def __init__(self, max_indices: int) -> None:
        super().__init__()
        self._items: set | None = set()
        self._visits: dict[tuple, int] = {}
        self._indices, self._max_indices = 0, max_indices

    def add_dep(self, dep, idxs) -> None:
        super().add_dep(dep, idxs)
        key = (dep.target, dep.handler)
        self._visits[key] = self._visits.get(key, 0) + 1
        self._indices += len(idxs)
        if self._visits[key] > MAX_VISITS or self._indices > self._max_indices:
            raise _Unsettled(dep.target._name or type(dep.target.module).__name__)
        if self._items is not None:
            self._items.add((*key, tuple(idxs)))

    def __setitem__(self, k, v) -> None:
        super().__setitem__(k, v)
        self._items = None  # an item replaced: fall back to Torch-Pruning's scan

    def add_and_merge(self, dep, idxs) -> None:
        super().add_and_merge(dep, idxs)
        self._items = None  # may have merged into an item in place

    def has_pruning_op(self, dep, idxs) -> bool:
        if self._items is None:
            return super().has_pruning_op(dep, idxs)
        return (dep.target, dep.handler, tuple(idxs)) in self._items


#: Torch-Pruning's index-mapping updates that fail on a width their inference could not find
#: (``None`` or the sentinel ``0``), by name: the concat's ``out_size != sum(chs)`` adds a ``None``
#: (torchvision's Swin-S/B patch merging, DPN) and the reshape's ``in_channels // out_channels``
#: divides by a ``0`` (ShuffleNet's channel shuffle), before the checks that would skip the mapping.
_MAPPING_UPDATES = {"update_concat_index_mapping": TypeError, "update_reshape_index_mapping": ZeroDivisionError}


def _skipping_unknown_widths(update: Callable, error: type[Exception]) -> Callable:
    """``update``, with the op left unmapped (as Torch-Pruning means to leave an op whose widths it
    cannot infer) where it raises ``error``. A group through that op is only as right as the
    exactness check finds it, which every group passes before it is gated."""

    def guarded(graph: tp.DependencyGraph, node) -> None:
        with contextlib.suppress(error):
            update(graph, node)

    return guarded


@contextlib.contextmanager
def _mappings_skipping_unknown_widths() -> Iterator[None]:
    """Torch-Pruning's mapping updates guarded (:func:`_skipping_unknown_widths`) for the block:
    its build and each group's search update the mappings, by name, from ``update_index_mapping``."""
    plain = {name: getattr(index_mapping, name) for name in _MAPPING_UPDATES}
    for name, error in _MAPPING_UPDATES.items():
        setattr(index_mapping, name, _skipping_unknown_widths(plain[name], error))
    try:
        yield
    finally:
        for name, update in plain.items():
            setattr(index_mapping, name, update)


class DependencyGraph(tp.DependencyGraph):
    """Torch-Pruning's dependency graph whose ``get_pruning_group`` is linear and bounded (a search
    that fails inside Torch-Pruning gives its root alone, with the reason), and whose build does not
    fail on a concat or reshape of unknown widths."""

    def build_dependency(self, *args, **kwargs) -> DependencyGraph:
        with _mappings_skipping_unknown_widths():
            return super().build_dependency(*args, **kwargs)

    def get_pruning_group(self, module, pruning_fn, idxs) -> tp.dependency.group.Group:
        bound = self._max_indices()
        flatten = index_mapping._FlattenIndexMapping.__call__

        def bounded_flatten(mapping, indices):
            if not mapping.reverse and len(indices) * mapping._stride > bound:
                raise _Unsettled("a flatten")
            return flatten(mapping, indices)

        # Torch-Pruning builds groups from the name ``Group`` of its graph module and calls its
        # mappings through their class: both are swapped for the call, and put back
        plain_group, tp_graph.Group = tp_graph.Group, lambda: _IndexedGroup(bound)
        index_mapping._FlattenIndexMapping.__call__ = bounded_flatten
        try:
            with _mappings_skipping_unknown_widths():
                return super().get_pruning_group(module, pruning_fn, idxs)
        except _Unsettled as e:
            return self._root_alone(module, pruning_fn, idxs, (
                f"Torch-Pruning's channel search does not settle: it reaches {e} more than {MAX_VISITS} times with "
                f"other channels, or makes over {bound} indices (reshapes that map channels around a cycle or multiply "
                "them by positions)"))  # fmt: skip
        except Exception as e:
            if not _raised_in_torch_pruning(e):
                raise
            first = (str(e).strip().splitlines() or [""])[0][:200]
            return self._root_alone(module, pruning_fn, idxs, f"Torch-Pruning's channel search fails here "
                                    f"({type(e).__name__}: {first})")  # fmt: skip
        finally:
            tp_graph.Group = plain_group
            index_mapping._FlattenIndexMapping.__call__ = flatten

    def _root_alone(self, module, pruning_fn, idxs, reason: str) -> tp.dependency.group.Group:
        root = self.module2node[module]
        group = tp.dependency.group.Group()
        group.add_dep(tp.Dependency(pruning_fn, pruning_fn, source=root, target=root), list(idxs))
        group.unsettled = reason
        return group

    def _max_indices(self) -> int:
        if not hasattr(self, "_bound"):
            layers = [m for m in self.model.modules() if isinstance(m, (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR))]
            widths = sum(p.get_in_channels(m) + p.get_out_channels(m) for m in layers
                         if (p := self.get_pruner_of_module(m)) is not None)  # fmt: skip
            self._bound = max(INDICES_PER_LAYER_INDEX * widths, MIN_MAX_INDICES)
        return self._bound


def _raised_in_torch_pruning(e: BaseException) -> bool:
    """Whether ``e`` was raised in Torch-Pruning's own code (its search's bug, not sss's or torch's)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}torch_pruning{os.sep}" in tb.tb_frame.f_code.co_filename


def unsettled(group: tp.dependency.group.Group) -> str | None:
    """Why a group from :class:`DependencyGraph` is its root alone (its search was stopped, or
    failed inside Torch-Pruning), or None."""
    return getattr(group, "unsettled", None)
