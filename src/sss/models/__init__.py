"""Model zoo: CIFAR-style ResNets and ResNeXt-29 (blocks, groups), LeNet-5 and VGG-16-BN (channels), ViTs (heads)."""

from sss.models.registry import create, list_models, model_parameters, register_model

# Importing the families registers their builders.
from sss.models import densenet_cifar, googlenet_cifar, plain, preact_resnet, resnet_cifar, resnext_cifar  # noqa: F401  isort: skip
from sss.models import resnet_imagenet, vit  # noqa: F401  isort: skip

__all__ = ["create", "list_models", "model_parameters", "register_model"]
