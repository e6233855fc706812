"""Backend 'step': `SaShiMi.step` from a Python loop with the reference sampler. Slow, but it is the
definition every other engine is tested against token for token; it never changes the model.
"""

from typing import Sequence

import numpy as np
import torch

from study.generation.engines.protocol import EngineState, StepOutputs, check_batch, joined_position
from study.generation.sampling import SamplingSettings, log_softmax_at, sample, uniforms
from study.sashimi import RecurrentState, SaShiMi


def step_and_choose(model: SaShiMi, token: torch.Tensor, recurrent: RecurrentState, forced: torch.Tensor,
                    u: torch.Tensor, sampling: SamplingSettings) -> tuple[torch.Tensor, ...]:
    """One sample for every stream: the logits after `token` (B,), then forced[b] where it is >= 0,
    else a draw with uniform u[b]. Returns (token, log p_model, log p_sample (nan where forced),
    logits (B, C)). Static shapes and no host synchronisation, so a CUDA graph can capture it."""
    logits = model.step(token, recurrent)                                     # (B, C)
    draw = sample(logits, sampling, u)
    chosen = torch.where(forced >= 0, forced, draw.tokens)
    logp_sample = torch.where(forced >= 0, torch.full_like(draw.logp_sample, float("nan")), draw.logp_sample)
    return chosen, log_softmax_at(logits, chosen), logp_sample, logits


class RecurrentStateStreams:
    """Streams held as the model's own `RecurrentState`: what the 'step' and 'graph' engines share.
    Needs `self.model` and `self._fresh` (a one-stream state whose step matrices are computed once)."""

    model: SaShiMi
    _fresh: RecurrentState

    def new_state(self, batch_size: int) -> EngineState:
        return EngineState(self._fresh.select([0] * batch_size), batch_size)

    def select(self, state: EngineState, rows: Sequence[int]) -> EngineState:
        rows = [int(row) for row in np.asarray(rows, dtype=np.int64)]
        return EngineState(state.memory.select(rows), len(rows), state.position)

    def join(self, states: Sequence[EngineState]) -> EngineState:
        position = joined_position(states, self.model.config.total_pool)
        memory = RecurrentState.join([state.memory for state in states])
        return EngineState(memory, sum(state.batch_size for state in states), position)


class StepEngine(RecurrentStateStreams):
    """Backend 'step': `model.step` per sample from Python, `study.generation.sampling.sample` per sample."""

    name = "step"

    def __init__(self, model: SaShiMi, device: str | torch.device = "cpu"):
        self.model = model
        self.device = torch.device(device)
        self._fresh = model.allocate_inference_cache(1)  # its step matrices are computed once, here

    @torch.no_grad()
    def run(self, state: EngineState, first_tokens: np.ndarray, forced: np.ndarray, keys: np.ndarray, counter: int,
            sampling: SamplingSettings, keep_logits: bool = False) -> StepOutputs:
        check_batch(state, first_tokens, forced, keys)
        batch, steps = forced.shape
        u_all = torch.from_numpy(uniforms(keys, counter, steps)).to(self.device)
        forced_all = torch.from_numpy(np.ascontiguousarray(forced, dtype=np.int64)).to(self.device)
        token = torch.as_tensor(np.asarray(first_tokens, dtype=np.int64), device=self.device)
        recurrent = state.memory
        recurrent.position = state.position
        columns = []
        for t in range(steps):
            outputs = step_and_choose(self.model, token, recurrent, forced_all[:, t], u_all[:, t], sampling)
            token = outputs[0]
            columns.append(outputs if keep_logits else outputs[:3])
        state.position += steps
        classes = self.model.config.n_classes
        if not columns:
            empty = np.zeros((batch, 0))
            return StepOutputs(empty.astype(np.int64), empty, empty.copy(),
                               np.zeros((batch, 0, classes), np.float32) if keep_logits else None)
        stacked = [torch.stack(column, 1).cpu().numpy() for column in zip(*columns)]
        return StepOutputs(stacked[0], stacked[1], stacked[2], stacked[3].astype(np.float32) if keep_logits else None)

    def describe(self) -> str:
        return f"backend step: SaShiMi.step from a Python loop on {self.device} (the reference path)"
