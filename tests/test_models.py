"""Every zoo model: builds, runs, has the documented size (golden counts)."""

import pytest
import torch

import sss
from sss.models.resnet_cifar import BasicBlock

ALL = sss.models.list_models()

# MACs at 3x32x32 / params with 10 classes. ResNet-56 with the option-A pad shortcut has
# 125.49M MACs and 0.85M params, the figures GAL reports for its baseline.
GOLDEN = {
    ("resnet20", "pad"): (40_551_040, 269_722),
    ("resnet56", "pad"): (125_485_696, 853_018),
    ("resnet56", "projection"): (125_747_840, 855_770),
    ("resnet110", "pad"): (252_887_680, 1_727_962),
    ("preact_resnet164", None): (247_646_720, 1_703_258),
    ("resnext29", None): (5_387_266_048, 34_426_698),  # 34.4M params, as Xie et al. report for 8x64d
    ("densenet40", None): (264_812_928, 1_019_722),
    ("googlenet", None): (1_521_756_160, 6_166_250),  # GAL's baseline: 1.52B FLOPs, 6.15M params
}


#: 28x28 inputs for the models sized for others.
SMALL_INPUT = {"vit_tiny": {"img_size": 28}}


@pytest.mark.parametrize("name", ALL)
def test_forward_shape(name):
    model = sss.models.create(name, num_classes=7, in_channels=1, **SMALL_INPUT.get(name, {})).eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)


@pytest.mark.parametrize(("name", "shortcut"), list(GOLDEN))
def test_golden_size(name, shortcut):
    kwargs = {"shortcut": shortcut} if shortcut else {}
    model = sss.models.create(name, num_classes=10, **kwargs)
    assert sss.count(model, torch.zeros(1, 3, 32, 32)) == GOLDEN[(name, shortcut)]


def test_vit_tiny_has_timms_size():
    """timm's vit_tiny_patch16_224 has 5,717,416 parameters; the MACs count the attention matmuls."""
    model = sss.models.create("vit_tiny")
    assert sss.count(model, torch.zeros(1, 3, 224, 224)) == (1_253_683_200, 5_717_416)
    assert "blocks.11.attn.qkv.weight" in model.state_dict() and "cls_token" in model.state_dict()


def test_block_counts_and_shortcut_type():
    model = sss.models.create("resnet56", shortcut="pad")
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 27
    assert type(blocks[9].shortcut).__name__ == "PadShortcut"
    assert isinstance(blocks[1].shortcut, torch.nn.Identity)
    projection = sss.models.create("resnet56")
    assert isinstance(projection.layer2[0].shortcut, torch.nn.Sequential)


def test_he_init():
    model = sss.models.create("resnet56")
    w = model.layer2[1].branch[0].weight
    assert abs(w.std().item() - (2 / (9 * 32)) ** 0.5) < 0.01


def test_unknown_model_names_choices():
    with pytest.raises(ValueError, match="resnet56"):
        sss.models.create("resnet57")
    with pytest.raises(ValueError, match="6n\\+2"):
        sss.models.resnet_cifar.CifarResNet(21)


@pytest.mark.parametrize(("name", "macs", "params"), [("resnet50", 4_089_184_256, 25_557_032),
                                                      ("resnext50_32x4d", 4_230_479_872, 25_028_904)])  # fmt: skip
def test_imagenet_models_match_torchvision(name, macs, params):
    # torchvision's published sizes (4.09/4.23 GFLOPs as multiply-adds, 25.56M/25.03M params), and
    # its layer names, so its pretrained state dicts load as they are.
    model = sss.models.create(name)
    assert sss.count(model, torch.zeros(1, 3, 224, 224)) == (macs, params)
    names = set(model.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.downsample.0.weight", "layer4.2.bn3.weight",
            "fc.bias"} <= names  # fmt: skip
