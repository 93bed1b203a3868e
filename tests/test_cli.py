"""The `sss` command: train → prune → eval on real data, and clear errors."""

import re
import subprocess
import sys

import pytest

from sss.cli.main import main

TINY = ["--set", "train_subset=1200", "--set", "val_size=200", "--set", "model_kwargs.width=4", "--set",
        "batch_size=64", "--epochs", "1"]  # fmt: skip


def test_train_prune_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "resnet20", "--gamma", "5", "--out", str(out), *TINY]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert (out / "checkpoint.safetensors").is_file() and (out / "metrics.jsonl").is_file()
    assert main(["train", "--model", "resnet20", "--gamma", "5", "--out", str(out), *TINY[:-1], "2", "--resume"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["prune", str(out / "model"), "--out", str(tmp_path / "small"), "--input-shape", "1", "28", "28"]) == 0
    assert re.search(r"removed \d+ (block|channel)", capsys.readouterr().out)  # not "removed nothing"
    assert main(["eval", str(tmp_path / "small"), str(out / "compact")]) == 0
    table = capsys.readouterr().out
    assert "| test accuracy |" in table and "small" in table


def test_config_file_and_bad_input(tmp_path, capsys):
    assert main(["train", "--model", "resnet57", "--out", str(tmp_path)]) == 2
    assert "resnet57" in capsys.readouterr().err
    assert main(["train", "--set", "epoch=3"]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", "--dataset", "cifar10", "--out", str(tmp_path)]) == 2
    assert "--data-dir" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["1e-6", "0.001x"])  # milliseconds, or a fraction of the dense model
def test_a_latency_target_flag_replaces_the_config_target_and_is_checked(tmp_path, capsys, target):
    args = ["train", "--model", "resnet20", "--structures", "block,channel", "--set", "target_macs=0.5",
            "--target-latency", target, "--out", str(tmp_path / "run"), *TINY]  # fmt: skip
    assert main(args) == 2  # refused before training, from the latency model's floor
    err = capsys.readouterr().err
    assert "target_latency" in err and "below what this model can reach" in err


def test_console_script_lists_models():
    done = subprocess.run([sys.executable, "-m", "sss", "models"], capture_output=True, text=True, check=True)
    assert "resnet56" in done.stdout.split()


@pytest.mark.parametrize("command", ["train", "gal", "finetune", "prune", "eval", "demo"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert command in capsys.readouterr().out


def test_gal_then_finetune(tmp_path, capsys):
    teacher = tmp_path / "dense"
    assert main(["train", "--model", "resnet20", "--sparsity", "none", "--out", str(teacher), *TINY]) == 0
    gal = tmp_path / "gal"
    args = ["gal", "--teacher", str(teacher / "model"), "--gamma", "5", "--out", str(gal), "--epochs", "1",
            "--set", "train_subset=1200", "--set", "val_size=200", "--set", "batch_size=64"]  # fmt: skip
    assert main(args) == 0
    assert "d_loss" in (gal / "metrics.jsonl").read_text()
    assert main(["finetune", str(gal / "compact"), "--out", str(tmp_path / "ft"), "--epochs", "1",
                 "--set", "train_subset=1200", "--set", "val_size=200"]) == 0  # fmt: skip
    assert (tmp_path / "ft" / "compact.safetensors").is_file()
    assert "test accuracy" in capsys.readouterr().out
    assert main(["gal", "--teacher", str(tmp_path / "missing"), "--out", str(gal)]) == 2


def test_structures_flag_on_train_and_prune(tmp_path, capsys):
    out = tmp_path / "resnext"
    small = ["--set", "model_kwargs.cardinality=4", "--set", "model_kwargs.base_width=2", "--set",
             "model_kwargs.widen=1", "--set", "train_subset=600", "--set", "val_size=100", "--epochs", "1",
             "--set", "allow_collapse=true"]  # γ = 5 cuts every path; this test is about the flags  # fmt: skip
    args = ["train", "--model", "resnext29", "--structures", "block,group,channel", "--gamma", "5", "--out", str(out)]
    assert main([*args, *small]) == 0
    capsys.readouterr()
    only_blocks = tmp_path / "blocks_only"
    assert main(["prune", str(out / "model"), "--out", str(only_blocks), "--structures", "block", "--round-to", "4",
                 "--input-shape", "1", "28", "28"]) == 0  # fmt: skip
    assert re.search(r"removed (\d+ block\(s\)|nothing):", capsys.readouterr().out)  # blocks only, never groups
    assert main(["prune", str(out / "model"), "--out", str(only_blocks), "--structures", "neuron"]) == 2
    assert "unknown kind(s) ['neuron']" in capsys.readouterr().err


def test_a_vit_trains_to_a_mac_target_and_exports_from_the_cli(tmp_path, capsys):
    """``sss train`` on the zoo ViT with heads, neurons and branches, then ``sss export``."""
    pytest.importorskip("onnx")
    out = tmp_path / "vit"
    args = ["train", "--model", "vit_fmnist", "--structures", "block,head,channel", "--target-macs", "0.5", "--out",
            str(out), "--set", "train_subset=600", "--set", "val_size=100", "--set", "batch_size=64", "--set",
            "model_kwargs.embed_dim=32", "--set", "model_kwargs.depth=2", "--set", "channels_last=false", "--set",
            "lr=0.03", "--epochs", "1"]  # fmt: skip
    assert main(args) == 0
    budget = re.search(r"budget: .* after the selection \((\d+\.\d)% of dense; target .*\)", capsys.readouterr().out)
    assert budget and "NOT reached" not in budget.group(0)  # a budget line, and it says the target was reached
    assert main(["export", str(out / "compact"), "--out", str(tmp_path / "vit.onnx"), "--input-shape", "1", "28",
                 "28"]) == 0  # fmt: skip
    assert (tmp_path / "vit.onnx").stat().st_size > 10_000
