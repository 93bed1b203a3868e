"""The runnable examples in ``examples/`` run (each in its quick form) and do what they say."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

import sss
from sss.recipes import report as report_module

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _main(name: str):
    return runpy.run_path(str(EXAMPLES / name), run_name="example")["main"]


def test_the_compress_function_example(tmp_path, monkeypatch):
    # Latency tables are the command's; timing them would be 30 s of this test's minute.
    timings = lambda models, *a, **k: {n: {1: 1.0, 64: 1.0} for n in models}  # noqa: E731
    monkeypatch.setattr(report_module, "compare_latency", timings)
    report = _main("compress_function.py")(quick=True, out=str(tmp_path))
    rows = report["models"]
    assert abs(rows["compact"]["macs"] / rows["trained"]["macs"] - 0.5) <= 0.01 + 1e-9
    assert (tmp_path / "half" / "compact_model.safetensors").is_file()


def test_the_plain_loop_example():
    compact = _main("plain_loop.py")(quick=True)
    assert isinstance(compact, torch.nn.Module) and not sss.gates(compact)


def test_the_hugging_face_example(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    callback = _main("huggingface_trainer.py")(quick=True, out=str(tmp_path))
    assert callback.selection.landed and callback.saved_as in ("pretrained", "sss")
    assert list((tmp_path / "runs" / "sss").glob("events.out.tfevents.*"))


def test_the_lightning_example(tmp_path):
    pytest.importorskip("lightning")
    callback = _main("lightning_module.py")(quick=True, out=str(tmp_path))
    assert callback.selection.landed and (tmp_path / "compact.safetensors").is_file()
