"""Issue 26, no false refusals: a channels_last or half-precision model gets the structures of its
fp32 twin and prunes exactly; a DataParallel wrapper, a string of kinds, an empty ``structures``
and a bad ``round_to`` / ``threshold`` each get a one-line error or the reading the user meant."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.distributed as dist
from torch import nn

import sss
from conftest import randomise_batchnorm

KINDS = ("block", "channel")
#: Relative output error of compact vs gated: fp32 rounding, or the fold λ·W rounded to fp16 / bf16.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}
VARIANTS = {
    "channels_last": lambda m: m.to(memory_format=torch.channels_last),
    "fp16": lambda m: m.half(),
    "bf16": lambda m: m.bfloat16(),
}


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )  # fmt: skip


def _signature(gated: nn.Module) -> list[tuple[str, str, int]]:
    return [(r.name, r.kind, r.weight.numel()) for r in sss.gates(gated)]


def _as_fp32(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model``'s output computed in fp32 on its own (maybe half-rounded) weights."""
    with torch.no_grad():
        return copy.deepcopy(model).float().eval()(x.float())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_channels_last_and_half_models_get_the_structures_of_their_fp32_twin(variant):
    torch.manual_seed(0)
    base = sss.models.create("resnet20", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    model = VARIANTS[variant](copy.deepcopy(base))
    dtype = next(model.parameters()).dtype
    xv = x.to(dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    twin_report, report = sss.find_structures(base, x, KINDS), sss.find_structures(model, xv, KINDS)
    assert {k: report.names(k) for k in KINDS} == {k: twin_report.names(k) for k in KINDS}
    assert report.names("block") and report.names("channel")
    assert report.skipped == twin_report.skipped

    twin, gated = sss.attach(base, x, KINDS), sss.attach(model, xv, KINDS)
    assert _signature(gated) == _signature(twin)
    assert {r.weight.dtype for r in sss.gates(gated)} == {dtype}  # gates take the model's dtype, as for fp32

    # the model passed is untouched: same values, dtype and memory format
    after = model.state_dict()
    assert all(torch.equal(after[k], v) and after[k].dtype == v.dtype for k, v in before.items())
    conv = model.conv1 if hasattr(model, "conv1") else next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    gated_conv = next(m for m in gated.modules() if isinstance(m, nn.Conv2d))
    if variant == "channels_last":
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert gated_conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert conv.weight.dtype == gated_conv.weight.dtype == dtype

    # the same random factors and BN state on both, then the variant prunes like its twin, exactly
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        randomise_batchnorm(twin, gen)
        for ref in sss.gates(twin):
            keep = torch.rand(ref.weight.shape, generator=gen) >= 0.5
            keep.view(-1)[0] = False
            ref.weight.copy_(keep * torch.empty(ref.weight.shape).uniform_(0.2, 2.0, generator=gen))
    gated.load_state_dict(twin.state_dict())
    compact, twin_compact = sss.prune(gated), sss.prune(twin)
    assert sss.gates(compact) == []
    assert [(n, p.shape) for n, p in compact.named_parameters()] == [
        (n, p.shape) for n, p in twin_compact.named_parameters()
    ]
    assert {p.dtype for p in compact.parameters()} == {dtype}
    expected, actual = _as_fp32(gated, xv), _as_fp32(compact, xv)
    assert float((actual - expected).abs().max() / expected.abs().max()) <= TOLERANCE[dtype]
    with torch.no_grad():
        assert compact.eval()(xv).dtype == dtype  # and it still runs in its own dtype


def test_data_parallel_is_refused_with_the_fix(tmp_path):
    x = torch.randn(2, 3, 8, 8)
    for call in (lambda m: sss.attach(m, x, KINDS), lambda m: sss.find_structures(m, x, KINDS)):
        with pytest.raises(sss.UnsupportedModelError, match=r"DataParallel .*pass model\.module") as err:
            call(nn.DataParallel(_small_cnn()))
        assert "\n" not in str(err.value)
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(_small_cnn())
        with pytest.raises(sss.UnsupportedModelError, match=r"DistributedDataParallel .*pass model\.module"):
            sss.attach(ddp, x, "channel")
        assert sss.gates(sss.attach(ddp.module, x, "channel"))  # the bare model, as the message says
    finally:
        dist.destroy_process_group()


def test_structures_as_a_string_and_empty_structures():
    model, x = _small_cnn(), torch.randn(2, 3, 8, 8)
    by_tuple = sss.attach(model, x, ("channel",))
    assert _signature(sss.attach(model, x, "channel")) == _signature(by_tuple) != []
    assert _signature(sss.attach(model, x, " channel , channel")) == _signature(by_tuple)  # spaces; listed once
    by_string = sss.find_structures(model, x, "channel")
    assert list(by_string.structures) == ["channel"]
    assert by_string.names("channel") == sss.find_structures(model, x, ("channel",)).names("channel")
    resnet = sss.models.create("resnet20", num_classes=10)
    both = sss.attach(resnet, torch.randn(2, 3, 32, 32), "block,channel")
    assert {r.kind for r in sss.gates(both)} == {"block", "channel"}

    # prune and zero_small_factors read a string the same way
    with torch.no_grad():
        for ref in sss.gates(both):
            ref.weight[0] = 0.0
    assert [(n, p.shape) for n, p in sss.prune(both, structures="block").named_parameters()] == [
        (n, p.shape) for n, p in sss.prune(both, structures=("block",)).named_parameters()
    ]
    assert sss.zero_small_factors(copy.deepcopy(both), 10.0, kinds="block") == sum(
        r.weight.numel() for r in sss.gates(both) if r.kind == "block"
    )

    for empty in ((), "", " , "):
        with pytest.raises(ValueError, match=r"structures is empty.*block.*channel") as err:
            sss.attach(model, x, empty)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown structure kind 'chanel'"):
        sss.attach(model, x, "block,chanel")


@pytest.mark.parametrize("round_to", [0, -8, 2.5, True, "8", None])
def test_prune_refuses_a_bad_round_to(round_to):
    gated = sss.attach(_small_cnn(), torch.randn(2, 3, 8, 8), "channel")
    with pytest.raises(ValueError, match=r"round_to must be an int >= 1 .*got " + re.escape(repr(round_to))) as err:
        sss.prune(gated, round_to=round_to)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("threshold", [-0.1, math.nan, math.inf, "0.1", True, None])
def test_prune_and_zero_small_factors_refuse_a_bad_threshold(threshold):
    gated = sss.attach(_small_cnn(), torch.randn(2, 3, 8, 8), "channel")
    for call in (lambda: sss.prune(gated, threshold), lambda: sss.zero_small_factors(gated, threshold)):
        with pytest.raises(ValueError, match=r"threshold must be a finite number >= 0 .*got ") as err:
            call()
        assert "\n" not in str(err.value)
    assert sss.gates(sss.prune(gated, round_to=2, threshold=0)) == []  # good values still work
    assert sss.zero_small_factors(gated, 0.0) == 0
