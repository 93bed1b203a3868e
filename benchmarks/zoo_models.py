"""The models of the prunability sweep (`prunability.py`): timm, torchvision and Hugging Face
models as their users build them, with random weights (nothing is downloaded), each with an
example input. timm, torchvision and transformers are optional: a source that is not installed
has no models here."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

NUM_CLASSES = 10
#: The image side tried first (fast); a model that refuses it runs at its own default size.
SMALL_IMAGE = 64
VOCAB = 128


@dataclass(frozen=True)
class ZooModel:
    """One model of the sweep: ``source:name`` (``timm:resnet18``), its family, and a builder."""

    source: str
    name: str
    family: str

    @property
    def key(self) -> str:
        return f"{self.source}:{self.name}"

    def build(self, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
        """The model in eval mode with seeded random weights, and one example input batch."""
        torch.manual_seed(seed)
        return _BUILDERS[self.source](self.name)


# ---------------------------------------------------------------------------------------------- timm
TIMM_FAMILIES: dict[str, list[str]] = {
    "ResNet": ["resnet18", "resnet26d", "resnet50d", "seresnext26d_32x4d", "wide_resnet50_2", "resnext26ts",
               "resnetv2_50", "res2net50_14w_8s", "resnest14d", "skresnet18", "gcresnet33ts", "eca_resnet33ts",
               "bat_resnext26ts", "botnet26t_256", "halonet26t", "lambda_resnet26t", "test_resnet"],
    "RegNet": ["regnetx_002", "regnety_002", "regnetz_b16"],
    "EfficientNet": ["efficientnet_b0", "efficientnet_lite0", "efficientnetv2_rw_t", "tf_efficientnetv2_b0",
                     "tinynet_e", "mixnet_s", "test_efficientnet", "test_efficientnet_gn", "test_efficientnet_ln"],
    "MobileNet": ["mobilenetv2_050", "mobilenetv3_small_050", "mobilenetv3_large_075", "mobilenetv4_conv_small",
                  "mnasnet_050", "semnasnet_050", "fbnetc_100", "lcnet_050", "hardcorenas_a"],
    "GhostNet": ["ghostnet_050", "ghostnetv2_100", "ghostnetv3_050"],
    "RepVGG / RepGhost / RepViT": ["repvgg_a0", "repghostnet_050", "repvit_m0_9"],
    "CSPNet / DarkNet": ["cspresnet50", "cspdarknet53", "cspresnext50", "darknet17", "cs3darknet_s"],
    "DenseNet / DPN": ["densenet121", "dpn68"],
    "Inception": ["inception_v3", "inception_v4", "inception_next_tiny"],
    "Xception": ["xception41", "legacy_xception"],
    "VGG": ["vgg11_bn", "vgg16"],
    "ConvNeXt": ["convnext_atto", "convnext_femto", "convnextv2_atto", "test_convnext", "test_convnext2"],
    "ViT / DeiT / EVA / BEiT": ["vit_tiny_patch16_224", "vit_small_patch16_224", "deit_tiny_patch16_224",
                                "deit_tiny_distilled_patch16_224", "eva02_tiny_patch14_224", "beitv2_base_patch16_224",
                                "vit_relpos_small_patch16_224", "flexivit_small", "test_vit", "test_vit2", "test_vit3",
                                "test_vit_relpos"],
    "Swin": ["swin_tiny_patch4_window7_224", "swinv2_cr_tiny_224"],
    "MaxViT / CoAtNet / CoaT": ["maxvit_nano_rw_256", "coatnet_nano_rw_224", "coat_lite_tiny", "test_maxvit",
                                "test_coatnet"],
    "LeViT": ["levit_128s", "levit_conv_128s"],
    "CaiT / XCiT / ConViT": ["cait_xxs24_224", "xcit_nano_12_p16_224", "convit_tiny"],
    "PVT / Twins": ["pvt_v2_b0", "twins_svt_small", "twins_pcpvt_small"],
    "PoolFormer / MetaFormer": ["poolformer_s12", "poolformerv2_s12", "mambaout_femto", "test_mambaout"],
    "MLP-Mixer / ResMLP / gMLP": ["mixer_s16_224", "resmlp_12_224", "gmlp_ti16_224"],
    "FastViT": ["fastvit_t8"],
    "TinyViT": ["tiny_vit_5m_224"],
    "EfficientFormer / EfficientViT": ["efficientformer_l1", "efficientformerv2_s0", "efficientvit_b0",
                                       "efficientvit_m0"],
    "MobileViT": ["mobilevit_xxs", "mobilevitv2_050"],
    "HRNet / DLA / EdgeNeXt": ["hrnet_w18_small", "dla34", "edgenext_xx_small"],
    "ReXNet / NFNet / other CNNs": ["rexnet_100", "nf_resnet26", "test_nfnet", "gernet_s", "hgnet_tiny",
                                    "hgnetv2_b0", "selecsls42b", "ese_vovnet19b_dw", "starnet_s050", "rdnet_tiny",
                                    "test_byobnet"],
    "Other transformers": ["crossvit_tiny_240", "pit_ti_224", "visformer_tiny", "davit_tiny", "focalnet_tiny_srf",
                           "nest_tiny", "sequencer2d_s", "hiera_tiny_224", "mvitv2_tiny", "volo_d1_224"],
}  # fmt: skip


def _timm(name: str) -> tuple[nn.Module, torch.Tensor]:
    import timm

    try:  # transformers take the image size as an argument; a 64-pixel model is ~12x cheaper
        small = timm.create_model(name, num_classes=NUM_CLASSES, img_size=SMALL_IMAGE).eval()
        with torch.no_grad():
            small(torch.randn(1, 3, SMALL_IMAGE, SMALL_IMAGE))
        return small, torch.randn(1, 3, SMALL_IMAGE, SMALL_IMAGE)
    except Exception:  # no img_size argument, or a model that does not run that small
        model = timm.create_model(name, num_classes=NUM_CLASSES)
    return _at_a_size_it_takes(model.eval(), model.pretrained_cfg.get("input_size", (3, 224, 224))[1:])


# ---------------------------------------------------------------------------------------- torchvision
def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _torchvision_family(name: str) -> str:
    for prefix, family in (("resnet", "ResNet"), ("wide_resnet", "ResNet"), ("resnext", "ResNet"),
                           ("regnet", "RegNet"), ("efficientnet", "EfficientNet"), ("mobilenet", "MobileNet"),
                           ("mnasnet", "MobileNet"), ("shufflenet", "ShuffleNet"), ("squeezenet", "SqueezeNet"),
                           ("densenet", "DenseNet / DPN"), ("inception", "Inception"), ("googlenet", "Inception"),
                           ("vgg", "VGG"), ("alexnet", "VGG"), ("convnext", "ConvNeXt"), ("swin", "Swin"),
                           ("maxvit", "MaxViT / CoAtNet / CoaT"), ("vit", "ViT / DeiT / EVA / BEiT")):  # fmt: skip
        if name.startswith(prefix):
            return family
    return "other"


def _torchvision(name: str) -> tuple[nn.Module, torch.Tensor]:
    import torchvision

    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, weights=None, num_classes=NUM_CLASSES, **kwargs)
    return _at_a_size_it_takes(model.eval(), (299, 299) if name == "inception_v3" else (224, 224))


def _at_a_size_it_takes(model: nn.Module, default: tuple[int, int]) -> tuple[nn.Module, torch.Tensor]:
    """The model and a 64-pixel example if its forward takes one, else one of its default size."""
    for side in (SMALL_IMAGE, *default[:1]):
        x = torch.randn(1, 3, side, side if side == SMALL_IMAGE else default[1])
        try:
            with torch.no_grad():
                model(x)
            return model, x
        except Exception:
            continue
    return model, torch.randn(1, 3, *default)


# -------------------------------------------------------------------------------------- Hugging Face
def _hf_configs() -> dict[str, tuple[str, Callable[[], nn.Module], str]]:
    """Name → (family, builder, input kind: ``image`` or ``tokens``), small configs."""
    import transformers as tf

    text = {"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 128, "max_position_embeddings": 64}  # fmt: skip
    gqa = {**text, "num_key_value_heads": 2}
    vit = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
           "image_size": 32, "patch_size": 8, "num_labels": NUM_CLASSES}  # fmt: skip
    swin = {"image_size": 32, "patch_size": 4, "embed_dim": 32, "depths": [1, 1], "num_heads": [2, 4],
            "window_size": 4, "num_labels": NUM_CLASSES}  # fmt: skip
    stages = {"hidden_sizes": [16, 32], "depths": [1, 1], "num_labels": NUM_CLASSES}
    convnext = {**stages, "num_stages": 2}
    gpt2 = {"vocab_size": VOCAB, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64, "bos_token_id": 0,
            "eos_token_id": 0}  # fmt: skip
    vits, decoders = "ViT / DeiT / EVA / BEiT", "Llama / Qwen / Mistral / Phi"
    return {
        "vit": (vits, lambda: tf.ViTForImageClassification(tf.ViTConfig(**vit)), "image"),
        "deit": (vits, lambda: tf.DeiTForImageClassification(tf.DeiTConfig(**vit)), "image"),
        "swin": ("Swin", lambda: tf.SwinForImageClassification(tf.SwinConfig(**swin)), "image"),
        "convnext": ("ConvNeXt", lambda: tf.ConvNextForImageClassification(tf.ConvNextConfig(**convnext)), "image"),
        "resnet": (
            "ResNet",
            lambda: tf.ResNetForImageClassification(tf.ResNetConfig(embedding_size=16, **stages)),
            "image",
        ),
        "bert": ("BERT", lambda: tf.BertForSequenceClassification(tf.BertConfig(**text, num_labels=3)), "tokens"),
        "gpt2": ("GPT", lambda: tf.GPT2LMHeadModel(tf.GPT2Config(**gpt2)), "tokens"),
        "llama": (decoders, lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**gqa)), "tokens"),
        "qwen2": (decoders, lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**gqa)), "tokens"),
        "mistral": (decoders, lambda: tf.MistralForCausalLM(tf.MistralConfig(**gqa)), "tokens"),
        "phi": (decoders, lambda: tf.PhiForCausalLM(tf.PhiConfig(**text)), "tokens"),
    }


#: Sizes for a model built from its ``model_type`` alone (a held-out probe): each one its config has
#: is set, the rest keep their defaults.
_SMALL = {"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128, "max_position_embeddings": 64,
          "pad_token_id": 0, "image_size": 32, "patch_size": 8, "num_labels": NUM_CLASSES,
          "hidden_sizes": [16, 32], "depths": [1, 1], "num_stages": 2, "embedding_size": 16}  # fmt: skip


def _hf_held_out(model_type: str) -> tuple[nn.Module, str]:
    """A small model of a Hugging Face ``model_type`` outside the list, and its input kind: a
    sequence classifier (or else a causal LM) for text, an image classifier for images."""
    import transformers as tf

    config = tf.AutoConfig.for_model(model_type)
    for key, value in _SMALL.items():
        if hasattr(config, key):
            setattr(config, key, value)
    image = hasattr(config, "image_size") or hasattr(config, "hidden_sizes")
    heads = (tf.AutoModelForImageClassification,) if image else (tf.AutoModelForSequenceClassification,
                                                                  tf.AutoModelForCausalLM)  # fmt: skip
    for auto in heads:
        try:
            return auto.from_config(config), "image" if image else "tokens"
        except ValueError:  # no such head for this type
            continue
    raise ValueError(f"{model_type}: no classification or causal-LM head in transformers")


def _hf(name: str) -> tuple[nn.Module, torch.Tensor]:
    configs = _hf_configs()
    if name in configs:
        _, build, inputs = configs[name]
        model = build().eval()
    else:
        model, inputs = _hf_held_out(name)
        model.eval()
    if inputs == "tokens":
        return model, torch.randint(0, VOCAB, (1, 16))
    return model, torch.randn(1, 3, 32, 32)


_BUILDERS: dict[str, Callable[[str], tuple[nn.Module, torch.Tensor]]] = {
    "timm": _timm, "torchvision": _torchvision, "hf": _hf,
}  # fmt: skip


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def zoo_models(sources: tuple[str, ...] = ("timm", "torchvision", "hf")) -> list[ZooModel]:
    """Every model of the sweep from the installed ``sources``."""
    out: list[ZooModel] = []
    if "timm" in sources and _installed("timm"):
        out += [ZooModel("timm", n, family) for family, names in TIMM_FAMILIES.items() for n in names]
    if "torchvision" in sources and _installed("torchvision"):
        out += [ZooModel("torchvision", n, _torchvision_family(n)) for n in _torchvision_names()]
    if "hf" in sources and _installed("transformers"):
        out += [ZooModel("hf", n, family) for n, (family, _, _) in _hf_configs().items()]
    return _round_robin(out)


def _round_robin(models: list[ZooModel]) -> list[ZooModel]:
    """The first model of every source's family, then every second, ...: a sweep stopped early
    has covered every family."""
    rank: dict[tuple[str, str], int] = {}
    order = []
    for m in models:
        k = rank[(m.source, m.family)] = rank.get((m.source, m.family), -1) + 1
        order.append((k, m))
    return [m for _, m in sorted(order, key=lambda t: t[0])]
