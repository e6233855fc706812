"""The generation engine interface: one Protocol, one state type and one output type for every backend.

Engines advance batches of streams as `SaShiMi.step` and `study.generation.sampling.sample` define;
this module defines what they share and never imports an engine.
"""

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from study.generation.sampling import SamplingSettings


@dataclass
class EngineState:
    """Streams of one engine between runs. `memory` is the engine's own form of the recurrent state
    with the streams on axis 0: a float32 array (B, state_size) for 'numba', the model's
    `RecurrentState` for 'step' and 'graph'. Only the engine that made a state may read it."""
    memory: Any
    batch_size: int
    position: int = 0     # samples the batch has consumed; the step's schedule depends on it mod total_pool


@dataclass
class StepOutputs:
    """What a run of T samples produced for each of B streams."""
    tokens: np.ndarray         # (B, T) int64
    logp_model: np.ndarray     # (B, T) float64
    logp_sample: np.ndarray    # (B, T) float64 (nan where teacher-forced)
    logits: np.ndarray | None  # (B, T, C) float32 when asked for


@runtime_checkable
class Engine(Protocol):
    """A generation backend: `run` advances every stream of a state by T samples, teacher-forced where
    `forced` >= 0, else sampled with the counter-based uniforms of each stream's key."""
    name: str
    device: torch.device

    def new_state(self, batch_size: int) -> EngineState:
        """`batch_size` fresh streams at position 0."""

    def select(self, state: EngineState, rows: Sequence[int]) -> EngineState:
        """A new state whose stream i is a copy of stream rows[i] of `state` (e.g. one prompt -> n streams)."""

    def join(self, states: Sequence[EngineState]) -> EngineState:
        """The streams of `states`, in order, as one batch (streams joining a running batch between runs);
        all at the same phase (position mod the model's total pooling), the batch at the first's position."""

    def run(self, state: EngineState, first_tokens: np.ndarray, forced: np.ndarray, keys: np.ndarray,
            counter: int, sampling: SamplingSettings, keep_logits: bool = False) -> StepOutputs:
        """T = forced.shape[1] samples for the B streams of `state` (advanced in place): step t feeds
        first_tokens (t = 0) or the previous output token, and draws with uniform(keys[b], counter + t)."""

    def describe(self) -> str:
        """One line saying which backend runs where (logged once, written into each manifest)."""


def joined_position(states: Sequence[EngineState], total_pool: int) -> int:
    """The position of the batch joined from `states` (the first's), once their phases agree."""
    if not states:
        raise ValueError("join needs at least one state")
    phases = sorted({state.position % total_pool for state in states})
    if len(phases) != 1:
        raise ValueError(f"cannot join streams at phases {phases} (position mod {total_pool}): a batch steps "
                         f"together only at one phase; advance a stream to the batch's phase before it joins")
    return states[0].position


def check_batch(state: EngineState, first_tokens: np.ndarray, forced: np.ndarray, keys: np.ndarray) -> None:
    batch = forced.shape[0]
    if batch != state.batch_size or len(first_tokens) != batch or len(keys) != batch:
        raise ValueError(f"batch mismatch: state {state.batch_size}, first_tokens {len(first_tokens)}, "
                         f"forced {batch}, keys {len(keys)}")
