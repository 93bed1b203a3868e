"""Weights given to ``--init`` (and ``compress --init``, ``gal --teacher``) that cannot start a run
are named in one line before training starts: an empty file or state dict, a directory, a
safetensors file under another suffix (read by its content), NaN/inf weights, integer tensors
for floating parameters."""

from __future__ import annotations

import io

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import sss
from sss.cli.main import main
from sss.serialization.weights import load_weights, read_state_dict

#: The cheapest `sss train` on the installed Fashion-MNIST: the errors fire before any of it trains.
COMMON = ["--dataset", "fashion-mnist", "--set", "model_kwargs.width=8", "--epochs", "1", "--set", "train_subset=64",
          "--set", "val_size=32", "--set", "batch_size=32", "--set", "channels_last=false"]  # fmt: skip


def _lenet() -> nn.Module:
    return sss.models.create("lenet5")


def _run(tmp_path, capsys, argv: list[str]) -> str:
    """Runs the CLI, which must fail in one line before training; returns its stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing trained
    return err


def test_an_empty_file_or_state_dict_is_named(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(sss.CheckpointError, match=r"empty\.pt is empty \(0 bytes\).*save the weights again"):
        read_state_dict(tmp_path / "empty.pt")
    for name, obj in [("empty_dict.pt", {}), ("nested.pt", {"state_dict": {}})]:
        torch.save(obj, tmp_path / name)
        with pytest.raises(sss.CheckpointError, match=rf"{name} holds an empty state dict.*torch\.save"):
            load_weights(_lenet(), tmp_path / name)
    save_file({}, str(tmp_path / "empty.safetensors"))
    with pytest.raises(sss.CheckpointError, match="holds an empty state dict"):
        read_state_dict(tmp_path / "empty.safetensors")


@pytest.mark.parametrize("content", [b"\x80\x02", b"\x80", b"hello\n", b"PK\x03\x04" + bytes(40)],
                         ids=["eof", "index", "text", "zip"])  # fmt: skip
def test_a_corrupt_file_is_named_with_the_first_line_of_its_error(tmp_path, content):
    """A cut pickle raises EOFError with no message (once an IndexError here), or IndexError."""
    (tmp_path / "w.pt").write_bytes(content)
    with pytest.raises(sss.CheckpointError, match=r"cannot read weights from .*w\.pt \(\w+.*\); give a \.safetensors"):
        read_state_dict(tmp_path / "w.pt")


def test_a_directory_names_the_weight_files_inside_it(tmp_path):
    folder = tmp_path / "dense"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    with pytest.raises(sss.CheckpointError, match=r"dense is a directory with no weights file \(\.safetensors, \.pt"):
        read_state_dict(folder)
    for name in ("b.pt", "a.safetensors", "c.pth", "d.bin"):
        (folder / name).write_bytes(b"x")
    with pytest.raises(sss.CheckpointError, match=r"dense is a directory: give the weights file inside it") as info:
        read_state_dict(folder)
    message = str(info.value)
    assert str(folder / "a.safetensors") in message and str(folder / "c.pth") in message
    assert "d.bin" not in message and "(4 in all)" in message and "not found" not in message


def test_safetensors_are_read_by_content_whatever_the_suffix(tmp_path):
    model = _lenet()
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    for name in ("pytorch_model.bin", "weights.pt", "noext"):
        save_file(state, str(tmp_path / name))
        read = read_state_dict(tmp_path / name)
        assert read.keys() == state.keys() and all(torch.equal(read[k], v) for k, v in state.items())
    fresh = _lenet()
    load_weights(fresh, tmp_path / "pytorch_model.bin")
    assert torch.equal(fresh.state_dict()["classifier.3.bias"], state["classifier.3.bias"])
    buf = io.BytesIO()  # and a torch.save'd file is still read as one, named .bin or not
    torch.save(state, buf)
    (tmp_path / "torch.bin").write_bytes(buf.getvalue())
    assert torch.equal(read_state_dict(tmp_path / "torch.bin")["classifier.3.bias"], state["classifier.3.bias"])


def test_nan_or_inf_weights_name_the_file_and_the_tensors(tmp_path):
    model = _lenet()
    state = model.state_dict()
    names = [k for k, v in state.items() if v.is_floating_point()]
    for i, k in enumerate(names):
        if i % 2 == 0:
            state[k] = state[k].clone()
            state[k].view(-1)[0] = float("nan") if i % 4 == 0 else float("inf")
    torch.save(state, tmp_path / "diverged.pt")
    bad = names[::2]
    with pytest.raises(sss.CheckpointError, match=r"diverged\.pt hold NaN/inf in \[.*\] \(\d+ tensors\): the file "
                       r"was saved from a diverged run; give the weights of an earlier epoch") as info:  # fmt: skip
        load_weights(_lenet(), tmp_path / "diverged.pt")
    assert str(bad[:3]) in str(info.value) and f"({len(bad)} tensors)" in str(info.value)


class _Masked(nn.Module):
    """A model with a legitimately non-finite buffer (an additive attention mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.register_buffer("mask", torch.full((4, 4), float("-inf")).triu(1))


def test_a_buffer_non_finite_in_the_model_too_loads(tmp_path):
    state = _Masked().state_dict()
    save_file(state, str(tmp_path / "masked.safetensors"))
    model = _Masked()
    load_weights(model, tmp_path / "masked.safetensors")
    assert torch.equal(model.proj.weight, state["proj.weight"])


def test_a_tensor_of_another_kind_of_dtype_is_named_and_other_precisions_cast(tmp_path):
    state = _lenet().state_dict()
    ints = {**state, "features.0.weight": torch.ones_like(state["features.0.weight"], dtype=torch.int64)}
    save_file(ints, str(tmp_path / "ints.safetensors"))
    with pytest.raises(sss.CheckpointError, match=r"'features\.0\.weight' is torch\.int64 in the file but "
                       r"torch\.float32 in the model; give the file saved with torch\.save"):  # fmt: skip
        load_weights(_lenet(), tmp_path / "ints.safetensors")
    bn = sss.models.create("resnet20", width=8, in_channels=1).state_dict()
    floats = {**bn, "stem.1.num_batches_tracked": torch.tensor(3.0)}  # vice versa: a float for an int64 buffer
    torch.save(floats, tmp_path / "floats.pt")
    with pytest.raises(sss.CheckpointError, match=r"'stem\.1\.num_batches_tracked' is torch\.float32 in the file but "
                       r"torch\.int64 in the model"):  # fmt: skip
        load_weights(sss.models.create("resnet20", width=8, in_channels=1), tmp_path / "floats.pt")
    half = {k: v.half() if v.is_floating_point() else v for k, v in bn.items()}  # fp16 into fp32: cast
    torch.save(half, tmp_path / "half.pt")
    model = sss.models.create("resnet20", width=8, in_channels=1)
    load_weights(model, tmp_path / "half.pt")
    assert model.stem[0].weight.dtype == torch.float32
    assert torch.equal(model.stem[0].weight, half["stem.0.weight"].float())
    assert int(model.stem[1].num_batches_tracked) == int(bn["stem.1.num_batches_tracked"])


def test_the_cli_names_an_empty_file_and_a_directory_before_training(tmp_path, capsys):
    (tmp_path / "empty.pt").write_bytes(b"")
    train = ["train", "--model", "resnet20", "--out", str(tmp_path / "run"), *COMMON]
    err = _run(tmp_path, capsys, [*train, "--init", str(tmp_path / "empty.pt")])
    assert "sss train: error:" in err and "empty.pt is empty (0 bytes)" in err
    (tmp_path / "weights").mkdir()
    save_file(sss.models.create("resnet20", width=8, in_channels=1).state_dict(), str(tmp_path / "weights" / "m.bin"))
    compress = ["compress", "--init", str(tmp_path / "weights"), "--target-macs", "0.5", "--out", str(tmp_path / "run"),
                *COMMON, "--epochs", "2"]  # fmt: skip
    err = _run(tmp_path, capsys, compress)
    assert "sss compress: error:" in err and "is a directory: give the weights file inside it" in err
    assert str(tmp_path / "weights" / "m.bin") in err


def test_the_cli_names_nan_weights_in_a_safetensors_file_named_bin(tmp_path, capsys):
    state = sss.models.create("resnet20", width=8, in_channels=1).state_dict()
    state["layer1.0.branch.0.weight"] = torch.full_like(state["layer1.0.branch.0.weight"], float("nan"))
    save_file(state, str(tmp_path / "model.bin"))  # read as safetensors: no weights_only text
    err = _run(tmp_path, capsys, ["train", "--model", "resnet20", "--init", str(tmp_path / "model.bin"),
                                  "--out", str(tmp_path / "run"), *COMMON])  # fmt: skip
    assert "hold NaN/inf in ['layer1.0.branch.0.weight']" in err and "diverged run" in err
    assert "weights_only" not in err and "loss became nan" not in err
