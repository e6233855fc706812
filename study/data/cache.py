"""Build-once folders (file lock + temporary sibling + atomic rename) and memoised file content hashes.

Safe when several processes (Ray trials) ask for the same folder at once; never deletes anything
except its own temporary folders, and never exposes a half-built folder under its final name.
"""

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

from study.files import StagingFolder, write_atomic

log = logging.getLogger(__name__)
HASH_ALGORITHM = "sha256"
HASH_MEMO_NAME = "file-hashes.json"  # in paths.data_cache


def build_once(target: Path, build: Callable[[Path], None]) -> bool:
    """Make `target` by build(temporary folder) then rename, unless it exists; True if this call built it.

    Protocol: if target exists it is complete (it only ever appears by rename). Otherwise take
    <target>.lock, check again, remove stale temporaries left by killed builds, build into
    a StagingFolder next to target (.<target>.tmp-*), renamed onto it (atomic on one file system).
    A second process blocks on the lock, then finds target and reuses it. If build raises, the
    temporary folder is removed and the error propagates.
    """
    if target.is_dir():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f"{target.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process to finish building %s", target)
        lock.acquire()
    try:
        if target.is_dir():
            return False
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        with StagingFolder(target) as temporary:
            build(temporary)
        return True
    finally:
        lock.release()


def file_hash(path: Path) -> str:
    """Hex digest of the file's bytes (sha256)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, HASH_ALGORITHM).hexdigest()


def file_hashes(paths: list[Path], memo_path: Path | None = None) -> list[str]:
    """Content hashes of `paths`, reusing earlier results keyed by (resolved path, size, mtime_ns).

    The memo is a JSON file rewritten atomically; a lost or unreadable memo only costs rehashing.
    """
    memo: dict[str, str] = {}
    if memo_path is not None and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
    hashes, changed = [], False
    for path in paths:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in memo:
            memo[key] = file_hash(path)
            changed = True
        hashes.append(memo[key])
    if changed and memo_path is not None:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(memo_path, json.dumps(memo, indent=0, sort_keys=True).encode())
    return hashes
