"""A compact model exported to ONNX gives onnxruntime the same outputs as torch."""

import pytest
import torch

import sss
from sss.cli.main import main

from .helpers import random_gated

pytest.importorskip("onnx")  # both come with the dev extra; CI installs them
ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize(("name", "structures", "shape"), [
    ("resnet20", ("block", "channel"), (3, 16, 16)),
    ("lenet5", ("channel",), (1, 28, 28)),
    ("vgg16_bn", ("channel",), (3, 32, 32)),
])  # fmt: skip
def test_onnxruntime_matches_torch(tmp_path, name, structures, shape):
    kwargs = {"width": 0.25} if name == "vgg16_bn" else {}
    x = torch.randn(3, *shape)
    compact = sss.prune(random_gated(sss.models.create(name, **kwargs), x, structures))
    path = sss.export_onnx(compact, x[:1], tmp_path / "m.onnx")
    out = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]  # batch 3: dynamic axis
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(out), compact(x), atol=1e-5)


def test_gated_model_is_refused_and_cli_exports(tmp_path, capsys):
    x = torch.zeros(1, 1, 28, 28)
    gated = sss.attach(sss.models.create("lenet5"), x, structures=("channel",))
    with pytest.raises(ValueError, match=r"sss\.prune"):
        sss.export_onnx(gated, x, tmp_path / "g.onnx")
    sss.save(sss.prune(gated), tmp_path / "compact")
    assert main(["export", str(tmp_path / "compact"), "--out", str(tmp_path / "c.onnx"), "--input-shape", "1", "28",
                 "28"]) == 0  # fmt: skip
    assert (tmp_path / "c.onnx").stat().st_size > 1000
