"""Live progress of a study's trials: each trial writes <run_dir>/progress.json as it trains, and the
driver polls those files and shows a bar per trial on a terminal, plain lines otherwise (CI, logs).

It only reads and writes progress.json; it never touches a run's record, checkpoints or results.
"""

import json
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from study.files import write_atomic

PROGRESS_FILE = "progress.json"


@dataclass
class TrialProgress:
    """Where a training run is; epochs count from 1, steps within the epoch from 1."""
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    tokens_per_second: float
    eta_seconds: float | None
    updated: float

    @property
    def fraction(self) -> float:
        total = self.epochs * self.steps
        return ((self.epoch - 1) * self.steps + self.step) / total if total else 0.0


class ProgressWriter:
    """Called by the training loop after every step; writes progress.json at most every
    `interval_seconds` (and at each epoch's last step), atomically, so a reader never sees half a file."""

    def __init__(self, run_dir: Path, interval_seconds: float = 1.0):
        self.path = Path(run_dir) / PROGRESS_FILE
        self.interval_seconds = interval_seconds
        self.started = time.time()
        self.first_fraction: float | None = None
        self.last_write = 0.0

    def __call__(self, epoch: int, epochs: int, step: int, steps: int, loss: float, tokens_per_second: float) -> None:
        now = time.time()
        progress = TrialProgress(epoch, epochs, step, steps, loss, tokens_per_second, None, now)
        if self.first_fraction is None:  # a resumed run starts part-way: time only what this process did
            self.first_fraction = progress.fraction - 1 / max(1, epochs * steps)
        done = progress.fraction - self.first_fraction
        if done > 0:
            progress.eta_seconds = (now - self.started) * (1 - progress.fraction) / done
        if now - self.last_write >= self.interval_seconds or step == steps:
            write_atomic(self.path, json.dumps(asdict(progress)).encode())
            self.last_write = now


def read_progress(run_dir: Path) -> TrialProgress | None:
    """The trial's latest progress, or None before its first step (or if the file is unreadable)."""
    try:
        return TrialProgress(**json.loads((Path(run_dir) / PROGRESS_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def describe(progress: TrialProgress) -> str:
    """'epoch 2/4 step 17/40 | 12,345 tokens/s | loss 4.2101 | ETA 01:23'."""
    return (f"epoch {progress.epoch}/{progress.epochs} step {progress.step}/{progress.steps} | "
            f"{progress.tokens_per_second:,.0f} tokens/s | loss {progress.loss:.4f} | ETA {clock(progress.eta_seconds)}")


@dataclass
class Watched:
    """A trial the monitor shows: its number in the study, label and folder."""
    number: int
    label: str
    run_dir: Path


class ProgressMonitor:
    """Polls progress.json (and run.json for the end) of each watched trial every `poll_seconds`.

    On a terminal: one tqdm bar per trial. Otherwise: one line per trial at each new epoch and at most
    every `line_seconds` in between, and one when it finishes or fails.
    """

    def __init__(self, trials: list[Watched], total: int, stream: TextIO | None = None,
                 terminal: bool | None = None, poll_seconds: float = 1.0, line_seconds: float = 30.0):
        self.trials, self.total = trials, total
        self.stream = stream or sys.stdout
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.poll_seconds, self.line_seconds = poll_seconds, line_seconds
        self.shown: dict[int, tuple] = {}       # trial number -> (epoch, step) last shown
        self.last_line: dict[int, float] = {}   # trial number -> time of its last plain line
        self.ended: set[int] = set()
        self.initial_status = {trial.number: self._status(trial)[0] for trial in trials}
        self.bars: dict = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def name(self, trial: Watched) -> str:
        return f"trial {trial.number}/{self.total} {trial.label}"

    def poll(self) -> None:
        """Show what changed since the last poll (the thread calls this; tests may call it directly)."""
        for trial in self.trials:
            if trial.number in self.ended:
                continue
            progress = read_progress(trial.run_dir)
            if progress is not None:
                self._show(trial, progress)
            status, record = self._status(trial)
            # a failed status left by an earlier attempt is not news: Ray may be retrying it now
            if status == "finished" or (status == "failed" and self.initial_status[trial.number] != "failed"):
                self._end(trial, status, record)

    @staticmethod
    def _status(trial: Watched) -> tuple[str | None, dict]:
        from study.training.record import read_record
        record = read_record(trial.run_dir)
        return record.get("status"), record

    def _show(self, trial: Watched, progress: TrialProgress) -> None:
        position = (progress.epoch, progress.step)
        if self.shown.get(trial.number) == position:
            return
        if self.terminal:
            bar = self._bar(trial, progress)
            bar.n = round(progress.fraction * bar.total)
            bar.set_postfix_str(describe(progress).replace(" | ETA", " | trial ETA"), refresh=False)
            bar.refresh()
        else:
            new_epoch = self.shown.get(trial.number, (None,))[0] != progress.epoch
            if new_epoch or time.time() - self.last_line.get(trial.number, 0.0) >= self.line_seconds:
                self._line(f"{self.name(trial)}: {describe(progress)}")
                self.last_line[trial.number] = time.time()
        self.shown[trial.number] = position

    def _bar(self, trial: Watched, progress: TrialProgress):
        if trial.number not in self.bars:
            from tqdm import tqdm
            self.bars[trial.number] = tqdm(total=progress.epochs * progress.steps, desc=self.name(trial),
                                           position=len(self.bars), file=self.stream, dynamic_ncols=True,
                                           unit="step", leave=True)
        return self.bars[trial.number]

    def _end(self, trial: Watched, status: str, record: dict) -> None:
        self.ended.add(trial.number)
        if trial.number in self.bars:
            self.bars.pop(trial.number).close()
        if status == "finished":
            bpb = (record.get("final_metrics") or {}).get("final/val/bpb")
            wall = record.get("wall_seconds")
            self._line(f"{self.name(trial)}: finished" + (f", val bpb {bpb:.4f}" if bpb is not None else "")
                       + (f", {clock(wall)}" if wall is not None else ""))
        else:
            self._line(f"{self.name(trial)}: failed: {record.get('error') or 'see its run.json'}")

    def _line(self, text: str) -> None:
        if self.terminal and self.bars:
            from tqdm import tqdm
            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.poll()

    def __enter__(self) -> "ProgressMonitor":
        self._thread = threading.Thread(target=self._run, name="study-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()  # the last state, e.g. a trial that finished between two polls
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
