"""Physical removal of zero-factor structures."""

from sss.surgery.prune import prune, zero_small_factors

__all__ = ["prune", "zero_small_factors"]
