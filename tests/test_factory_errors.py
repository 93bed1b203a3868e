"""A user's ``--model pkg.module:factory`` that cannot be built is one line naming the cause:
a syntax error, an error raised while importing, a required keyword (named as the config key
that sets it); and ``sss prune`` of a model without factors exits 2 like every other error."""

from __future__ import annotations

import sys

import pytest

import sss
from sss.cli.main import main


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, text: str) -> str:
        (tmp_path / f"{name}.py").write_text(text)
        return f"{name}:build"

    yield write
    for name in [n for n in sys.modules if n.startswith("broken_")]:
        sys.modules.pop(name)


@pytest.mark.parametrize(
    ("module", "source", "message"),
    [
        ("broken_syntax", "def build(:\n    pass\n", r"broken_syntax has a syntax error at .*broken_syntax\.py:1"),
        ("broken_import", "raise RuntimeError('no GPU here')\n",
         "importing broken_import raised RuntimeError: no GPU here; fix the module"),
        ("broken_required", "from torch import nn\n\ndef build(depth, num_classes=10):\n"
         "    return nn.Linear(depth, num_classes)\n",
         r"requires depth: set model_kwargs\.depth \(--set model_kwargs\.depth=\.\.\.\)"),
        ("broken_missing", "x = 1\n", "broken_missing has no 'build'"),
    ],
)  # fmt: skip
def test_a_factory_that_cannot_be_built_is_one_line(user_module, tmp_path, capsys, module, source, message):
    factory = user_module(module, source)
    with pytest.raises(ValueError, match=message):
        sss.models.create(factory)
    assert main(["train", "--model", factory, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1


def test_prune_of_a_model_without_factors_exits_2(tmp_path, capsys):
    sss.save(sss.models.create("resnet20", width=4), tmp_path / "plain")
    assert main(["prune", str(tmp_path / "plain"), "--out", str(tmp_path / "small")]) == 2
    assert "has no scaling factors: nothing to prune" in capsys.readouterr().err


NET = """
from torch import nn


def build(num_classes=10):
    return nn.Sequential(nn.Conv2d(1, {width}, 3), nn.BatchNorm2d({width}), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear({width}, num_classes))
"""


def test_resume_after_the_factory_changed_names_the_cause_not_deletion(user_module, tmp_path, capsys):
    factory = user_module("broken_changed", NET.format(width=4))
    run = ["train", "--model", factory, "--structures", "channel", "--gamma", "0.01", "--out", str(tmp_path / "run"),
           "--set", "train_subset=128", "--set", "val_size=64", "--set", "batch_size=64"]  # fmt: skip
    assert main([*run, "--epochs", "1"]) == 0
    user_module("broken_changed", NET.format(width=6))  # the user edits their model's code
    sys.modules.pop("broken_changed")
    capsys.readouterr()
    assert main([*run, "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "changed since the checkpoint was written" in err and "delete" not in err and "Traceback" not in err
