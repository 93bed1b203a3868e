"""Nothing lost, nothing silently wrong: run folders, NaN, collapse, one-path models, bad files."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import stat

import pytest
import torch
from torch import nn

import sss
from conftest import synthetic_dataset
from sss.data.idx import read_idx
from sss.errors import RunFolderError, SelectionCollapsedError
from sss.serialization import load_state, save_state
from sss.train import CHECKPOINT, METRICS, RunFolder, TrainConfig, Trainer, load_config


def _cfg(tmp_path, **kw):
    base = TrainConfig(model="resnet20", model_kwargs={"width": 4}, val_size=64, epochs=1, batch_size=32, lr=0.05,
                       gamma=0.05, augment_pad=1, out_dir=str(tmp_path / "run"), channels_last=False,
                       schedule="step")  # fmt: skip
    return dataclasses.replace(base, **kw)


def _fit(cfg, data=None, **kw):
    lines: list[str] = []
    result = Trainer(cfg, train_data=data or synthetic_dataset(128), log=lines.append, progress=False).fit(**kw)
    return result, lines


# -- run folders ---------------------------------------------------------------------------
def test_a_new_run_never_replaces_another_silently(tmp_path):
    _fit(_cfg(tmp_path))
    before = (tmp_path / "run" / METRICS).read_text()
    with pytest.raises(RunFolderError, match=r"holds another run .*--resume.*--overwrite"):
        _fit(_cfg(tmp_path))
    assert (tmp_path / "run" / METRICS).read_text() == before  # untouched
    _, lines = _fit(_cfg(tmp_path, seed=1), overwrite=True)
    assert any("--overwrite: removed" in line for line in lines)
    assert len((tmp_path / "run" / METRICS).read_text().splitlines()) == 1


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path):
    holder = RunFolder(tmp_path / "run")
    holder.open(resume=False, overwrite=False)
    try:
        with pytest.raises(RunFolderError, match="another run is writing"):
            _fit(_cfg(tmp_path))
    finally:
        holder.close()
    _fit(_cfg(tmp_path))  # free again


def test_impossible_out_and_nothing_to_resume(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="cannot write to the run folder"):
        _fit(_cfg(tmp_path, out_dir=str(tmp_path / "file" / "run")))
    with pytest.raises(RunFolderError, match="nothing to resume"):
        _fit(_cfg(tmp_path), resume=True)


def test_temp_files_are_cleaned_and_files_get_normal_permissions(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for i in range(3):
        (run / f".checkpoint.safetensors.{i}.tmp").write_bytes(b"partial")
    _, lines = _fit(_cfg(tmp_path))
    assert not list(run.glob(".*.tmp")) and any("removed 3 temp file(s)" in line for line in lines)
    umask = os.umask(0)
    os.umask(umask)
    for name in (CHECKPOINT, "model.safetensors", "compact.json"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~umask


def test_a_torn_last_metrics_line_does_not_block_resume(tmp_path):
    _fit(_cfg(tmp_path))
    with (tmp_path / "run" / METRICS).open("a") as f:
        f.write('{"epoch": 2, "lr"')  # a kill mid-write
    _fit(_cfg(tmp_path, epochs=2), resume=True)
    records = [json.loads(s) for s in (tmp_path / "run" / METRICS).read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    (tmp_path / "run" / METRICS).write_text('garbage\n{"epoch": 1}\n')
    with pytest.raises(RunFolderError, match=r"metrics.jsonl, line 1, is corrupt"):
        _fit(_cfg(tmp_path, epochs=3), resume=True)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.update(epoch="2"), "epoch is str, expected int"),
    (lambda s: s.update(epoch=10**9), "does not match"),
    (lambda s: s.update(model=[1, 2]), "model is list"),
])  # fmt: skip
def test_a_crafted_checkpoint_gets_a_clear_error(tmp_path, edit, message):
    _fit(_cfg(tmp_path))
    ckpt = tmp_path / "run" / CHECKPOINT
    state = load_state(ckpt)
    edit(state)
    save_state(state, ckpt)
    with pytest.raises(sss.CheckpointError, match=f"{ckpt}.*{message}"):
        _fit(_cfg(tmp_path, epochs=2), resume=True)


# -- NaN and collapse ----------------------------------------------------------------------
def test_divergence_keeps_only_finite_checkpoints(tmp_path):
    cfg = _cfg(tmp_path, epochs=4, lr=1e4, allow_collapse=True)  # diverges on any CPU, sooner or later
    with pytest.raises(sss.TrainingDivergedError) as err:
        _fit(cfg, synthetic_dataset(256))
    ckpt = tmp_path / "run" / CHECKPOINT
    if ckpt.exists():
        state = load_state(ckpt)
        assert all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())
        assert all(torch.isfinite(torch.tensor(r["val_loss"])) for r in state["history"])
        assert f"epoch {state['epoch']}) is kept" in str(err.value)
    else:
        assert "No checkpoint was written" in str(err.value) and "epoch 0" not in str(err.value)


def test_a_selection_that_cuts_every_path_stops_the_run(tmp_path):
    cfg = _cfg(tmp_path, model="lenet5", model_kwargs={"image_size": 16}, structures=["channel"], gamma=1000.0)
    data = synthetic_dataset(128, shape=(1, 16, 16))
    with pytest.raises(SelectionCollapsedError, match=r"same output for every input.*allow_collapse"):
        _fit(cfg, data)
    assert not (tmp_path / "run" / CHECKPOINT).exists()  # the collapsed epoch is not kept
    _, lines = _fit(dataclasses.replace(cfg, allow_collapse=True), data, overwrite=True)
    assert any(line.startswith("warning: ") and "passes nothing on" in line for line in lines)


# -- models that trace one path ------------------------------------------------------------
class DataBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = self.a(x) if x.mean() > 0 else self.b(x)
        return self.fc(x.mean((2, 3)))


class ModeBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.extra = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.bn(self.conv(x))
        if self.training:
            y = y + 0.1 * self.extra(x)
        return torch.relu(x + y)


class ModeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.block, self.fc = nn.Conv2d(3, 4, 3, padding=1), ModeBlock(), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.block(torch.relu(self.stem(x))).mean((2, 3)))


def test_a_forward_that_branches_on_data_is_refused_by_name():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(sss.UnsupportedModelError, match=r"DataBranch branches on the values of its input"):
        sss.attach(DataBranch(), x, ("channel",))


def test_a_block_that_branches_on_training_is_refused_by_name():
    x = torch.randn(2, 3, 8, 8)
    for kinds in (("block",), ("channel",)):
        with pytest.raises(sss.UnsupportedModelError, match=r"block computes a different graph in training"):
            sss.attach(ModeNet(), x, kinds)
    report = sss.find_structures(ModeNet(), x, ("channel",), ignore=["block"])  # excluded: the rest is checked
    assert "block.conv: ignored" in report.skipped


# -- config values and files ---------------------------------------------------------------
@pytest.mark.parametrize("override", ["epochs=abc", "gamma=[1,2]", "train_subset=-1", "epochs=1.5", "structures=[]",
                                      "weight_decay=-1", "channels_last=maybe", "prune_threshold=-1",
                                      "gamma_macs_power=-1", "round_to=0", "eval_batch_size=0",
                                      "model_kwargs.depth=3"])  # fmt: skip
def test_every_bad_value_names_its_field(override):
    field = override.split("=")[0].split(".")[0]
    with pytest.raises(ValueError, match=rf"invalid TrainConfig: {field}") as err:
        load_config(None, [override])
    assert "\n" not in str(err.value)


def test_numbers_in_exponent_form(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("gamma: 1e-4\nweight_decay: 5e-4\n")  # YAML 1.1 reads these as strings
    cfg = load_config(path, ["lr=1e-3"])
    assert (cfg.gamma, cfg.weight_decay, cfg.lr) == (1e-4, 5e-4, 1e-3)
    with pytest.raises(ValueError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    path.write_text("gamma: [1,\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(path)


def test_corrupt_dataset_files_name_the_file(tmp_path):
    (tmp_path / "a.gz").write_bytes(b"not gzip at all")
    with pytest.raises(sss.DataError, match=r"a\.gz cannot be read .*corrupt or truncated"):
        read_idx(tmp_path / "a.gz")
    (tmp_path / "b.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 9]) + bytes(9))[:-6])
    with pytest.raises(sss.DataError, match=r"b\.gz cannot be read"):
        read_idx(tmp_path / "b.gz")
