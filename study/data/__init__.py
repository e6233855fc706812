"""Audio data: sources (hub, folder, embedded toys), preprocessing, the prepared cache, loaders.

Submodules import lazily from here; this package never touches the network or disk on import.
"""


class DataError(ValueError):
    """A data problem the user can fix (missing files, empty split, no token); the message says how."""
