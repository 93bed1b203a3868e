"""GAL (Lin et al., CVPR 2019): label-free pruning by generative adversarial learning."""

from sss.gal.discriminator import Discriminator
from sss.gal.trainer import GALConfig, GALTrainer

__all__ = ["Discriminator", "GALConfig", "GALTrainer"]
