"""A LightningModule pruned inside ``lightning.Trainer`` with one callback (Fashion-MNIST, CPU).

    python examples/lightning_module.py

Lightning's own ``ModelPruning`` masks weights; this callback removes channels: the compact
model at the end is a plain, smaller ``nn.Module``. Checkpoints hold the selection, so
``trainer.fit(module, loader, ckpt_path=...)`` continues it; the selection's numbers go to the
Trainer's TensorBoard logger (``tensorboard --logdir runs/examples/lightning``).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

import sss
from sss.data import iterate_batches, load_dataset
from sss.integrations.lightning import SelectionCallback


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = sss.models.create("resnet20", width=8, in_channels=1)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, nesterov=True)


def main(quick: bool = False, out: str = "runs/examples/lightning") -> SelectionCallback:
    torch.manual_seed(0)
    data = load_dataset("fashion-mnist", True)
    gen = torch.Generator().manual_seed(0)
    x, y = next(iterate_batches(data, 1000 if quick else 10000, shuffle=True, generator=gen))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=100, shuffle=True)
    module, example = Classifier(), torch.zeros(1, 1, 28, 28)
    dense = sss.count(module.net, example)[0]
    callback = SelectionCallback(example, model_attr="net", structures="channel", target_macs=0.5, select_for=0.5,
                                 from_trained=False, tensorboard=True)  # fmt: skip
    trainer = pl.Trainer(max_epochs=2, callbacks=[callback], default_root_dir=out, accelerator="cpu",
                         enable_progress_bar=not quick, log_every_n_steps=5)  # fmt: skip
    trainer.fit(module, loader)
    print(f"dense {dense / 1e6:.2f}M MACs -> compact {sss.count(callback.compact, example)[0] / 1e6:.2f}M MACs")
    sss.save(callback.compact, f"{out}/compact")
    return callback


if __name__ == "__main__":
    main()
