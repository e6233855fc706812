"""Generation backend 'numba': the fused CPU loop of `numba_network` behind the engine Protocol.

Streams of a batch are split over threads (no synchronisation per sample); the linear layers' weights
are stored in fp32, bf16, int8 or w8a8 (int8 weights and 8-bit activations; the reduced ones with the
compact S4 step), or two of them ('auto': w8a8 when sampling, fp32 when greedy, on one shared state);
the first call of a process says so when numba is compiling, after clearing numba's cache if any
engine source changed. It never changes the model.
"""

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch

from study.generation.engines import numba_kernels, numba_math, numba_network, numba_sampler, numba_ssm, numba_w8a8
from study.generation.engines.numba_cache import clear_if_sources_changed
from study.generation.engines.numba_network import PRECISIONS, FlatNetwork, flatten, run_steps
from study.generation.engines.numba_plan import network_plan
from study.generation.engines.protocol import EngineState, StepOutputs, check_batch, joined_position
from study.generation.sampling import SamplingSettings
from study.sashimi import SaShiMi


def default_threads(batch_size: int) -> int:
    """One thread per core this process may use, at most one per stream."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, batch_size))


# 'auto': the weight storage when sampling (w8a8 moves the likelihood by ~2e-4 bits/sample at full size, int8
# weights alone by 5e-5..1e-4, the compact S4 step alone by ~4e-8; tests/generation/test_precision.py) and at
# temperature 0 (greedy streams stay those of the reference step).
SAMPLING_PRECISION, GREEDY_PRECISION = "w8a8", "fp32"
COMPILE_NOTICE_SECONDS = 1.0   # say so when compiling takes longer than this
_compiled: set[str] = set()     # precisions whose `run_steps` is compiled or loaded in this process
# the modules whose functions `run_steps` compiles in; numba's cache of them is cleared when any changed
ENGINE_MODULES = [numba_math, numba_kernels, numba_sampler, numba_ssm, numba_w8a8, numba_network]
_compile_lock = threading.Lock()


def _compiling(misses_before: int = 0) -> bool:
    """True once numba found no cached machine code for `run_steps` since `misses_before` (it compiles then)."""
    return sum(run_steps.stats.cache_misses.values()) > misses_before


def _warm_up(flat: FlatNetwork) -> None:
    """Compile `run_steps` for this weight storage (or load it from numba's cache) with a one-sample call
    on scratch arrays, once per process; when it compiles, say so while it runs, and how long it took."""
    with _compile_lock:
        if flat.precision in _compiled:
            return
        if not _compiled:
            clear_if_sources_changed(ENGINE_MODULES)
        misses = sum(run_steps.stats.cache_misses.values())
        notice = threading.Timer(COMPILE_NOTICE_SECONDS, lambda: _compiling(misses) and print(
            "compiling the CPU engine (~30 s on an idle machine, cached afterwards)", file=sys.stderr, flush=True))
        notice.daemon = True
        started = time.perf_counter()
        notice.start()
        try:
            run_steps(flat.params, flat.weights, flat.levels, flat.blocks, flat.head, flat.norm_eps, flat.program, flat.program_lengths,
                      np.zeros((1, flat.state_size), np.float32), 0, np.zeros(1, np.int64), np.full((1, 1), -1),
                      np.zeros(1, np.uint64), 0, 1.0, 0, 1.0, np.empty((1, 1), np.int64), np.empty((1, 1)),
                      np.empty((1, 1)), np.empty((1, 0, flat.n_classes), np.float32))
        finally:
            notice.cancel()
        _compiled.add(flat.precision)
        if _compiling(misses):
            print(f"compiled the CPU engine in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


class FastEngine:
    """Generation backend 'numba': `run_steps` on CPU, streams split over threads (no sync per sample)."""

    name = "numba"
    device = torch.device("cpu")

    def __init__(self, model: SaShiMi, threads: int | None = None, precision: str = "fp32"):
        """precision: 'fp32', 'bf16', 'int8', 'w8a8' or 'auto' (w8a8 when sampling: the likelihood moves by ~2e-4
        bits/sample; fp32 at temperature 0, where one near-tied argmax flipped by rounding changes the whole stream)."""
        if precision not in PRECISIONS + ("auto",):
            raise ValueError(f"precision={precision!r} is unknown for backend numba: use one of "
                             f"{PRECISIONS + ('auto',)}")
        self.precision = precision
        plan = network_plan(model)
        names = (GREEDY_PRECISION, SAMPLING_PRECISION) if precision == "auto" else (precision,)
        self._flats = {name: flatten(plan, name) for name in names}
        self._flat = self._flats[names[0]]
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._lock = threading.Lock()

    def precision_for(self, sampling: SamplingSettings) -> str:
        """The weight storage a run with `sampling` uses."""
        if self.precision != "auto":
            return self.precision
        return GREEDY_PRECISION if sampling.temperature == 0 else SAMPLING_PRECISION

    def bytes_for(self, sampling: SamplingSettings) -> float:
        """Parameter bytes one stream's step reads with `sampling`, averaged over the pooling period."""
        return self._flats[self.precision_for(sampling)].bytes_per_sample

    @property
    def state_size(self) -> int:
        """Floats of recurrent state per stream: the S4 memories and the pool buffers."""
        return self._flat.state_size

    def new_state(self, batch_size: int) -> EngineState:
        return EngineState(np.zeros((batch_size, self._flat.state_size), np.float32), batch_size)

    def select(self, state: EngineState, rows: Sequence[int]) -> EngineState:
        rows = np.asarray(rows, dtype=np.int64)
        return EngineState(np.ascontiguousarray(state.memory[rows]), len(rows), state.position)

    def join(self, states: Sequence[EngineState]) -> EngineState:
        position = joined_position(states, self._flat.program.shape[0])
        memory = np.concatenate([state.memory for state in states], axis=0)
        return EngineState(memory, memory.shape[0], position)

    def run(self, state: EngineState, first_tokens: np.ndarray, forced: np.ndarray, keys: np.ndarray, counter: int,
            sampling: SamplingSettings, keep_logits: bool = False) -> StepOutputs:
        check_batch(state, first_tokens, forced, keys)
        batch, steps = forced.shape
        flat = self._flats[self.precision_for(sampling)]
        first_tokens = np.ascontiguousarray(first_tokens, dtype=np.int64)
        forced = np.ascontiguousarray(forced, dtype=np.int64)
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        tokens = np.empty((batch, steps), np.int64)
        logp_model = np.empty((batch, steps), np.float64)
        logp_sample = np.empty((batch, steps), np.float64)
        logits = np.empty((batch, steps if keep_logits else 0, flat.n_classes), np.float32)
        threads = max(1, min(self.threads or default_threads(batch), batch))
        bounds = np.linspace(0, batch, threads + 1).round().astype(int)

        def part(index: int) -> None:
            lo, hi = bounds[index], bounds[index + 1]
            run_steps(flat.params, flat.weights, flat.levels, flat.blocks, flat.head, flat.norm_eps, flat.program, flat.program_lengths,
                      state.memory[lo:hi], state.position, first_tokens[lo:hi], forced[lo:hi],
                      keys[lo:hi], counter, float(sampling.temperature), int(sampling.top_k), float(sampling.top_p),
                      tokens[lo:hi], logp_model[lo:hi], logp_sample[lo:hi], logits[lo:hi])

        def all_parts() -> None:
            if threads == 1:
                part(0)
                return
            with self._lock:
                if self._pool is None or self._pool_size < threads:
                    if self._pool is not None:
                        self._pool.shutdown(wait=True)
                    self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fast-step")
                    self._pool_size = threads
                futures = [self._pool.submit(part, index) for index in range(threads)]
                for future in futures:
                    future.result()

        _warm_up(flat)
        all_parts()
        state.position += steps
        return StepOutputs(tokens, logp_model, logp_sample, logits if keep_logits else None)

    def close(self) -> None:
        """Stop the stream threads (a later run starts them again)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._pool, self._pool_size = None, 0

    def describe(self) -> str:
        threads = self.threads or "one per core, at most one per stream"
        if self.precision == "auto":
            sampled, greedy = self._flats[SAMPLING_PRECISION], self._flats[GREEDY_PRECISION]
            storage = (f"{sampled.precision} linear weights and {sampled.ssm_form} S4 step "
                       f"({greedy.precision} and {greedy.ssm_form} when greedy)")
        else:
            storage = f"{self._flat.precision} linear weights and {self._flat.ssm_form} S4 step"
        if "w8a8" in self._flats:
            storage += f"; w8a8 sums by {numba_w8a8.INSTRUCTIONS}"
        return f"backend numba: fused CPU loop over all layers and the sampler, {storage} (threads: {threads})"
