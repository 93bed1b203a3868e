"""Files from someone else run no code: a saved model, checkpoint or run folder naming
``os:system`` or ``shutil:rmtree`` is refused at every entry point that reads one (with the way
to allow a trusted factory), and sizes read from a file only ever set sizes."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import sss
from conftest import forge_spec
from sss.cli.main import main
from sss.errors import UntrustedCodeError
from sss.serialization import load_state, save_state

TINY = ["--set", "train_subset=256", "--set", "val_size=128", "--set", "batch_size=64", "--epochs", "1"]


@pytest.fixture(params=["system", "rmtree"])
def hostile(request, tmp_path):
    """A compact model file whose recorded factory runs a command or deletes a folder; yields
    (path, check) where check() asserts that nothing ran."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    marker = tmp_path / "ran"
    if request.param == "system":
        factory = {"name": "os:system", "kwargs": {"command": f"touch {marker}"}}
    else:
        factory = {"name": "shutil:rmtree", "kwargs": {"path": str(victim)}}
    gated = sss.attach(sss.models.create("resnet20", in_channels=1, width=4), torch.zeros(1, 1, 28, 28),
                       structures=("channel",))  # fmt: skip
    path = tmp_path / "evil"
    sss.save(gated, path)
    forge_spec(path, {"model": factory})

    def nothing_ran() -> None:
        assert not marker.exists()
        assert (victim / "keep.txt").read_text() == "precious"

    return path, nothing_ran, factory["name"]


def test_load_refuses_a_factory_named_by_a_file(hostile):
    path, nothing_ran, name = hostile
    with pytest.raises(UntrustedCodeError, match=rf"names the factory '{name}'.*trust_code=True.*base="):
        sss.load(path)
    nothing_ran()


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "{p}"],
        ["export", "{p}", "--out", "{tmp}/m.onnx", "--input-shape", "1", "28", "28"],
        ["prune", "{p}", "--out", "{tmp}/small"],
        ["finetune", "{p}", "--out", "{tmp}/ft", *TINY],
        ["gal", "--teacher", "{p}", "--out", "{tmp}/gal", *TINY],
        ["train", "--model", "resnet20", "--distill", "4", "--set", "distill_teacher={p}", "--out", "{tmp}/kd", *TINY],
        ["train", "--model", "resnet20", "--init", "{p}", "--out", "{tmp}/init", *TINY[:-2], "--epochs", "1"],
    ],
    ids=["eval", "export", "prune", "finetune", "gal-teacher", "distill-teacher", "init"],
)
def test_no_entry_point_runs_the_files_factory(hostile, command, tmp_path, capsys):
    path, nothing_ran, name = hostile
    argv = [a.format(p=path, tmp=tmp_path) for a in command]
    rc = main(argv)
    err = capsys.readouterr().err
    nothing_ran()
    if command[0] == "train" and "--init" in command:
        # --init reads only the tensors of the file (its model entry is never built): the run may
        # go on, or stop on weights that do not fit; either way nothing ran.
        assert "Traceback" not in err
        return
    assert rc == 2
    assert f"names the factory '{name}'" in err and "--trust-model-code" in err
    assert "Traceback" not in err


def test_resume_from_a_checkpoint_naming_a_factory_runs_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "resnet20", "--set", "model_kwargs.width=4", "--gamma", "5", "--out", str(out),
                 *TINY]) == 0  # fmt: skip
    marker = tmp_path / "ran"
    state = load_state(out / "checkpoint.safetensors")
    state["config"].update(model="os:system", model_kwargs={"command": f"touch {marker}"})
    save_state(state, out / "checkpoint.safetensors")
    capsys.readouterr()
    rc = main(["train", "--model", "resnet20", "--set", "model_kwargs.width=4", "--gamma", "5", "--out", str(out),
               *TINY[:-1], "2", "--resume"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and not marker.exists()
    assert "os:system" in err and "Traceback" not in err


FACTORY = """
from torch import nn


def build(num_classes=10, width=4):
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, num_classes))
"""


@pytest.fixture
def user_factory(tmp_path, monkeypatch):
    (tmp_path / "trusted_nets.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "trusted_nets:build"
    sys.modules.pop("trusted_nets", None)


def test_a_trusted_factory_loads_when_allowed(user_factory, tmp_path, capsys):
    model = sss.models.create(user_factory, num_classes=3)
    sss.save(model, tmp_path / "m")
    with pytest.raises(UntrustedCodeError, match="trusted_nets:build"):
        sss.load(tmp_path / "m")
    x = torch.randn(2, 1, 8, 8)
    for trust in (True, [user_factory]):
        assert torch.equal(sss.load(tmp_path / "m", trust_code=trust)(x), model.eval()(x))
    assert main(["eval", str(tmp_path / "m")]) == 2
    assert "--trust-model-code" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "m"), "--out", str(tmp_path / "m.onnx"), "--input-shape", "1", "8", "8",
                 "--trust-model-code"]) == 0  # fmt: skip


def _saved(tmp_path: Path) -> Path:
    path = tmp_path / "m"
    sss.save(sss.models.create("resnet20", width=4), path)
    return path


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1e9}, "num_classes must be int"),
        ({"num_classes": 10**9}, "GiB"),
        ({"command": "ls"}, "takes no keyword 'command'"),
        ({"shortcut": "zigzag"}, "shortcut must be"),
        ({"width": {"__class__": 1}}, "values other than numbers"),
    ],
)
def test_recorded_keywords_are_checked_before_anything_is_allocated(tmp_path, kwargs, message):
    path = _saved(tmp_path)
    forge_spec(path, {"model": {"name": "resnet20", "kwargs": kwargs}})
    with pytest.raises(sss.CheckpointError, match=message):
        sss.load(path)


def test_an_unknown_zoo_name_in_a_file_is_named(tmp_path):
    path = _saved(tmp_path)
    forge_spec(path, {"model": {"name": "resnet9000", "kwargs": {}}})
    with pytest.raises(sss.CheckpointError, match="'resnet9000', which is not in the zoo"):
        sss.load(path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"fc": {"in_features": 8, "forward": "x"}}, r"set \['forward'\], which are not its size attributes"),
        ({"fc": {"out_features": 10**9}}, "not a whole number from 1 to its size"),
        ({"fc": {"out_features": 2.5}}, "not a whole number"),
        ({"stem.0": {"out_channels": 0}}, "not a whole number"),
        ({"stem.1": {"training": False, "num_features": 4}}, "training"),
    ],
)
def test_saved_sizes_only_set_sizes(tmp_path, entry, message):
    path = _saved(tmp_path)
    spec = json.loads(path.with_suffix(".json").read_text())
    forge_spec(path, {"sizes": {**spec["sizes"], **entry}})
    with pytest.raises(sss.CheckpointError, match=message):
        sss.load(path)


def test_save_into_a_path_that_cannot_hold_files(tmp_path):
    (tmp_path / "file").write_text("")
    model = sss.models.create("resnet20", width=4)
    with pytest.raises(sss.CheckpointError, match=r"cannot write .*choose a path in a writable folder"):
        sss.save(model, tmp_path / "file" / "m")
    with pytest.raises(sss.CheckpointError, match="cannot write"):
        sss.save(model, "/proc/sss-model")


def test_a_run_folder_given_as_a_model_names_its_models(tmp_path, capsys):
    sss.save(sss.models.create("resnet20", width=4), tmp_path / "compact")
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} is a folder" in err and f"{tmp_path / 'compact'}" in err
