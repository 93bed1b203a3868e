"""A training run's output folder: one run at a time, never over another run's files.

The folder is locked (``fcntl.flock`` on ``.lock``) for the run's lifetime, so a second run
started into it is refused instead of mixing its metrics with the first. A folder that holds
another run's checkpoint or metrics is refused unless the run resumes it or is told to
overwrite it. Temp files that a killed atomic write left behind are removed at the start.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from sss.errors import RunFolderError

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
#: What a run writes; --overwrite removes exactly these.
RUN_FILES = (CHECKPOINT, METRICS, "model.safetensors", "model.json", "compact.safetensors", "compact.json")


class RunFolder:
    """The output folder of one run, held (locked) from :meth:`open` to :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = None

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    def open(self, *, resume: bool, overwrite: bool) -> list[str]:
        """Creates and locks the folder; returns notes for the log (temp files cleaned).

        Raises:
            RunFolderError: The folder cannot be written, another run holds it, or it holds a
                finished or interrupted run and neither ``resume`` nor ``overwrite`` is set.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.path / ".lock", "a")  # noqa: SIM115  (held until close)
        except OSError as e:
            raise RunFolderError(f"cannot write to the run folder {self.path}: {e.strerror or e}; choose another "
                                 "--out") from None  # fmt: skip
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise RunFolderError(f"another run is writing to {self.path}; wait for it to finish or choose another "
                                 "--out") from None  # fmt: skip
        notes = []
        stale = [p for p in self.path.glob(".*.tmp") if p.is_file()]
        for p in stale:
            p.unlink(missing_ok=True)
        if stale:
            notes.append(f"removed {len(stale)} temp file(s) left in {self.path} by an interrupted write")
        existing = [name for name in RUN_FILES if (self.path / name).exists()]
        if existing == [METRICS] and not self.read_metrics(up_to_epoch=10**9):
            # A run that failed in its first epoch leaves only an empty metrics file: no run to protect.
            self.metrics.unlink()
            existing = []
            notes.append(f"{self.path} holds no finished epoch of an earlier run; starting afresh")
        if existing and overwrite:
            for name in existing:
                (self.path / name).unlink()
            notes.append(f"--overwrite: removed the previous run's {', '.join(existing)} from {self.path}")
        elif existing and not resume:
            self.close()
            raise RunFolderError(f"{self.path} holds another run ({', '.join(existing)}); continue it with --resume, "
                                 "replace it with --overwrite, or choose another --out")  # fmt: skip
        return notes

    def close(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def read_metrics(self, up_to_epoch: int) -> list[dict]:
        """The metric records of epochs ``<= up_to_epoch`` (a crash can leave later ones, or a
        torn last line, which are dropped); a corrupt line before the last is an error."""
        if not self.metrics.exists():
            return []
        lines = self.metrics.read_text().splitlines()
        records = []
        for i, line in enumerate(lines):
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                    raise ValueError("not an epoch record")
            except ValueError as e:
                if i == len(lines) - 1:
                    break  # torn by a kill mid-write: the checkpoint decides what happened
                raise RunFolderError(f"{self.metrics}, line {i + 1}, is corrupt ({e}); fix or delete the line, "
                                     "then resume") from None  # fmt: skip
            if record["epoch"] <= up_to_epoch:
                records.append(record)
        return records

    def write_metrics(self, records: list[dict]) -> None:
        self.metrics.write_text("".join(json.dumps(r) + "\n" for r in records))

    def append_metrics(self, record: dict) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
