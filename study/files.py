"""Atomic writes of files and folders: a temporary sibling, then rename, so readers see the old file
or the new one (a folder whole or not at all), never a torn one. Nothing is left behind on error.
"""

import os
import shutil
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


class OccupiedError(FileExistsError):
    """The destination of a StagingFolder is a file or a folder with something in it."""


class StagingFolder:
    """A temporary sibling folder `.NAME.tmp-*`, renamed onto `path` once everything is written in it.

    Made at once, so an occupied or unwritable destination fails before any work: OccupiedError if
    `path` is a file or a non-empty folder (an empty one is replaced), OSError if it cannot be made.
    Nothing existing is ever overwritten. As a context manager it yields the temporary folder,
    commits when the block succeeds and discards the temporary folder when it raises.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path).expanduser()
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise OccupiedError(f"{self.path} already exists and is not an empty folder")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.temporary = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.tmp-"))

    def commit(self) -> Path:
        if self.path.is_dir():
            self.path.rmdir()  # empty (checked at start); fails loudly if something appeared meanwhile
        os.rename(self.temporary, self.path)
        return self.path

    def discard(self) -> None:
        shutil.rmtree(self.temporary, ignore_errors=True)

    def __enter__(self) -> Path:
        return self.temporary

    def __exit__(self, kind, error, traceback) -> bool:
        if kind is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()
        return False
