"""Command-line interface: ``sss train | prune | eval | demo | models``."""
