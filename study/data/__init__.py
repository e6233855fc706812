"""Audio data: sources (hub, folder, embedded toys), preprocessing, the prepared cache, loaders.

Submodules import lazily from here; this package never touches the network or disk on import.
"""


from study.errors import DataError

__all__ = ["DataError"]
