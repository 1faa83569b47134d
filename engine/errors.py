"""Errors about a client's input. Their messages are safe to show to the client."""


class InputError(Exception):
    """The request or file is not acceptable (bad options, empty file, ...)."""


class MediaError(InputError):
    """The file is not a video or image that can be decoded (or it is truncated/corrupt)."""
