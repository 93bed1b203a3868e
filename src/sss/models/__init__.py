"""Model zoo: CIFAR-style ResNets (blocks), LeNet-5 and VGG-16-BN (channels and neurons)."""

from sss.models.registry import create, list_models, register_model

# Importing the families registers their builders.
from sss.models import plain, preact_resnet, resnet_cifar  # noqa: F401  isort: skip

__all__ = ["create", "list_models", "register_model"]
