"""Exceptions with messages meant for users: each names the problem and how to fix it."""


class CRDetectError(Exception):
    """Base class of crdetect's user-facing errors (the CLI prints them as one line)."""


class InputError(CRDetectError, ValueError):
    """The image or file given to crdetect cannot be used as it is."""


class CheckpointError(CRDetectError, ValueError):
    """A checkpoint file is missing, corrupt or not a crdetect checkpoint."""


class OutputError(CRDetectError, OSError):
    """An output file cannot be written (exists, same as the input, directory not writable)."""


class OutputExistsError(OutputError):
    """The output exists (in a batch: it appeared after the run checked, another run wrote it); it was left as it
    is."""
