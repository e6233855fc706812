"""`join(states)`: one engine state holding the streams of several, concatenated along the batch axis.

The one place the live server combines engine states; it never reorders rows, never checks or changes
a stream's content, and expects states whose positions agree modulo the model's total pooling.
"""

from dataclasses import replace

import numpy as np
import torch

from study.generation.engines.cuda_graph import TensorState
from study.generation.engines.numba_engine import FastState
from study.generation.engines.selection import StepState
from study.sashimi import RecurrentState


def _concatenate(values: list):
    """Tensors along dim 0; lists and dicts entry by entry (the layout of `SaShiMi.init_state`)."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(values, 0)
    if isinstance(first, list):
        return [_concatenate([value[index] for value in values]) for index in range(len(first))]
    if isinstance(first, dict):
        return {key: _concatenate([value[key] for value in values]) for key in first}
    raise TypeError(f"unexpected recurrent state entry {type(first).__name__}")


def join(states: list):
    """The rows of `states`, in order, as one state of the same type at the first state's position."""
    if not states:
        raise ValueError("join needs at least one state")
    first = states[0]
    batch = sum(state.batch_size for state in states)
    if len(states) == 1:
        return first
    if isinstance(first, FastState):
        return FastState(np.ascontiguousarray(np.concatenate([s.memory for s in states], 0)), batch, first.position)
    if isinstance(first, TensorState):
        return TensorState(torch.cat([s.memory for s in states], 0).contiguous(), batch, first.position)
    if isinstance(first, StepState):
        backbones = [s.recurrent.backbone for s in states]
        backbone = dict(backbones[0])  # "params" are the model's step matrices, the same for every row
        for key in ("down", "up", "memory"):
            backbone[key] = _concatenate([b[key] for b in backbones])
        return replace(first, recurrent=RecurrentState(backbone, first.recurrent.position), batch_size=batch)
    raise TypeError(f"cannot join engine states of type {type(first).__name__}")
