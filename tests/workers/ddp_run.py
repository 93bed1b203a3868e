"""A short SSS or GAL run under torchrun, for tests/test_distributed.py.

Usage: torchrun --standalone --nproc_per_node=N workers/ddp_run.py OUT EPOCHS [--gal TEACHER] [--resume]
Each rank writes the factors it holds at the end of every epoch to OUT/factors_rank{R}.json
(as float.hex, so equality is bit equality). With KILL_AT_STEP=S rank 0 kills itself (SIGKILL)
at its S-th training step.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # conftest's synthetic data

import sss
from conftest import synthetic_dataset
from sss.gal import GALConfig, GALTrainer
from sss.train import TrainConfig, Trainer


def config(out: str, epochs: int, teacher: str | None) -> TrainConfig:
    common = dict(model="lenet5", model_kwargs={"image_size": 16}, structures=["channel"], val_size=64, epochs=epochs,
                  batch_size=32, lr=0.05, augment_pad=1, out_dir=out, channels_last=False, schedule="step",
                  milestones=[2], device="cpu", allow_collapse=True)  # fmt: skip
    if teacher:
        return GALConfig(teacher=teacher, gamma=0.5, **common)
    return TrainConfig(gamma=0.1, **common)


def recording(base: type[Trainer]) -> type[Trainer]:
    class Recording(base):
        steps = 0

        def batch_loss(self, x, y):
            Recording.steps += 1
            if self.runtime.rank == 0 and Recording.steps == int(os.environ.get("KILL_AT_STEP", "0")):
                os.kill(os.getpid(), signal.SIGKILL)
            return super().batch_loss(x, y)

        def on_epoch_start(self):
            super().on_epoch_start()
            self._dump()

        def _dump(self):
            path = Path(self.cfg.out_dir) / f"factors_rank{self.runtime.rank}.json"
            records = json.loads(path.read_text()) if path.exists() else {}
            values = [v for g in sss.gates(self.model) for v in g.weight.detach().flatten().tolist()]
            records[str(self.epoch)] = [float(v).hex() for v in values]
            path.write_text(json.dumps(records))

    return Recording


def main() -> None:
    out, epochs = sys.argv[1], int(sys.argv[2])
    teacher = sys.argv[sys.argv.index("--gal") + 1] if "--gal" in sys.argv else None
    cls = recording(GALTrainer if teacher else Trainer)
    trainer = cls(config(out, epochs, teacher), train_data=synthetic_dataset(256, shape=(1, 16, 16)), progress=False)
    trainer.fit(resume="--resume" in sys.argv, overwrite="--resume" not in sys.argv)
    trainer._dump()  # the factors after the last epoch


if __name__ == "__main__":
    main()
