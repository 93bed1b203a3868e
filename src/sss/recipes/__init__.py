"""Recipes: whole jobs built from the library. ``demo`` (SSS on Fashion-MNIST, end to end),
``compress`` (a trained model to a budget), ``report`` (tables comparing saved models); their
YAML configs ship in ``recipes/configs/`` (``configs/`` at the repo root)."""
