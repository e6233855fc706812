"""One engine for all listeners: every live stream advances in one batched engine call per step.

Streams join and leave between steps (a fresh stream joins at a step boundary, which is always a whole
number of pooling periods, so every row of a batch has the same pooling phase); waiting requests
queue in order. Each stream's random numbers are its own (seed, stream, sample index), so a stream's
tokens are those `study generate` draws, whoever shares its batch. It never blocks on a listener.
"""

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from study.generation.prompts import Prompt
from study.generation.sampling import GOLDEN, MASK64, SamplingSettings, stream_keys
from study.serve.settings import StreamSettings

log = logging.getLogger(__name__)


class Busy(RuntimeError):
    """Every slot is taken and the queue is full."""


@dataclass(eq=False)
class Stream:
    """One continuation: its tokens so far and, while waiting to join a batch, its own engine state."""
    job: "Job"
    index: int                 # variation k of its request: its global stream index for the random numbers
    key: int                   # stream_keys(seed, [k])[0]
    tokens: np.ndarray         # (length,) int64, filled as generated
    logp_model: np.ndarray     # (length,) float64
    logp_sample: np.ndarray    # (length,) float64
    life: int = 0              # samples fed so far: prompt (teacher-forced) then continuation
    last_token: int = 0        # the output of the last step, fed at the next one
    state: object = None       # an engine state of one row while not in a batch

    @property
    def generated(self) -> int:
        return int(min(max(self.life - len(self.job.prompt.tokens), 0), len(self.tokens)))

    @property
    def finished(self) -> bool:
        return self.generated >= len(self.tokens)


class Job:
    """A request: a prompt, its settings and `n` streams; status queued -> running -> done | stopped | failed."""

    def __init__(self, job_id: str, settings: StreamSettings, prompt: Prompt, length: int, sample_rate: int,
                 upload_name: str | None = None):
        self.id = job_id
        self.settings = settings
        self.prompt = prompt
        self.upload_name = upload_name
        self.sample_rate = sample_rate
        self.sampling = SamplingSettings(settings.temperature, settings.top_k, settings.top_p)
        keys = stream_keys(settings.seed, np.arange(settings.n))
        self.streams = [Stream(self, k, int(keys[k]), np.zeros(length, np.int64), np.zeros(length),
                               np.zeros(length)) for k in range(settings.n)]
        self.prompt_logp = np.zeros(len(prompt.tokens))
        self.status = "queued"
        self.error: str | None = None
        self.created = time.perf_counter()
        self.started: float | None = None          # admitted to the engine
        self.first_audio: float | None = None      # first continuation sample generated
        self.began_continuation: float | None = None
        self.updated: float | None = None
        self.finished_at: float | None = None
        self.stop_requested_step: int | None = None
        self.end_step: int | None = None
        self.listeners: list[Callable[[], None]] = []   # called from the engine thread after each change
        self.sent = [0] * settings.n                    # samples of each stream a listener has been sent
        self.has_listener = False
        self.folder = None                              # outputs, written on first download
        self.lock = threading.Lock()

    @property
    def length(self) -> int:
        return len(self.streams[0].tokens)

    @property
    def generated(self) -> int:
        return min(stream.generated for stream in self.streams)

    @property
    def ended(self) -> bool:
        return self.status in ("done", "stopped", "failed")

    def real_time_factor(self) -> float | None:
        """Seconds of continuation per wall-clock second, per stream (as `study generate` reports it)."""
        if self.began_continuation is None or self.updated is None or self.updated <= self.began_continuation:
            return None
        return self.generated / self.sample_rate / (self.updated - self.began_continuation)

    def notify(self) -> None:
        for listener in list(self.listeners):
            listener()


@dataclass
class Group:
    """The live streams that share one sampling setting, one engine state row each, in row order."""
    sampling: SamplingSettings
    rows: list[Stream] = field(default_factory=list)
    state: object = None


class Scheduler:
    """Runs the engine on its own thread; the only code that touches the engine after start-up."""

    def __init__(self, engine, period: int, chunk_samples: int, max_streams: int, max_queue: int, zero_token: int,
                 buffer_samples: int):
        self.engine = engine
        self.period = period
        self.chunk = -(-chunk_samples // period) * period   # whole pooling periods: every row keeps phase 0
        self.max_streams = max_streams
        self.max_queue = max_queue
        self.zero_token = zero_token
        self.buffer_samples = buffer_samples
        self.steps = 0                      # engine steps taken (all groups advance once per step)
        self.step_log: deque[tuple[int, float, int]] = deque(maxlen=256)   # (streams, seconds, samples per row)
        self._queue: deque[Job] = deque()
        self._admitted: list[Stream] = []   # holding a slot: in a group's batch or waiting (new or parked)
        self._groups: dict[SamplingSettings, Group] = {}
        self._running: list[Job] = []       # admitted jobs not yet ended
        self._condition = threading.Condition()
        self._alive = False
        self._thread: threading.Thread | None = None

    # -- called from the web server ----------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Admits the job at once when its streams fit, else queues it; raises Busy when the queue is full."""
        with self._condition:
            fits_now = not self._queue and self.slots_used() + len(job.streams) <= self.max_streams
            if not fits_now and len(self._queue) >= self.max_queue:
                raise Busy(f"{self.slots_used()} of {self.max_streams} streams are in use and {len(self._queue)} "
                           f"requests are waiting (max_queue={self.max_queue}); try again in a few seconds")
            self._queue.append(job)
            self._admit()   # holds its slots now: concurrent requests see them taken
            self._condition.notify_all()

    def stop(self, job: Job) -> None:
        """Ends the job's streams at the next step boundary (a queued job leaves the queue at once)."""
        with self._condition:
            if job.ended:
                return
            if job.stop_requested_step is None:
                job.stop_requested_step = self.steps
            if job in self._queue:
                self._queue.remove(job)
                self._finish(job, "stopped")
            self._condition.notify_all()
        job.notify()

    def queue_position(self, job: Job) -> int | None:
        """1 for the next job to start; None when not queued."""
        with self._condition:
            return self._queue.index(job) + 1 if job in self._queue else None

    def slots_used(self) -> int:
        return len(self._admitted)

    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._alive = True
        self._thread = threading.Thread(target=self._loop, name="study-serve-engine", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._condition:
            self._alive = False
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wake(self) -> None:
        """A listener took audio: a parked stream may run again."""
        with self._condition:
            self._condition.notify_all()

    # -- the engine thread ---------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._steps()
        except Exception as error:  # a bug, not a client's doing: every job hears it, none waits forever
            log.exception("the engine thread stopped")
            with self._condition:
                jobs = list(self._queue) + self._running
                for job in jobs:
                    job.status, job.error = "failed", f"the engine thread stopped: {error!r}"
                self._queue.clear()
            for job in jobs:
                job.notify()

    def _steps(self) -> None:
        while True:
            with self._condition:
                if not self._alive:
                    return
                self._admit()
                changed = self._leave_and_join()
                if not any(group.rows for group in self._groups.values()):
                    for job in changed:
                        job.notify()
                    self._condition.wait(timeout=0.5)
                    continue
                groups = [group for group in self._groups.values() if group.rows]
            for job in changed:
                job.notify()
            touched: set[Job] = set()
            for group in groups:
                touched.update(self._run(group))
            self.steps += 1
            for job in touched:
                job.notify()

    def _admit(self) -> None:
        while self._queue and self.slots_used() + len(self._queue[0].streams) <= self.max_streams:
            job = self._queue.popleft()
            job.status, job.started = "running", time.perf_counter()
            self._running.append(job)
            for stream in job.streams:
                stream.state = self.engine.new_state(1)   # position 0: joins any group at a step boundary
                self._admitted.append(stream)

    def _parked(self, stream: Stream) -> bool:
        job = stream.job
        return job.has_listener and stream.generated - job.sent[stream.index] >= self.buffer_samples

    def _leave_and_join(self) -> set[Job]:
        """Between steps: finished and stopped streams leave, listeners' full buffers park their streams,
        waiting streams join their group's batch. Returns the jobs that ended."""
        self._admitted = [stream for stream in self._admitted
                          if not (stream.finished or stream.job.stop_requested_step is not None
                                  or stream.job.status == "failed")]
        holding = {id(stream) for stream in self._admitted}
        for group in self._groups.values():
            keep = []
            for row, stream in enumerate(group.rows):
                if id(stream) not in holding:
                    continue
                if self._parked(stream):
                    stream.state = self.engine.select(group.state, [row])   # waits outside the batch
                else:
                    keep.append(row)
            if len(keep) < len(group.rows):
                group.state = self.engine.select(group.state, keep) if keep else None
                group.rows = [group.rows[row] for row in keep]
        for stream in self._admitted:
            if stream.state is not None and not self._parked(stream):
                group = self._groups.setdefault(stream.job.sampling, Group(stream.job.sampling))
                group.state = self.engine.join([group.state, stream.state]) if group.state is not None else stream.state
                group.rows.append(stream)
                stream.state = None
        for sampling in [key for key, group in self._groups.items() if not group.rows]:
            del self._groups[sampling]
        ended = set()
        for job in list(self._running):
            if not any(id(stream) in holding for stream in job.streams):
                self._running.remove(job)
                if not job.ended:
                    self._finish(job, "stopped" if job.stop_requested_step is not None else "done")
                ended.add(job)
        return ended

    def _finish(self, job: Job, status: str) -> None:
        job.status = status
        job.finished_at = time.perf_counter()
        job.end_step = self.steps

    def _run(self, group: Group) -> set[Job]:
        """One engine call of `chunk` samples for every row of the group."""
        rows = group.rows
        batch, chunk = len(rows), self.chunk
        forced = np.full((batch, chunk), -1, np.int64)
        first = np.empty(batch, np.int64)
        keys = np.empty(batch, np.uint64)
        for b, stream in enumerate(rows):
            prompt = stream.job.prompt.tokens
            if stream.life < len(prompt):
                part = prompt[stream.life:stream.life + chunk]
                forced[b, :len(part)] = part
            first[b] = self.zero_token if stream.life == 0 else stream.last_token
            # u(key, c + t) with the batch counter c = 0 equals u(key', continuation sample index + t):
            # key' = key + GOLDEN * (life - P), wrapping (the definition in study.generation.sampling)
            keys[b] = (stream.key + GOLDEN * (stream.life - len(prompt))) & MASK64
        began = time.perf_counter()
        try:
            out = self.engine.run(group.state, first, forced, keys, 0, group.sampling)
        except Exception as error:  # the engine is broken for this batch: say so to each of its listeners
            log.exception("engine step failed")
            with self._condition:
                for stream in rows:
                    stream.job.status, stream.job.error = "failed", f"engine step failed: {error}"
                group.rows, group.state = [], None
            return {stream.job for stream in rows}
        now = time.perf_counter()
        self.step_log.append((batch, now - began, chunk))
        touched = set()
        for b, stream in enumerate(rows):
            job = stream.job
            prompt_length, start = len(job.prompt.tokens), stream.life
            if stream.index == 0 and start < prompt_length:
                count = min(chunk, prompt_length - start)
                job.prompt_logp[start:start + count] = out.logp_model[b, :count]
            low = max(0, prompt_length - start)                 # first step of this chunk that is continuation
            high = min(chunk, prompt_length + job.length - start)
            if high > low:
                where = slice(start + low - prompt_length, start + high - prompt_length)
                stream.tokens[where] = out.tokens[b, low:high]
                stream.logp_model[where] = out.logp_model[b, low:high]
                stream.logp_sample[where] = out.logp_sample[b, low:high]
                if job.began_continuation is None:
                    job.began_continuation = began
                if job.first_audio is None:
                    job.first_audio = now
            stream.life += chunk
            stream.last_token = int(out.tokens[b, -1])
            job.updated = now
            touched.add(job)
        return touched
