"""sss.compress: a trained ResNet-20 to half its MACs in one call (Fashion-MNIST, CPU).

    python examples/compress_function.py                              # trains a quick dense model first
    python examples/compress_function.py --init runs/demo/dense/model # or starts from the demo's

The call is the ``sss compress`` recipe: one selection epoch that lands on the target, the
exact removal, then fine-tuning; it returns the compact model and the report the command writes.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import sss
from sss.data import load_dataset
from sss.train import TrainConfig, Trainer


def trained_resnet20(init: str | None, quick: bool, out: str) -> torch.nn.Module:
    if init:
        return sss.load(init)
    cfg = TrainConfig(model="resnet20", model_kwargs={"width": 8}, sparsity="none", epochs=1, lr=0.1,
                      train_subset=1000 if quick else 20000, val_size=500, out_dir=f"{out}/dense",
                      channels_last=False)  # fmt: skip
    return Trainer(cfg, progress=not quick).fit(overwrite=True).model


def main(quick: bool = False, init: str | None = None, out: str = "runs/examples/compress") -> dict:
    model = trained_resnet20(init, quick, out)
    train, test = load_dataset("fashion-mnist", True), load_dataset("fashion-mnist", False)
    if quick:
        test = test.subset(np.arange(1000))
    compact, report = sss.compress(model, torch.zeros(1, 1, 28, 28), train, test, target_macs=0.5, epochs=2,
                                   structures="channel", out_dir=f"{out}/half", overwrite=True, val_size=500,
                                   train_subset=1000 if quick else 20000, channels_last=False)  # fmt: skip
    rows = report["models"]
    print(f"trained {rows['trained']['accuracy']:.2f}% at {rows['trained']['macs'] / 1e6:.2f}M MACs -> "
          f"compact {rows['compact']['accuracy']:.2f}% at {rows['compact']['macs'] / 1e6:.2f}M MACs")  # fmt: skip
    sss.save(compact, f"{out}/half/compact_model")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", help="a model saved by sss (e.g. runs/demo/dense/model)")
    parser.add_argument("--quick", action="store_true", help="1000 training and test images instead of 20000/10000")
    args = parser.parse_args()
    main(quick=args.quick, init=args.init)
