"""An exclusive lock per run folder (fcntl.flock on <run>/train.lock), naming its holder's pid and host.

The kernel drops the lock when its holder dies, so a lock left by a dead process is taken over; it never
lets two processes train one folder, and it never deletes the lock file (deleting would race a waiter).
"""

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from study.errors import StudyError

log = logging.getLogger(__name__)
LOCK_NAME = "train.lock"


class RunLockedError(StudyError):
    """Another process holds the run folder's lock."""


def holder_of(text: str) -> dict:
    try:
        holder = json.loads(text)
        return holder if isinstance(holder, dict) else {}
    except ValueError:
        return {}


class RunLock:
    """`with RunLock(run_dir, signature):` holds the folder's lock or raises RunLockedError at once."""

    def __init__(self, run_dir: Path, label: str):
        self.path = Path(run_dir) / LOCK_NAME
        self.label = label
        self.descriptor: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = holder_of(os.pread(descriptor, 4096, 0).decode(errors="replace"))
            os.close(descriptor)
            raise RunLockedError(
                f"run {self.label} is already being trained by pid {holder.get('pid', '?')} on host "
                f"{holder.get('host', '?')} (lock {self.path}); wait for it to end, stop it, or train another "
                "config") from None
        previous = holder_of(os.pread(descriptor, 4096, 0).decode(errors="replace"))
        if previous:
            log.info("taking over the lock of %s from pid %s on host %s, which no longer holds it", self.path,
                     previous.get("pid"), previous.get("host"))
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                          "since": time.time()}).encode(), 0)
        self.descriptor = descriptor
        return self

    def release(self) -> None:
        if self.descriptor is not None:
            os.ftruncate(self.descriptor, 0)
            fcntl.flock(self.descriptor, fcntl.LOCK_UN)
            os.close(self.descriptor)
            self.descriptor = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
