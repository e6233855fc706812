"""The project's error types: one per layer, all under `StudyError`, each message naming the cause and the fix.

The CLI prints a `StudyError` as one line and exits 2; anything else is a bug and keeps its traceback.
"""


class StudyError(ValueError):
    """A problem the user can fix: the message says what is wrong and what to do instead."""


class ConfigError(StudyError):
    """A configuration that cannot be composed or does not make sense."""


class DataError(StudyError):
    """A data problem (missing files, empty split, no token, unreadable audio)."""


class CheckpointError(StudyError):
    """A checkpoint that is missing, corrupt, of another format or of another architecture.

    The sha256 digest in a checkpoint detects corruption and truncation, not forgery: a file is never
    unpickled beyond `torch.load(weights_only=True)`, which is what keeps a hostile file from running code.
    """


class StudyDefinitionError(StudyError):
    """A study that cannot run as asked (unknown name, bad definition, missing resources)."""


class GenerationError(StudyError):
    """A generation request that cannot be served."""
