"""Files the project writes: atomic writes, umask-respecting modes, writable-folder checks, names kept
inside their root. Nothing here leaves a temporary behind on error or writes outside the folder it is given."""

import errno
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from study.errors import ConfigError

TEMPORARY_SUFFIX = ".tmp"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def current_umask() -> int:
    """The process umask, read from /proc where possible (setting it to read it races with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """What open() would give a new file: 0o666 minus the umask (0o644 under umask 022)."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """What mkdir() would give a new folder: 0o777 minus the umask (0o755 under umask 022)."""
    return 0o777 & ~current_umask()


def make_temporary_folder(parent: Path, prefix: str) -> Path:
    """mkdtemp (0o700) widened to the mode a plain mkdir would give, so shared storage stays readable."""
    folder = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(folder, folder_mode())
    return folder


def write_atomic(path: Path, data: bytes) -> Path:
    """Write `data` to a temporary sibling (.<name>.<random>.tmp), fsync, rename onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        os.fchmod(descriptor, file_mode())
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


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the `.<name>.*.tmp` files that killed write_atomic calls left in `folder`.

    Only safe while no other process writes there (the caller holds the folder's lock)."""
    removed = []
    if Path(folder).is_dir():
        for stale in Path(folder).glob(f".*{TEMPORARY_SUFFIX}"):
            if stale.is_file():
                stale.unlink(missing_ok=True)
                removed.append(stale)
    return removed


def disk_problem(error: OSError) -> str:
    """A short cause and fix for the OSErrors of a folder that cannot take a write."""
    if error.errno == errno.ENOSPC or error.errno == errno.EDQUOT:
        return "no space left on the device (or quota exceeded); free space there"
    if error.errno == errno.EROFS:
        return "the file system is read-only; mount it read-write"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied; fix the folder's permissions"
    return f"{error.strerror or error}"


def check_writable(folder: Path, setting: str) -> Path:
    """Create `folder` and write, fsync and delete a small probe file in it, or raise ConfigError
    naming the folder, the cause and the `setting` (e.g. paths.runs) that chooses another one."""
    folder = Path(folder).expanduser()
    probe = folder / f".write-probe-{os.getpid()}-{secrets.token_hex(4)}{TEMPORARY_SUFFIX}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"\0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise ConfigError(f"cannot write to {folder}: {disk_problem(error)}, or set {setting}=... to a "
                         "writable folder") from error
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
    return folder


def checked_name(value: str, what: str, fix: str) -> str:
    """`value` if it is a plain name (letters, digits, '.', '_', '-'; no '/', no leading dot), so that
    root / value stays inside root; otherwise ConfigError naming `what` and `fix`."""
    text = str(value)
    if not NAME_PATTERN.fullmatch(text):
        raise ConfigError(f"{what}={text!r} is not a plain name: use letters, digits, '.', '_' and '-' only, "
                         f"starting with a letter or digit (no '/', no '..'); {fix}")
    return text


def inside(root: Path, path: Path, what: str) -> Path:
    """`path` resolved, if it lies inside `root` resolved; otherwise ConfigError."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if resolved != base and base not in resolved.parents:
        raise ConfigError(f"{what} resolves to {resolved}, outside {base}; choose a name inside {base}")
    return resolved


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
        self.temporary = make_temporary_folder(self.path.parent, prefix=f".{self.path.name}.tmp-")

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
