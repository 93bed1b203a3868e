"""A transformer's residual stream rescaled (``rescale_streams``): the same function at the
stream's starting scale, saved and loaded the same, given back at the freeze and on resume."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import sss
from sss.structures.history import history, record
from sss.structures.stream_scale import scale_stream, stream_rms, streams


def _gated(seed: int = 0):
    torch.manual_seed(seed)
    model = sss.models.create("vit_fmnist", embed_dim=32, depth=2)
    return sss.attach(model, torch.zeros(1, 1, 28, 28), structures=("embedding", "head", "channel")).eval()


def test_a_rescaled_stream_computes_the_same_function_and_loads_the_same(tmp_path):
    gated, x = _gated(), torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        for ref in sss.gates(gated):  # a shrunken stream: small embedding factors, some zero
            if ref.kind == "embedding":
                ref.weight.copy_(torch.linspace(0.0, 0.05, ref.weight.numel()))
        before = gated(x)
    (stream,) = streams(gated)
    assert len(stream.norms) == 5 and {"cls_token", "pos_embed"} <= set(stream.tokens)
    small = stream_rms(gated, stream, x)
    edit = scale_stream(gated, stream, 40.0)
    record(gated, [edit])
    assert stream_rms(gated, stream, x) == pytest.approx(40 * small, rel=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(gated(x), before, rtol=1e-5, atol=1e-5 * float(before.abs().max()))
    compact = sss.prune(gated)
    assert any(e["op"] == "scale_stream" for e in history(compact))
    sss.save(compact, tmp_path / "m")
    loaded = sss.load(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), before, rtol=1e-5, atol=1e-5 * float(before.abs().max()))


def test_the_freeze_gives_the_stream_its_starting_scale_and_resume_replays_it(tmp_path):
    from sss.data import load_dataset
    from sss.train import TrainConfig, Trainer

    data = load_dataset("fashion-mnist", True).subset(range(640))
    cfg = TrainConfig(model="vit_fmnist", model_kwargs={"embed_dim": 32, "depth": 2},
                      structures=["embedding", "channel"], gamma=0.5, epochs=2, freeze_epoch=1, batch_size=64,
                      val_size=128, lr=0.05, channels_last=False, out_dir=str(tmp_path / "run"))  # fmt: skip
    trainer = Trainer(cfg, train_data=data, progress=False)
    (reference,) = trainer.stream_reference.values()
    result = trainer.fit(overwrite=True)
    (factor,) = trainer.stream_scales.values()
    assert factor > 1.05  # the penalty shrank the stream; the freeze gave its scale back
    selected = result.selected.eval()  # the gated model at the freeze, rescaled
    (stream,) = streams(selected)
    assert stream_rms(selected, stream, trainer._probe()) == pytest.approx(reference, rel=1e-3)
    resumed = Trainer(dataclasses.replace(cfg, epochs=3), train_data=data, progress=False)
    resumed.fit(resume=True)
    assert resumed.stream_scales == trainer.stream_scales
    assert [e for e in history(resumed.model) if e["op"] == "scale_stream"] == \
        [e for e in history(result.compact) if e["op"] == "scale_stream"]  # fmt: skip


def test_a_run_without_a_freeze_saves_its_compact_model_at_the_starting_scale(tmp_path):
    from sss.data import load_dataset
    from sss.train import TrainConfig, Trainer

    data = load_dataset("fashion-mnist", True).subset(range(640))
    cfg = TrainConfig(model="vit_fmnist", model_kwargs={"embed_dim": 32, "depth": 2}, structures=["embedding"],
                      gamma=0.5, epochs=1, batch_size=64, val_size=128, lr=0.05, channels_last=False,
                      out_dir=str(tmp_path / "run"))  # fmt: skip
    trainer = Trainer(cfg, train_data=data, progress=False)
    result = trainer.fit(overwrite=True)
    assert trainer.stream_scales and any(e["op"] == "scale_stream" for e in history(result.compact))
    loaded = sss.load(tmp_path / "run" / "compact").eval()
    probe = trainer._probe()
    with torch.no_grad():
        torch.testing.assert_close(loaded(probe), result.model.eval()(probe), rtol=1e-4, atol=1e-5)


def test_a_rewind_keeps_the_starting_weights_and_their_scale(tmp_path):
    from sss.data import load_dataset
    from sss.train import TrainConfig, Trainer

    data = load_dataset("fashion-mnist", True).subset(range(640))
    cfg = TrainConfig(model="vit_fmnist", model_kwargs={"embed_dim": 32, "depth": 2}, structures=["embedding"],
                      gamma=0.5, epochs=2, freeze_epoch=1, after_freeze="rewind", batch_size=64, val_size=128,
                      lr=0.05, channels_last=False, out_dir=str(tmp_path / "run"))  # fmt: skip
    trainer = Trainer(cfg, train_data=data, progress=False)
    result = trainer.fit(overwrite=True)
    assert trainer.stream_scales == {} and not any(e["op"] == "scale_stream" for e in history(result.compact))
