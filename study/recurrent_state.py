"""The recurrent state of `SaShiMi.step`: tensors allocated once and updated in place, streams on axis 0.

Selecting and joining streams copies their rows; nothing here computes a step or changes a model.
"""

from dataclasses import dataclass

import torch


def _rows(tensors: list[torch.Tensor], index: torch.Tensor) -> list[torch.Tensor]:
    return [tensor.index_select(0, index.to(tensor.device)) for tensor in tensors]


@dataclass
class RecurrentState:
    """Everything `SaShiMi.step` needs between samples, in tensors allocated once and updated in place
    (so a captured CUDA graph can replay the step). Streams are axis 0 of every batched tensor.

    `step_parameters` snapshots the discretised step matrices of the weights at allocation: allocate a
    new state after changing the weights. The step's schedule depends only on position mod total_pool.
    """
    down: list[torch.Tensor]        # per pooling level l (0: outermost): (B, H_l, s_l), the group being filled
    up: list[torch.Tensor]          # per pooling level l: (B, H_l, s_l), the previous group's outputs
    memory: list[torch.Tensor]      # per S4 block i (ResidualBlock.state_index): (B, H, N/2) complex64
    step_parameters: list[dict]     # per S4 block: its kernel's step matrices, shared by all streams
    position: int = 0               # samples consumed

    @property
    def batch_size(self) -> int:
        return self.memory[0].shape[0] if self.memory else self.down[0].shape[0]

    def batched(self) -> list[torch.Tensor]:
        """Every tensor with the streams on axis 0, in a fixed order."""
        return [*self.down, *self.up, *self.memory]

    def _rebuilt(self, tensors: list[torch.Tensor], position: int) -> "RecurrentState":
        depth = len(self.down)
        return RecurrentState(tensors[:depth], tensors[depth:2 * depth], tensors[2 * depth:], self.step_parameters,
                              position)

    def select(self, rows: torch.Tensor | list[int]) -> "RecurrentState":
        """A new state whose stream i is a copy of stream rows[i] of this one."""
        index = torch.as_tensor(rows, dtype=torch.int64)
        return self._rebuilt(_rows(self.batched(), index), self.position)

    @staticmethod
    def join(states: list["RecurrentState"]) -> "RecurrentState":
        """The streams of `states`, in order, as one batch at the first's position (the caller checks
        that their phases, position mod total_pool, agree)."""
        columns = zip(*(state.batched() for state in states))
        return states[0]._rebuilt([torch.cat(column, 0) for column in columns], states[0].position)

    def copy_(self, other: "RecurrentState") -> None:
        """Overwrite this state's tensors (their storage stays put) and position with `other`'s."""
        for mine, theirs in zip(self.batched(), other.batched(), strict=True):
            mine.copy_(theirs)
        self.position = other.position
