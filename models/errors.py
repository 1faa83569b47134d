"""Errors raised while building models; the CLI and the server turn them into messages."""


class ModelLoadError(Exception):
    """A model, its weights or a checkpoint could not be loaded as asked."""


class CheckpointMismatchError(ModelLoadError):
    """A checkpoint's keys or shapes do not fit the model it is loaded into."""
