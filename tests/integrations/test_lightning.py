"""The Lightning callback: a LightningModule trained with ``lightning.Trainer`` lands on its MAC
target, is removed exactly, resumes from a checkpoint in the middle of the selection, and
writes its numbers to TensorBoard."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sss

pl = pytest.importorskip("lightning.pytorch")
from sss.integrations.lightning import SelectionCallback  # noqa: E402

EXAMPLE = torch.zeros(1, 1, 12, 12)


class Classifier(pl.LightningModule):
    """A ResNet-20 on 12x12 images, trained with SGD."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = sss.models.create("resnet20", num_classes=4, in_channels=1)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def loader() -> torch.utils.data.DataLoader:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 1, 12, 12, generator=gen), torch.randint(0, 4, (32,), generator=gen)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)  # 4 steps an epoch


def fit(root, *, epochs: int = 3, ckpt_path=None, **callback_args) -> tuple[SelectionCallback, Classifier]:
    module = Classifier()
    callback = SelectionCallback(EXAMPLE, model_attr="net", target_macs=0.5, select_for=6, log=lambda line: None,
                                 **callback_args)  # fmt: skip
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=root, every_n_epochs=1, save_top_k=-1)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[callback, checkpoints], default_root_dir=root,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=2,
                         accelerator="cpu", deterministic=True)  # fmt: skip
    trainer.fit(module, loader(), ckpt_path=ckpt_path)
    return callback, module


def test_the_callback_lands_on_the_target_and_removes_exactly(tmp_path):
    dense = sss.count(Classifier().net, EXAMPLE)[0]
    callback, module = fit(tmp_path)
    assert callback.selection.landed and callback.selection.step_count == 6
    macs = sss.count(callback.compact, EXAMPLE)[0]
    assert abs(macs / dense - 0.5) <= 0.5 * 0.02 + 1e-9, macs / dense
    x = torch.randn(4, 1, 12, 12)
    torch.testing.assert_close(callback.compact(x), module.net.eval()(x), rtol=1e-5, atol=1e-5)
    sss.save(callback.compact, tmp_path / "compact")
    torch.testing.assert_close(sss.load(tmp_path / "compact").eval()(x), callback.compact(x))


def test_a_resumed_fit_continues_the_selection(tmp_path):
    _, whole_module = fit(tmp_path / "whole")
    fit(tmp_path / "cut", epochs=1)  # ends after 4 of the selection's 6 steps, with a checkpoint
    (ckpt,) = (tmp_path / "cut").glob("*.ckpt")
    resumed, resumed_module = fit(tmp_path / "cut", ckpt_path=ckpt)
    assert resumed.selection.step_count == 6 and resumed.selection.landed  # as the whole fit's
    for a, b in zip(sss.gates(whole_module.net), sss.gates(resumed_module.net), strict=True):
        torch.testing.assert_close(a.weight, b.weight)


def test_tensorboard_gets_the_selection_scalars_and_histograms(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(tmp_path, tensorboard=True)
    (events,) = {p.parent for p in tmp_path.rglob("events.out.tfevents.*")}
    board = EventAccumulator(str(events)).Reload()
    scalars, histograms = set(board.Tags()["scalars"]), set(board.Tags()["histograms"])
    assert {"sss/zero_factors/channel", "sss/gamma/channel", "sss/compact_macs", "train_loss"} <= scalars
    assert "factors/channel" in histograms
