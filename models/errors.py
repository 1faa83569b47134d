"""The project's errors. Every error raised on purpose is a :class:`T4VError` whose message is one
readable sentence, safe to show to a client; ``server/errors.py`` maps each kind to its HTTP status
in one table, and the CLI prints it on one line."""


class T4VError(Exception):
    """Base of the errors this project raises on purpose."""


class InputError(T4VError, ValueError):
    """The request or file is not acceptable (bad options, empty file, ...); a ValueError too."""


class MediaError(InputError):
    """The file is not a video or image that can be decoded (or it is truncated/corrupt)."""


class MediaLimitExceeded(MediaError):
    """The file is past a limit checked from its header (pixels, aspect ratio, frames, duration): 413."""


class ModelLoadError(T4VError):
    """A model, its weights or a checkpoint could not be loaded as asked."""


class CheckpointMismatchError(ModelLoadError):
    """A checkpoint's keys or shapes do not fit the model it is loaded into."""
