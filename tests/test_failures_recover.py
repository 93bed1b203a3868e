"""After a failure the advice works, a changed byte is caught, and bad input is one line:
image folders checked before the first step, a rerun after an epoch-1 failure, suspect
checkpoints not kept, digests on model files and checkpoints, and the CLI's messages."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
from PIL import Image

import sss
from conftest import synthetic_dataset
from sss.cli.main import main
from sss.data import ArrayDataset, load_dataset
from sss.serialization import load_state, save_state
from sss.serialization.state import atomic_write
from sss.train import CHECKPOINT, load_config
from sss.train.checks import suspect_loss
from test_reliability import _cfg, _fit  # the same tiny run as the other reliability tests


# -- image folders: every split checked before the first step ------------------------------
def _image_folder(root, val_classes=("a", "b"), train_classes=("a", "b")):
    for split, classes in (("train", train_classes), ("val", val_classes)):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for k in range(2):
                Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)).save(root / split / name / f"{k}.png")
    return root


_DAMAGE = {
    "zero-byte": ({}, r"1 unreadable image\(s\) in .*val.*0\.png"),
    "extra": ({"val_classes": ("a", "b", "c")}, r"val has class folders \['c'\] that the training split does not have"),
    "missing": ({"val_classes": ("a",)}, r"val .* lacks \['b'\]"),
    "case": ({"val_classes": ("A", "b")}, r"class folders \['A'\] .* lacks \['a'\] \(names are case-sensitive\)"),
    "empty-train": ({}, r"class folder\(s\) \['b'\] of .*train hold no images"),
}


@pytest.mark.parametrize("damage", list(_DAMAGE))
def test_a_bad_image_folder_is_refused_when_the_training_split_loads(tmp_path, damage):
    layout, message = _DAMAGE[damage]
    root = _image_folder(tmp_path, **layout)
    if damage == "zero-byte":
        (root / "val" / "a" / "0.png").write_bytes(b"")
    if damage == "empty-train":
        for f in (root / "train" / "b").iterdir():
            f.unlink()
    with pytest.raises(sss.DataError, match=message):
        load_dataset("imagefolder", True, root, image_size=8)


def test_unreadable_images_can_be_left_out_up_front(tmp_path):
    root = _image_folder(tmp_path)
    (root / "train" / "a" / "0.png").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"leaving out 1 unreadable image"):
        data = load_dataset("imagefolder", True, root, image_size=8, on_bad_image="skip")
    assert len(data) == 3 and data.labels.tolist() == [0, 1, 1]


# -- the advice after a failure works --------------------------------------------------------
def test_after_an_epoch_1_nan_the_advised_rerun_works(tmp_path):
    clean = synthetic_dataset(128)
    images = clean.images.astype(np.float32)
    images[:] = np.nan
    poisoned = ArrayDataset(images, clean.labels, mean=clean.mean, std=clean.std)
    with pytest.raises(sss.TrainingDivergedError, match=r"No checkpoint was written.*rerun the same command") as e:
        _fit(_cfg(tmp_path), poisoned)
    assert "--resume" not in str(e.value)
    result, lines = _fit(_cfg(tmp_path), clean)  # the same folder, as the message says
    assert len(result.history) == 1 and any("holds no finished epoch" in line for line in lines)


def test_suspect_loss_marks_epochs_orders_of_magnitude_above_the_best():
    history = [{"val_loss": 0.5}, {"val_loss": 0.3}]
    assert suspect_loss(0.9, history) is None and suspect_loss(1e6, []) is None
    assert "over 100x the best so far (0.3)" in suspect_loss(1e12, history)


def test_a_suspect_epoch_does_not_replace_the_checkpoint(tmp_path, monkeypatch):
    import sss.train.engine as engine

    real, calls = engine.evaluate, []

    def exploding(model, data, batch_size):
        acc, loss = real(model, data, batch_size)
        calls.append(loss)
        return (acc, loss) if len(calls) == 1 else (acc, loss * 1e9)

    monkeypatch.setattr(engine, "evaluate", exploding)
    _, lines = _fit(_cfg(tmp_path, epochs=2))
    assert load_state(tmp_path / "run" / CHECKPOINT)["epoch"] == 1
    assert any("the checkpoint of epoch 1 is kept, not replaced" in line for line in lines)


# -- digests -----------------------------------------------------------------------------------
def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # inside the last tensor's bytes
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_a_model_file_is_refused(tmp_path):
    compact = sss.prune(sss.attach(sss.models.create("resnet20", width=4), torch.zeros(1, 3, 8, 8)))
    sss.save(compact, tmp_path / "compact")
    sss.load(tmp_path / "compact")
    _flip_last_byte(tmp_path / "compact.safetensors")
    with pytest.raises(sss.CheckpointError, match=r"compact\.safetensors is corrupt"):
        sss.load(tmp_path / "compact")
    assert main(["eval", str(tmp_path / "compact")]) == 2


def test_a_changed_history_is_refused(tmp_path):
    sss.save(sss.prune(sss.attach(sss.models.create("resnet20", width=4))), tmp_path / "m")
    spec = tmp_path / "m.json"
    spec.write_text(spec.read_text().replace('"block"', '"blocK"', 1))
    with pytest.raises(sss.CheckpointError, match=r"m\.json does not match the digest"):
        sss.load(tmp_path / "m")


def test_a_flipped_byte_in_a_checkpoint_is_refused_at_resume(tmp_path):
    _fit(_cfg(tmp_path))
    _flip_last_byte(tmp_path / "run" / CHECKPOINT)
    with pytest.raises(sss.CheckpointError, match=r"checkpoint\.safetensors is corrupt"):
        _fit(_cfg(tmp_path, epochs=2), resume=True)


def test_a_full_disk_is_one_error_and_keeps_the_old_file(tmp_path):
    save_state({"a": torch.ones(2)}, tmp_path / "s.safetensors")

    def full(_tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(sss.CheckpointError, match=r"cannot write .*No space left.*previous s\.safetensors is intact"):
        atomic_write(tmp_path / "s.safetensors", full)
    assert torch.equal(load_state(tmp_path / "s.safetensors")["a"], torch.ones(2))


# -- one-line errors ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["target_macs=1.5"], r"target_macs 1.5 is ambiguous"),
        (["target_macs=0.0.5"], r"target_macs '0.0.5' is neither"),
        (["target_params=500"], r"target_params 500 is ambiguous"),
    ],
)
def test_ambiguous_targets_are_refused_by_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_a_target_at_or_above_dense_says_so(tmp_path):
    with pytest.raises(ValueError, match=r"target_macs .* is not below the dense model's"):
        _fit(_cfg(tmp_path, target_macs="1e9"))


def test_cli_messages(tmp_path, capsys):
    assert main(["train", "--set", "target_macs=0.5", "--target-params", "2k", "--out", str(tmp_path)]) == 2
    assert "note: --target-params replaces --set target_macs=..." in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prune", "x", "--out", "y", "--threshold", "-1"])
    assert "must be a number >= 0" in capsys.readouterr().err
    gated = sss.attach(sss.models.create("lenet5"), torch.zeros(1, 1, 28, 28), ("channel",))
    sss.save(gated, tmp_path / "gated")
    assert main(["prune", str(tmp_path / "gated"), "--out", str(tmp_path / "c"), "--input-shape", "3", "9", "9"]) == 2
    err = capsys.readouterr().err
    assert "does not run on an input of shape 3 9 9 (it was attached with 1 28 28)" in err and "Traceback" not in err


def test_export_without_onnx_is_one_line(tmp_path, monkeypatch, capsys):
    import importlib.util

    sss.save(sss.prune(sss.attach(sss.models.create("resnet20", width=4))), tmp_path / "m")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    assert main(["export", str(tmp_path / "m"), "--out", str(tmp_path / "m.onnx"), "--input-shape", "3", "8", "8"]) == 2
    assert "needs the onnx package: pip install onnx" in capsys.readouterr().err


def test_an_out_of_range_kept_index_names_the_damage():
    from sss.structures.history import history
    from sss.structures.replay import replay

    gated = sss.attach(sss.models.create("lenet5"), torch.zeros(1, 1, 28, 28), ("channel",))
    with torch.no_grad():
        sss.gates(gated)[0].weight[:3] = 0
    edits = history(sss.prune(gated))
    cut = next(e for e in edits if e["op"] == "cut")
    cut["kept"][-1] = cut["width"]
    with pytest.raises(ValueError, match=r"keeps (out|in) indices \[\d+\] of .*which has only"):
        replay(sss.models.create("lenet5"), edits)
