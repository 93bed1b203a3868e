"""``sss.compress``: the ``sss compress`` recipe as a function. On sss's image datasets it is the
command's own loop (the same settings and seed give the same numbers); on other batches (tuples,
dicts of tensors) a plain loop with the user's loss reaches the same budget."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

import sss
from sss.cli.main import main
from sss.data import load_dataset
from sss.data.datasets import FASHION_MNIST_DIR
from sss.data.idx import read_idx
from sss.recipes import report as report_module

COMMON = {"val_size": 100, "batch_size": 50, "channels_last": False}


def _small_fashion_mnist(folder, train: int = 600, test: int = 500):
    """The first images of the real Fashion-MNIST (Debian's package) as a smaller IDX folder, so
    that both the command and the function evaluate 500 test images, not 10,000."""
    for split, n in (("train", train), ("t10k", test)):
        for part in ("images-idx3", "labels-idx1"):
            array = read_idx(Path(FASHION_MNIST_DIR) / f"{split}-{part}-ubyte.gz")[:n]
            header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            (folder / f"{split}-{part}-ubyte").write_bytes(header + array.astype(np.uint8).tobytes())
    return folder


def test_the_function_gives_the_numbers_of_the_command(tmp_path, monkeypatch):
    # Latency is timed by both (28 s here) and compared by neither: a stand-in clock.
    monkeypatch.setattr(
        report_module, "compare_latency", lambda models, *a, **k: {n: {1: 1.0, 64: 1.0} for n in models}
    )
    data = _small_fashion_mnist(tmp_path)
    save_file(sss.models.create("resnet20", width=8, in_channels=1).state_dict(), str(tmp_path / "w.safetensors"))
    flags = [arg for key, value in COMMON.items() for arg in ("--set", f"{key}={str(value).lower()}")]
    assert main(["compress", "--init", str(tmp_path / "w.safetensors"), "--set", "model_kwargs.width=8",
                 "--target-macs", "0.5", "--epochs", "2", "--data-dir", str(data), "--out", str(tmp_path / "cli"),
                 *flags]) == 0  # fmt: skip
    command = json.loads((tmp_path / "cli" / "report.json").read_text())

    model = sss.models.create("resnet20", width=8, in_channels=1)
    model.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    train, test = load_dataset("fashion-mnist", True, data), load_dataset("fashion-mnist", False, data)
    compact, report = sss.compress(model, torch.zeros(1, 1, 28, 28), train, test, target_macs=0.5, epochs=2,
                                   out_dir=tmp_path / "api", log=lambda line: None, **COMMON)  # fmt: skip
    for name in ("trained", "compact"):
        for key in ("accuracy", "macs", "params", "blocks"):
            assert report["models"][name][key] == command["models"][name][key], (name, key)
    assert report["selection"] == command["selection"]
    assert sss.count(compact, torch.zeros(1, 1, 28, 28))[0] == command["models"]["compact"]["macs"]


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())  # fmt: skip
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def _images(n: int = 128):
    gen = torch.Generator().manual_seed(3)
    return torch.utils.data.TensorDataset(
        torch.randn(n, 1, 8, 8, generator=gen), torch.randint(0, 4, (n,), generator=gen)
    )


def test_tuple_batches_with_the_users_loss_reach_the_budget(tmp_path):
    model, example, calls = SmallNet(), torch.zeros(1, 1, 8, 8), []

    def loss(outputs, batch):
        calls.append(1)
        return F.cross_entropy(outputs, batch[1])

    dense = sss.count(model, example)[0]
    compact, report = sss.compress(model, example, _images(), _images(64), target_macs=0.5, epochs=2, batch_size=16,
                                   loss=loss, out_dir=tmp_path, log=lambda line: None)  # fmt: skip
    macs = sss.count(compact, example)[0]
    assert abs(macs / dense - 0.5) <= 0.5 * 0.02 + 1e-9 and report["models"]["compact"]["macs"] == macs
    assert calls and {"accuracy", "loss"} <= report["models"]["compact"].keys()
    assert sss.count(model, example)[0] == dense  # the user's model is left as it was
    again = sss.load(tmp_path / "compact", base=SmallNet())
    torch.testing.assert_close(again.eval()(example), compact(example))


def test_dict_batches_of_a_hugging_face_model_use_its_own_loss(tmp_path):
    tf = pytest.importorskip("transformers")
    config = tf.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=32, num_labels=3)  # fmt: skip
    model = tf.BertForSequenceClassification(config)
    gen = torch.Generator().manual_seed(4)
    ids, labels = torch.randint(0, 64, (64, 12), generator=gen), torch.randint(0, 3, (64,), generator=gen)
    data = [{"input_ids": i, "labels": y} for i, y in zip(ids, labels, strict=True)]
    example = ids[:1]
    dense = sss.count(model, example)[0]
    compact, report = sss.compress(model, example, data, data[:32], target_macs=0.7, structures="channel,head",
                                   epochs=2, batch_size=16, distill=2.0, out_dir=tmp_path,
                                   log=lambda line: None)  # fmt: skip
    macs = sss.count(compact, example)[0]
    assert abs(macs / dense - 0.7) <= 0.7 * 0.02 + 1e-9
    assert "accuracy" in report["models"]["compact"] and len(report["history"]) == 2
