"""The CLI's flags against the config fields they set (``sss.cli.flags``): none misnamed, none lost."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from sss.cli import flags
from sss.cli.main import build_parser
from sss.gal import GALConfig
from sss.train import TrainConfig

# Written out, not derived from sss.cli.flags: a flag dropped from the table must fail here.
_COMMON = {"--config", "--set", "--dataset", "--data-dir", "--epochs", "--out"}
_TARGETS = {"--target-macs", "--target-params", "--target-latency", "--latency-batch"}
_START = {"--init", "--distill"}
_RUNTIME = {
    "--resume",
    "--overwrite",
    "--device",
    "--amp",
    "--compile",
    "--workers",
    "--tensorboard",
    "--trust-model-code",
}
EXPECTED = {
    "train": {*_COMMON, *_TARGETS, *_START, *_RUNTIME, "--model", "--gamma", "--sparsity", "--structures"},
    "compress": {*_COMMON, *_TARGETS, *_START, *_RUNTIME, "--model", "--lr", "--structures"},
    "gal": {*_COMMON, *_TARGETS, *_RUNTIME, "--teacher", "--model", "--gamma", "--mu", "--structures"},
    "finetune": {*_COMMON, *_START, *_RUNTIME, "--model", "--lr"},
    "prune": {"--out", "--threshold", "--input-shape", "--structures", "--round-to", "--trust-model-code"},
    "eval": {"--dataset", "--data-dir", "--latency", "--device", "--trust-model-code"},
    "export": {"--out", "--input-shape", "--trust-model-code"},
    "demo": {*_TARGETS, "--out", "--data-dir", "--quick", "--model", "--structures", "--gamma", "--no-baseline"},
    "models": set(),
}
#: The training commands' flag tables, and the config class whose fields their flags set.
TABLES = {
    "train": (flags.TRAIN, TrainConfig),
    "compress": (flags.COMPRESS, TrainConfig),
    "gal": (flags.GAL, GALConfig),
    "finetune": (flags.FINETUNE, TrainConfig),
}
#: Flags and arguments of the commands themselves, which set no config field.
OWN_DESTS = {"help", "config", "set", "resume", "overwrite", "saved"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_each_command_keeps_its_flags(command):
    actions = _subparsers()[command]._actions
    assert {o for a in actions for o in a.option_strings} - {"-h", "--help"} == EXPECTED[command]


@pytest.mark.parametrize("command", sorted(TABLES))
def test_every_config_flag_names_a_field(command):
    groups, cls = TABLES[command]
    fields = {f.name for f in dataclasses.fields(cls)}
    keys = [flag.key for group in groups for flag in group if flag.key is not None]
    assert set(keys) <= fields, f"{command}: flags set no field {sorted(set(keys) - fields)}"
    assert len(keys) == len(set(keys)), f"{command}: a field set by two flags"


@pytest.mark.parametrize("command", sorted(TABLES))
def test_every_flag_of_a_training_command_is_read_back(command):
    groups, _ = TABLES[command]
    dests = {a.dest for a in _subparsers()[command]._actions}
    assert dests - OWN_DESTS == {flag.dest for group in groups for flag in group if flag.key is not None}


def test_flag_values_reads_the_flags_given_as_config_values(capsys):
    args = build_parser().parse_args(["train", "--epochs", "3", "--out", "o", "--structures", "block, channel",
                                      "--set", "target_macs=0.5", "--target-params", "0.5", "--compile"])  # fmt: skip
    values = flags.flag_values(args, *flags.TRAIN)
    assert values == {"epochs": 3, "out_dir": "o", "structures": ["block", "channel"], "compile": True,
                      "target_params": "0.5", "target_macs": None, "target_latency": None}  # fmt: skip
    assert "--target-params replaces --set target_macs" in capsys.readouterr().err


def test_flag_values_leaves_unset_flags_to_the_config():
    args = build_parser().parse_args(["gal", "--teacher", "t"])
    assert flags.flag_values(args, *flags.GAL) == {"teacher": "t", "out_dir": "runs/gal"}


def test_an_unknown_structure_kind_is_refused():
    args = build_parser().parse_args(["train", "--structures", "block,bogus"])
    with pytest.raises(ValueError, match="unknown kind"):
        flags.flag_values(args, *flags.TRAIN)


def test_a_variant_of_a_flag_no_group_has_is_refused():
    with pytest.raises(KeyError, match="epoch"):
        flags.variant(flags.COMMON, epoch={"help": "a typo"})
