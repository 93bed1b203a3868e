"""Several processes (torchrun, gloo on CPU): identical factors on every rank, the selection of
a one-process run with the same global batch, a kill -9 resumed with no lost or repeated epoch,
and GAL with identical masks. GPU paths are skipped without CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sss
from conftest import synthetic_dataset
from sss.train import METRICS

WORKER = Path(__file__).parent / "workers" / "ddp_run.py"
sys.path.insert(0, str(WORKER.parent))
import ddp_run  # noqa: E402


def _torchrun(out: Path, epochs: int, *extra: str, env: dict | None = None, check: bool = True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
           str(out), str(epochs), *extra]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def _factors(out: Path, rank: int) -> dict[str, list[float]]:
    records = json.loads((out / f"factors_rank{rank}.json").read_text())
    return {epoch: [float.fromhex(v) for v in values] for epoch, values in records.items()}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    _torchrun(out, 3)
    return out


def test_factors_are_bit_identical_on_every_rank_after_every_epoch(two_ranks):
    a, b = _factors(two_ranks, 0), _factors(two_ranks, 1)
    assert sorted(a) == ["0", "1", "2", "3"] and a == b  # float.hex equality: bit for bit


def test_the_selection_equals_one_process_with_the_same_global_batch(two_ranks, tmp_path):
    # LeNet-5 has no BatchNorm, so two ranks compute what one process computes on the global
    # batch; only the order of the gradient sums differs (DDP averages two half-batch means).
    # That rounding compounds over 21 steps to well under 1e-4; a factor within 1e-4 of zero
    # may land on either side.
    cfg = ddp_run.config(str(tmp_path / "one"), 3, None)
    single = sss.train.Trainer(cfg, train_data=synthetic_dataset(256, shape=(1, 16, 16)), log=lambda m: None,
                               progress=False).fit()  # fmt: skip
    one = torch.tensor([float(v) for g in sss.gates(single.model) for v in g.weight.detach().flatten()])
    ddp = torch.tensor(_factors(two_ranks, 0)["3"])
    assert float((one - ddp).abs().max()) <= 1e-4
    clear = one.abs() > 1e-4
    assert torch.equal((one == 0)[clear], (ddp == 0)[clear])
    assert float((one - 1).abs().max()) > 0.05  # the factors did move: there is something to compare


def test_kill_9_mid_epoch_then_resume_loses_and_repeats_no_epoch(two_ranks, tmp_path):
    out = tmp_path / "run"
    killed = _torchrun(out, 3, env={"KILL_AT_STEP": "17"}, check=False)  # 6 steps an epoch: in epoch 3
    assert killed.returncode != 0
    epochs = [json.loads(line)["epoch"] for line in (out / METRICS).read_text().splitlines()]
    assert epochs == [1, 2]
    _torchrun(out, 3, "--resume")
    epochs = [json.loads(line)["epoch"] for line in (out / METRICS).read_text().splitlines()]
    assert epochs == [1, 2, 3]
    assert _factors(out, 0)["3"] == _factors(two_ranks, 0)["3"]  # as if never interrupted


def test_gal_masks_are_identical_on_every_rank(tmp_path):
    teacher = tmp_path / "teacher"
    cfg = ddp_run.config(str(teacher), 1, None)
    cfg.sparsity = "none"
    sss.train.Trainer(cfg, train_data=synthetic_dataset(256, shape=(1, 16, 16)), log=lambda m: None,
                      progress=False).fit()  # fmt: skip
    out = tmp_path / "gal"
    _torchrun(out, 2, "--gal", str(teacher / "model"))
    a, b = _factors(out, 0), _factors(out, 1)
    assert sorted(a) == ["0", "1", "2"] and a == b
    assert "d_loss" in (out / METRICS).read_text()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI machines have none)")
def test_cuda_run_with_bf16_resumes_on_cpu(tmp_path):
    cfg = ddp_run.config(str(tmp_path / "gpu"), 1, None)
    cfg.device, cfg.amp = "cuda", "bf16"
    data = synthetic_dataset(256, shape=(1, 16, 16))
    sss.train.Trainer(cfg, train_data=data, log=lambda m: None, progress=False).fit()
    cfg.device, cfg.epochs = "cpu", 2
    resumed = sss.train.Trainer(cfg, train_data=data, log=lambda m: None, progress=False).fit(resume=True)
    assert next(resumed.model.parameters()).device.type == "cpu"
