"""Throughput of SSS and plain training in 1 and 2 processes (torchrun, gloo, CPU), and of the
image-folder pipeline per DataLoader worker count.

    .venv/bin/python benchmarks/bench_scaleout.py

Training: ResNet-20 on 28x28 Fashion-MNIST images, global batch 128, the trainer's own epoch loop
(data, forward, backward, both optimizers; evaluation excluded), timed on its second epoch of 20
steps. One process uses torch's default threads; under torchrun each rank gets one thread
(torchrun's OMP_NUM_THREADS=1). Target: SSS/plain <= 1.05 in both. Pipeline: 512 JPEGs of 256x256
(upscaled Fashion-MNIST test images), random-resized-crop 224 + flip, batches of 64. Writes
results/scaleout.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

RESULTS = Path(__file__).parent / "results"
STEPS, BATCH = 20, 128


def _train_throughput(sparsity: str) -> float:
    """Images/s of one training epoch (this process's share times the world size)."""
    from sss.data import load_dataset
    from sss.train import TrainConfig, Trainer

    data = load_dataset("fashion-mnist", True)
    data = data.subset(range(BATCH * STEPS + 500))
    cfg = TrainConfig(model="resnet20", sparsity=sparsity, gamma=0.01, val_size=500, batch_size=BATCH, epochs=2,
                      device="cpu", out_dir=tempfile.mkdtemp())  # fmt: skip
    trainer = Trainer(cfg, train_data=data, log=lambda m: None, progress=False)
    trainer.setup()  # the training forward (DDP-wrapped), as fit() builds it
    trainer.steps_per_epoch = len(trainer.train_data) // BATCH
    trainer._train_epoch()  # warm-up: allocator, oneDNN primitives, gloo buffers
    trainer.epoch = 1
    start = time.perf_counter()
    trainer._train_epoch()
    return trainer.steps_per_epoch * BATCH / (time.perf_counter() - start)


def _worker() -> None:
    rate = _train_throughput(sys.argv[2])
    if int(os.environ.get("RANK", "0")) == 0:
        Path(sys.argv[3]).write_text(json.dumps(rate))


def _two_processes(sparsity: str) -> float:
    out = Path(tempfile.mkdtemp()) / "rate.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, "--worker",
           sparsity, str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return json.loads(out.read_text())


def _pipeline(workers_list=(0, 1, 2)) -> dict[str, float]:
    from sss.data import ImageFolder, iterate_batches, load_dataset

    fm = load_dataset("fashion-mnist", False)
    root = Path(tempfile.mkdtemp())
    for i in range(512):
        folder = root / f"class{fm.labels[i]}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(fm.images[i, 0]).convert("RGB").resize((256, 256)).save(folder / f"{i}.jpg", quality=90)
    data = ImageFolder.scan(root)
    rates = {}
    for workers in workers_list:
        gen = torch.Generator().manual_seed(0)
        list(iterate_batches(data, 64, shuffle=True, augment_pad=1, generator=gen, workers=workers))  # warm-up
        start = time.perf_counter()
        n = sum(len(y) for _, y in iterate_batches(data, 64, shuffle=True, augment_pad=1, generator=gen,
                                                   workers=workers))  # fmt: skip
        rates[str(workers)] = n / (time.perf_counter() - start)
    return rates


def main() -> None:
    result = {"cpu_threads_one_process": torch.get_num_threads(), "training_images_per_s": {}}
    for procs, run in (("1", _train_throughput), ("2", _two_processes)):
        rates = {s: run(s) for s in ("none", "apg")}
        result["training_images_per_s"][procs] = {"plain": rates["none"], "sss": rates["apg"],
                                                  "sss_over_plain_time": rates["none"] / rates["apg"]}  # fmt: skip
    result["pipeline_images_per_s_by_workers"] = _pipeline()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaleout.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    _worker() if "--worker" in sys.argv else main()
