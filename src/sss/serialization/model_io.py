"""``sss.save`` / ``sss.load``: any model, gated, pruned or plain, as safetensors weights plus a
JSON spec holding its edit history (no pickle)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from sss.errors import CheckpointError, UntrustedCodeError
from sss.models.recorded import TrustCode, create_recorded
from sss.serialization.layer_sizes import layer_sizes, resize_layers
from sss.serialization.state import atomic_write, check_digest, tensor_digest
from sss.structures.boundary import model_errors
from sss.structures.gate import gates
from sss.structures.history import history
from sss.structures.replay import replay

FORMAT = "sss-model/3"  # /3: a SHA-256 of the weights and of the history, checked at load
_READABLE = ("sss-model/2", FORMAT)


def _spec_digest(spec: dict) -> str:
    body = {k: v for k, v in spec.items() if k != "weights_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _paths(path: str | Path) -> tuple[Path, Path]:
    base = Path(path)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def is_saved_model(path: str | Path) -> bool:
    """Whether ``path`` names a model written by :func:`save` (both of its files exist)."""
    return all(p.is_file() for p in _paths(path))


def save(model: nn.Module, path: str | Path) -> None:
    """Saves ``model`` as ``path.safetensors`` (weights and buffers) + ``path.json``.

    The JSON holds the zoo name and builder keywords (for models made by
    :func:`sss.models.create`) and the model's edit history: what was gated, ignored, cut and
    removed. :func:`load` replays that history to rebuild the architecture, for zoo models
    and, given the unpruned ``base``, for any other model. The sizes of its convolutions,
    linear layers and norms are saved too, so a model pruned by another tool (Torch-Pruning)
    loads with its own widths.
    """
    weights_path, spec_path = _paths(path)
    with model_errors(model, "saving"):
        spec = {
            "format": FORMAT,
            "model": getattr(model, "sss_spec", None),
            "history": history(model),
            "gated": sorted({g.kind for g in gates(model)}),  # informational: replay re-creates the gates
            # What the history cannot know: layers resized outside sss (Torch-Pruning, by hand).
            "sizes": layer_sizes(model),
        }
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    spec["weights_sha256"] = tensor_digest(tensors)
    meta = {"format": FORMAT, "sha256": spec["weights_sha256"], "spec_sha256": _spec_digest(spec)}
    atomic_write(weights_path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    atomic_write(spec_path, lambda tmp: Path(tmp).write_text(json.dumps(spec, indent=2) + "\n"))


def load(
    path: str | Path,
    base: nn.Module | Callable[[], nn.Module] | None = None,
    map_location: str | torch.device = "cpu",
    *,
    trust_code: TrustCode = False,
) -> nn.Module:
    """Rebuilds a model saved by :func:`save`; never unpickles anything, and runs no code the
    file names unless told to.

    Args:
        path: What was given to :func:`save` (with or without ``.safetensors``/``.json``).
        base: The unpruned model, or a callable that builds it (``torchvision.models.resnet50``,
            your class), for models not built by :func:`sss.models.create`. Its weights do not
            matter; it is copied, not changed. Zoo models need none.
        map_location: The device of the returned model.
        trust_code: Whether a model the file says was built by a user's factory
            (``pkg.module:factory``) may be imported and called to rebuild it: ``True``, or the
            factory names you trust. By default only zoo models are rebuilt from the file
            alone: a file could name any function (``os:system``). Passing ``base`` is the
            other way to rebuild a user's model.

    Raises:
        UntrustedCodeError: The file names a factory that ``trust_code`` does not allow.
        CheckpointError: A file is missing or corrupt, the history does not apply to the base
            (naming the first edit that does not), or the weights do not fit.
    """
    if Path(path).is_dir():
        inside = [f"{Path(path) / name}" for name in ("compact", "model") if is_saved_model(Path(path) / name)]
        hint = f"give a model in it: {' or '.join(inside)}" if inside else "give the path sss.save wrote (no suffix)"
        raise CheckpointError(f"{path} is a folder, not a saved model; {hint}")
    weights_path, spec_path = _paths(path)
    for p in (weights_path, spec_path):
        if not p.is_file():
            raise CheckpointError(f"{p} not found; sss.save writes both {weights_path.name} and {spec_path.name}")
    try:
        spec = json.loads(spec_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{spec_path} is not valid JSON ({e}); re-save the model with sss.save") from e
    if not isinstance(spec, dict) or spec.get("format") not in _READABLE or not isinstance(spec.get("history"), list):
        raise CheckpointError(f"{spec_path} is not an {FORMAT} spec (written by another version of sss, or not by "
                              "sss.save); re-save the model with this version")  # fmt: skip
    zoo = spec.get("model")
    try:
        if base is not None:
            model = copy.deepcopy(base) if isinstance(base, nn.Module) else base()
        elif zoo is not None:
            model = create_recorded(zoo, trust_code=trust_code, source=str(spec_path))
        else:
            raise CheckpointError(f"{weights_path.with_suffix('')} was saved from a model outside the zoo: pass its "
                                  "unpruned form, sss.load(path, base=MyModel())")  # fmt: skip
        model = replay(model, spec["history"])
        resize_layers(model, spec.get("sizes") or {})
    except (CheckpointError, UntrustedCodeError):
        raise
    except Exception as e:
        raise CheckpointError(f"cannot rebuild the model saved at {weights_path.with_suffix('')}: {e}") from e
    meta = _check_weights(model, weights_path)
    tensors = load_file(str(weights_path), device="cpu")
    if spec["format"] != "sss-model/2":  # the first format carried no digest
        if meta.get("spec_sha256") != _spec_digest(spec):
            raise CheckpointError(
                f"{spec_path} does not match the digest written with {weights_path.name} (a "
                "changed byte, or files of two saves mixed); restore both from one sss.save"
            )
        check_digest(tensors, meta.get("sha256"), weights_path)
    # safetensors keeps no state-dict metadata: each module's version is the rebuilt model's own
    # (torchvision's MNASNet refuses a state dict without one).
    buffers = _non_persistent_buffers(model)
    state = OrderedDict((k, v) for k, v in tensors.items() if k not in buffers)
    state._metadata = getattr(model.state_dict(), "_metadata", None)  # type: ignore[attr-defined]
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        for k in tensors.keys() & buffers.keys():
            buffers[k].copy_(tensors[k])
    if isinstance(zoo, dict):
        model.sss_spec = zoo
    return model.to(map_location).eval()


def _check_weights(model: nn.Module, weights_path: Path) -> dict[str, str]:
    """Compares the file's tensor names and shapes with the rebuilt model before loading any;
    returns the file's metadata."""
    try:
        with safe_open(str(weights_path), "pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118  (not a dict)
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file ({e}); re-save the model") from e
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected |= {k: tuple(v.shape) for k, v in _non_persistent_buffers(model).items() if k in shapes}
    missing, extra = sorted(expected.keys() - shapes.keys()), sorted(shapes.keys() - expected.keys())
    wrong = [f"{k}: file {shapes[k]}, model {v}" for k, v in expected.items() if k in shapes and shapes[k] != v]
    if missing or extra or wrong:
        problems = [f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "",
                    f"shapes differ ({'; '.join(wrong[:3])})" if wrong else ""]  # fmt: skip
        raise CheckpointError(
            f"the weights in {weights_path} do not fit the rebuilt model: "
            + ", ".join(p for p in problems if p)
            + " (a base other than the saved model's?)"
        )
    return meta


def _non_persistent_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The buffers of ``model`` outside its state (``persistent=False``), by state-dict name. A
    file may hold them: a copy of a traced block (a ``torch.fx.GraphModule``, which registers every
    buffer it copies as persistent) saved them; they load like the state, shapes checked."""
    return {f"{path}.{name}" if path else name: m._buffers[name]
            for path, m in model.named_modules() for name in m._non_persistent_buffers_set
            if m._buffers.get(name) is not None}  # fmt: skip
