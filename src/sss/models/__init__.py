"""Model zoo: CIFAR-style ResNets whose residual blocks SSS can remove."""

from sss.models.registry import create, list_models, register_model

# Importing the families registers their builders.
from sss.models import preact_resnet, resnet_cifar  # noqa: F401  isort: skip

__all__ = ["create", "list_models", "register_model"]
