"""How a training run ends: SIGINT/SIGTERM deferred to a step boundary (then a final checkpoint), and the
end state (failed, interrupted) recorded in run.json. It never lets a failed record write hide the run's error.
"""

import logging
import signal
import threading
from pathlib import Path

from study.training.record import update_record

log = logging.getLogger(__name__)


class RunInterrupted(Exception):
    """SIGINT or SIGTERM arrived; the run stopped at a step boundary after writing last.pt."""

    def __init__(self, signal_number: int, message: str = ""):
        super().__init__(message or f"interrupted by {signal.Signals(signal_number).name}")
        self.signal_number = signal_number


class InterruptGuard:
    """SIGINT/SIGTERM handlers for the main thread: during training steps they only raise a flag
    (the loop stops after the step and writes a final checkpoint); elsewhere they stop at once."""

    def __init__(self):
        self.pending: int | None = None
        self.deferred = False
        self.previous = {}

    def _handle(self, number, frame):
        if self.deferred and self.pending is None:
            self.pending = number
            log.warning("%s received: stopping after this step and writing a final checkpoint",
                        signal.Signals(number).name)
            return
        raise RunInterrupted(number)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}


def mark_end_state(run_dir: Path, **fields) -> None:
    """Record the run's end state; a record that cannot be written (full disk) must not hide the error."""
    try:
        update_record(run_dir, **fields)
    except OSError as error:
        log.error("could not update %s: %s", run_dir / "run.json", error)
