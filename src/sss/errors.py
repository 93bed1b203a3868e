"""Exceptions with messages that name the problem and the fix."""


class SSSError(Exception):
    """Base class of every error this library raises on purpose."""


class UnsupportedModelError(SSSError, ValueError):
    """The model has a layer or structure that cannot be gated or removed."""


class CheckpointError(SSSError, OSError):
    """A checkpoint or saved model is missing, truncated or not an sss file."""


class TrainingDivergedError(SSSError, RuntimeError):
    """The loss became NaN or infinite."""


class DataError(SSSError, ValueError):
    """A dataset folder or file is missing or malformed."""


class RunFolderError(SSSError, OSError):
    """A run's output folder is in use, holds another run, or cannot be written."""


class SelectionCollapsedError(SSSError, RuntimeError):
    """The selection removed every path from the input to the output."""


class MissingDependencyError(SSSError, ImportError):
    """An optional package that a feature needs is not installed."""


class UntrustedCodeError(SSSError, ValueError):
    """A file names code outside sss's registries (``pkg.module:factory``) that the caller did not trust."""
