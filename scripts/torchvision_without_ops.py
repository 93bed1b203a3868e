"""Let PyPI's torchvision import beside a CPU-only torch build (dev environment only).

PyPI's torchvision wheels link their C++ ops against torch's CUDA libraries, so beside the
CPU wheel of torch its ``_C`` extension does not load. torchvision is written to run
without its ops (``extension._has_ops()`` is False, every op raises a clear error when
called), except that ``_meta_registrations`` registers fake kernels for ``nms`` and
``qnms`` unguarded, which raises "operator torchvision::nms does not exist" at import.
This hook declares those two schemas, with no kernel, just before torchvision is first
imported; classification models (all that sss's tests and sweep build) never call them.
``scripts/setup.sh`` installs it as ``sss_torchvision_without_ops`` with a ``.pth`` line that
imports it, only where torchvision fails that way; sss itself never imports it.
"""

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

_library = None  # the torch.library.Library holding the schemas: they live as long as it does

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


class _DeclareOpsFirst(importlib.abc.MetaPathFinder):
    """Declares the schemas on the first ``import torchvision``, then steps aside."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        import torch  # only now: torch is not imported at every interpreter start

        global _library
        _library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS:
            _library.define(schema)
        return None  # the normal finders import torchvision itself


sys.meta_path.insert(0, _DeclareOpsFirst())
