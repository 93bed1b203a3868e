"""``sss.compress``: the ``sss compress`` recipe as one function call, on the user's own model.

Trained weights in, the compact model and a report out. Images in sss's own
:class:`~sss.data.ArrayDataset` (what ``sss.data.load_dataset`` gives) go through the very loop
``sss compress`` runs (:class:`~sss.train.Trainer`, one selection epoch, the landing, the
fine-tune), so the same settings and seed give the same numbers as the command. Anything else
a ``DataLoader`` takes (tuples, dicts of tensors as Hugging Face datasets give them), with the
user's loss, goes through :func:`~sss.recipes.compress_loop.compress_batches`: the same
selection, driven by :class:`~sss.integrations.Selection` in a plain loop.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from sss.data import ArrayDataset
from sss.integrations.selection import SelectionSettings, kinds_of
from sss.recipes.compress import DEFAULTS, CompressConfig, write_report
from sss.recipes.compress_loop import BatchLoss, compress_batches
from sss.recipes.report import compare_models
from sss.train import Trainer


@dataclass
class GivenModelConfig(CompressConfig):
    """A compress config whose ``model`` is the user's model object, not a name: nothing to look
    up in the registries (``model`` only labels the run)."""

    def model_problems(self) -> list[str]:
        return []

    @property
    def from_trained(self) -> bool:
        """The user's model is trained: ``factor_init``/``steer`` resolve as ``sss compress --init`` does."""
        return True


class GivenModelTrainer(Trainer):
    """The compress loop on a model object: :meth:`create_model` hands over (a copy of) it."""

    def __init__(self, cfg: GivenModelConfig, network: nn.Module, **kwargs) -> None:
        self.network = network
        super().__init__(cfg, **kwargs)

    def create_model(self, data: ArrayDataset) -> nn.Module:
        return copy.deepcopy(self.network)


def compress(model: nn.Module, example: Any, train_data, val_data=None, *,
             target_macs: float | str | None = None, target_params: float | str | None = None,
             target_latency: float | str | None = None, structures: str | Sequence[str] = ("channel",),
             epochs: int = 4, lr: float = 0.01, batch_size: int = 128, loss: BatchLoss | None = None,
             distill: float | None = None, seed: int = 0, out_dir: str | Path = "runs/compress",
             overwrite: bool = False, log: Callable[[str], None] = print,
             **options: Any) -> tuple[nn.Module, dict]:  # fmt: skip
    """Compresses a trained model to a budget: one selection epoch (factors from the structures'
    magnitudes, steered by distance to the target), the landing inside ±2% of it, the removal of
    the zero structures (exact), and ``epochs - 1`` epochs of fine-tuning the compact model.

    Args:
        model: The trained model (left as it is: the recipe works on a copy).
        example: One input batch, as the model's forward takes it positionally (an image batch,
            token ids), for tracing and counting.
        train_data: An :class:`~sss.data.ArrayDataset` (the CLI's loop, same numbers as
            ``sss compress``), or a torch ``Dataset``/``DataLoader`` of ``(inputs, targets)``
            tuples or of dicts (a model output with ``.loss``, as Hugging Face models give with
            ``labels``, is the default loss).
        val_data: What the report measures both models on (accuracy where batches have labels).
        target_macs / target_params / target_latency: The budget (one of them): a fraction of
            the dense model (``0.5``) or a count (``"18M"``); latency only for ArrayDatasets.
        structures: The kinds that get factors (``"channel"``, ``"channel,head"``, ...).
        epochs: Epochs in all: the first selects, the rest fine-tune (at least 2).
        lr: The learning rate (cosine over the epochs; SGD with Nesterov momentum).
        batch_size: Images (or examples) per batch.
        loss: ``loss(outputs, batch) -> Tensor`` for other batches (default: cross-entropy on
            ``(inputs, targets)``, or the output's ``.loss`` for dicts).
        distill: A temperature: distil from the trained model (the loss then mixes in
            ``T²·KL`` of the softened logits, half and half).
        seed: Seeds the data order and everything random.
        out_dir: The run folder (checkpoints, the compact model, ``report.json``/``report.md``).
        overwrite: Replace a run already in ``out_dir`` (by default it is refused).
        log: Where the progress lines go.
        **options: Further :class:`~sss.train.TrainConfig` fields for ArrayDatasets
            (``val_size``, ``round_to``, ``weight_decay``, ``amp``, ...).

    Returns:
        ``(compact, report)``: the plain compact model (eval mode) and the report (MACs, params,
        accuracy of the trained and the compact model; for ArrayDatasets latency too).
    """
    if target_macs is None and target_params is None and target_latency is None:
        raise ValueError("compress needs a budget: target_macs, target_params or target_latency")
    if isinstance(train_data, ArrayDataset):
        return _compress_images(model, train_data, val_data, out_dir, overwrite, log, {
            **DEFAULTS, "structures": list(kinds_of(structures)), "epochs": epochs, "lr": lr, "batch_size": batch_size,
            "distill": distill, "seed": seed, "target_macs": target_macs, "target_params": target_params,
            "target_latency": target_latency, **options})  # fmt: skip
    if target_latency is not None:
        raise ValueError("target_latency needs image batches (an sss ArrayDataset); aim at target_macs instead")
    if options:
        raise ValueError(f"options {sorted(options)} apply to ArrayDatasets only; other data takes the keywords "
                         "of sss.compress")  # fmt: skip
    settings = SelectionSettings(kinds_of(structures), target_macs, target_params, round_to=1)
    return compress_batches(model, example, train_data, val_data, settings, epochs=epochs, lr=lr,
                            batch_size=batch_size, loss=loss, distill=distill, seed=seed, out_dir=Path(out_dir),
                            log=log)  # fmt: skip


def _compress_images(model: nn.Module, train_data: ArrayDataset, val_data: ArrayDataset | None, out_dir, overwrite,
                     log, fields: dict) -> tuple[nn.Module, dict]:  # fmt: skip
    spec = getattr(model, "sss_spec", None) or {}
    name = spec.get("name", f"{type(model).__module__}:{type(model).__qualname__}")
    kwargs = {k: v for k, v in spec.get("kwargs", {}).items() if k not in ("num_classes", "in_channels")}
    known = {f.name for f in dataclasses.fields(GivenModelConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"unknown compress options {unknown}; they are TrainConfig fields: {sorted(known)}")
    cfg = GivenModelConfig(**{**fields, "model": name, "model_kwargs": kwargs, "out_dir": str(out_dir)})
    trained = copy.deepcopy(model).eval()
    result = GivenModelTrainer(cfg, model, train_data=train_data, log=log, progress=False).fit(overwrite=overwrite)
    models = {"trained": trained, "compact": result.compact}
    rows = compare_models(models, val_data, latency_of=tuple(models)) if val_data is not None else {}
    report = write_report(rows, result.history, Path(cfg.out_dir), title=f"{name}: selection, landing, fine-tune",
                          log=log)  # fmt: skip
    return result.compact, report
