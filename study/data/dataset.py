"""Training reads of a prepared cache: (inputs, targets) windows and a seeded, resumable epoch order.

Reads the memory-mapped Arrow files zero-copy; never writes to the cache and never draws from
global random state (the order is a pure function of seed, epoch and start position).
"""

import bisect

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from study.data import DataError
from study.data.prepare import PreparedData
from study.data.quantize import shift_inputs


class WindowDataset(Dataset):
    """Windows of one split: item i is (inputs, targets), int64 tensors of shape (sample_len,).

    targets = the stored tokens; inputs = shift_inputs(targets) = [zero_token, targets[:-1]].
    """

    def __init__(self, prepared: PreparedData, split: str):
        self.prepared = prepared
        self.split = split
        self.path = prepared.split_path(split)
        self.sample_len = prepared.sample_len
        self.bits = prepared.bits
        self.length = int(prepared.manifest["splits"][split]["windows"])
        self._chunks: list[np.ndarray] | None = None
        self._starts: list[int] = []

    def _open(self) -> list[np.ndarray]:
        """(rows, sample_len) zero-copy views of each Arrow chunk of the memory-mapped split."""
        if self._chunks is None:
            if not self.path.is_dir():
                raise DataError(f"{self.path} is missing; delete {self.prepared.path} and run `study data prepare` again")
            table = datasets.load_from_disk(str(self.path)).data.table
            chunks, starts, row = [], [], 0
            for chunk in table.column("tokens").chunks:
                flat = chunk.flatten().to_numpy(zero_copy_only=True)
                chunks.append(flat.reshape(len(chunk), self.sample_len))
                starts.append(row)
                row += len(chunk)
            if row != self.length:
                raise DataError(f"{self.path} holds {row} windows, the manifest says {self.length}; "
                                f"delete {self.prepared.path} and prepare again")
            self._chunks, self._starts = chunks, starts
        return self._chunks

    def tokens(self, index: int) -> np.ndarray:
        """Stored tokens of window `index` (uint8 or uint16 view, no copy)."""
        if not -self.length <= index < self.length:
            raise IndexError(f"window {index} is out of range for the {self.length} {self.split} windows")
        index %= self.length
        chunks = self._open()
        which = bisect.bisect_right(self._starts, index) - 1
        return chunks[which][index - self._starts[which]]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        targets = torch.from_numpy(self.tokens(index).astype(np.int64))
        return shift_inputs(targets, self.bits), targets

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch at once, (len(indices), sample_len) each: what DataLoader asks for (one copy)."""
        targets = torch.from_numpy(np.stack([self.tokens(index) for index in indices]).astype(np.int64))
        return shift_inputs(targets, self.bits), targets

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_chunks"], state["_starts"] = None, []  # reopen the memory map in the worker process
        return state


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch `epoch`'s permutation: seed * 2^32 + epoch (distinct for seed < 2^31, epoch < 2^32)."""
    return seed * (1 << 32) + epoch


class EpochSampler(Sampler[int]):
    """Window order per epoch, resumable at any position.

    permutation(epoch) = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
    when shuffling, else 0..n-1. Iterating yields permutation(epoch)[start_index:]; a resumed run calls
    set_epoch(epoch, start_index=windows already consumed this epoch) and sees exactly the rest.
    """

    def __init__(self, length: int, shuffle: bool, seed: int, epoch: int = 0, start_index: int = 0):
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.set_epoch(epoch, start_index)

    def permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.length)
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.length, generator=generator)

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        if not 0 <= start_index <= self.length:
            raise ValueError(f"start_index={start_index} is outside 0..{self.length} windows of this split")
        self.epoch = epoch
        self.start_index = start_index

    def __iter__(self):
        return iter(self.permutation(self.epoch)[self.start_index:].tolist())

    def __len__(self) -> int:
        return self.length - self.start_index


def make_loader(prepared: PreparedData, split: str, batch_size: int, shuffle: bool, seed: int,
                num_workers: int = 0, *, epoch: int = 0, start_index: int = 0, drop_last: bool = False,
                pin_memory: bool = False) -> DataLoader:
    """DataLoader of (inputs, targets) batches, each (batch_size, sample_len) int64.

    The order comes from an EpochSampler (loader.sampler): call loader.sampler.set_epoch(epoch) before
    each epoch, or set_epoch(epoch, start_index) to resume mid-epoch.
    """
    dataset = WindowDataset(prepared, split)
    if len(dataset) == 0:
        raise DataError(f"the {split} split of {prepared.path} has no windows; prepare with more audio")
    sampler = EpochSampler(len(dataset), shuffle, seed, epoch, start_index)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=already_batched, drop_last=drop_last, pin_memory=pin_memory)


def already_batched(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate for WindowDataset.__getitems__, which already returns stacked (inputs, targets)."""
    return batch
