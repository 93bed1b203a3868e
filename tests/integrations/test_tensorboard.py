"""TensorBoard event files: sss's own loop (``tensorboard: true`` / ``--tensorboard``) and the
Hugging Face callback write the scalars and factor histograms of a selection."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import synthetic_dataset
from sss.train import TrainConfig, Trainer

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def _tags(folder) -> tuple[set[str], set[str], EventAccumulator]:
    (events,) = {p.parent for p in folder.rglob("events.out.tfevents.*")}
    board = EventAccumulator(str(events)).Reload()
    return set(board.Tags()["scalars"]), set(board.Tags()["histograms"]), board


def test_the_training_loop_writes_each_epoch(tmp_path):
    cfg = TrainConfig(model="resnet20", model_kwargs={"width": 4}, val_size=64, epochs=2, batch_size=32, lr=0.05,
                      gamma=0.05, structures=["block", "channel"], out_dir=str(tmp_path / "run"), channels_last=False,
                      tensorboard=True)  # fmt: skip
    Trainer(cfg, train_data=synthetic_dataset(320), log=lambda line: None, progress=False).fit()
    scalars, histograms, board = _tags(tmp_path / "run" / "tensorboard")
    assert {"train_loss", "val_acc", "lr", "compact_macs", "zero_factors/block", "zero_factors/channel",
            "gamma/block", "gamma/channel"} <= scalars  # fmt: skip
    assert {"factors/block", "factors/channel"} <= histograms
    assert [e.step for e in board.Scalars("val_acc")] == [1, 2]


def test_tensorboard_is_off_by_default(tmp_path):
    cfg = TrainConfig(model="resnet20", model_kwargs={"width": 4}, val_size=64, epochs=1, batch_size=32,
                      out_dir=str(tmp_path / "run"), channels_last=False)  # fmt: skip
    Trainer(dataclasses.replace(cfg), train_data=synthetic_dataset(128), log=lambda line: None, progress=False).fit()
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_the_hugging_face_callback_writes_at_its_logging_steps(tmp_path):
    tf = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from sss.integrations.huggingface import SelectionCallback

    config = tf.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=32, num_labels=3)  # fmt: skip
    model = tf.BertForSequenceClassification(config)
    ids = torch.randint(0, 64, (32, 12), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": i, "labels": torch.tensor(k % 3)} for k, i in enumerate(ids)]
    callback = SelectionCallback(model, ids[:1], structures="channel,head", target_macs=0.7, tensorboard=True,
                                 log=lambda line: None)  # fmt: skip
    args = tf.TrainingArguments(str(tmp_path), per_device_train_batch_size=8, max_steps=8, logging_steps=2,
                                use_cpu=True, report_to=[], disable_tqdm=True, save_strategy="no")  # fmt: skip
    tf.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
    scalars, histograms, _ = _tags(tmp_path / "runs" / "sss")
    assert {"sss/zero_factors/channel", "sss/zero_factors/head", "sss/gamma/channel", "sss/compact_macs"} <= scalars
    assert {"factors/channel", "factors/head"} <= histograms
    assert callback.saved_as in ("pretrained", "sss")
