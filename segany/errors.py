"""Errors that the command line reports as one line."""


class SegAnyError(ValueError):
    """Bad input: a file, a field or a shape that cannot be used, with the reason."""


class CheckpointError(SegAnyError):
    """A checkpoint that cannot be read or does not fit the model."""


class ImageError(SegAnyError):
    """An image that cannot be read or converted."""
