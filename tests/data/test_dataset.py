"""Window dataset and loader: items equal the stored tokens, shift by one, deterministic resumable order."""

import hashlib
import pickle

import datasets
import numpy as np
import pytest
import torch

from data_test_helpers import small_toy
from study.data.dataset import EpochSampler, WindowDataset, epoch_seed, make_loader
from study.data.prepare import prepare


@pytest.fixture
def prepared(paths):
    return prepare(small_toy(toy_clips=8), paths)  # 8 clips of 2 s: 4 / 2 / 2 files, 28 / 14 / 14 windows


def test_items_are_stored_tokens_and_their_shift(prepared):
    dataset = WindowDataset(prepared, "train")
    stored = datasets.load_from_disk(str(prepared.path / "train")).with_format("numpy")
    assert len(dataset) == len(stored) == 28
    for index in (0, 13, 27, -1):
        inputs, targets = dataset[index]
        assert inputs.dtype == targets.dtype == torch.int64 and inputs.shape == targets.shape == (4096,)
        assert np.array_equal(targets.numpy(), stored[index % 28]["tokens"].astype(np.int64))
        assert inputs[0] == 128 and torch.equal(inputs[1:], targets[:-1])
    with pytest.raises(IndexError):
        dataset[28]


def test_batched_fetch_equals_single_items(prepared):
    dataset = WindowDataset(prepared, "val")
    inputs, targets = dataset.__getitems__([3, 0, 11])
    assert inputs.shape == (3, 4096)
    for row, index in enumerate([3, 0, 11]):
        assert torch.equal(inputs[row], dataset[index][0]) and torch.equal(targets[row], dataset[index][1])


def test_dataset_reads_memory_mapped_arrow_and_pickles_without_the_map(prepared):
    dataset = WindowDataset(prepared, "test")
    dataset[0]
    table = datasets.load_from_disk(str(prepared.path / "test")).data
    assert type(table).__name__ == "MemoryMappedTable"
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._chunks is None and torch.equal(clone[5][1], dataset[5][1])


def test_shuffled_order_is_a_seeded_permutation_per_epoch():
    sampler = EpochSampler(100, shuffle=True, seed=7)
    first = sampler.permutation(0)
    expected = torch.randperm(100, generator=torch.Generator().manual_seed(epoch_seed(7, 0)))
    assert torch.equal(first, expected)
    assert sorted(first.tolist()) == list(range(100))
    assert torch.equal(first, EpochSampler(100, shuffle=True, seed=7).permutation(0))
    assert not torch.equal(first, sampler.permutation(1))
    assert not torch.equal(first, EpochSampler(100, shuffle=True, seed=8).permutation(0))
    assert EpochSampler(5, shuffle=False, seed=7).permutation(3).tolist() == [0, 1, 2, 3, 4]
    assert epoch_seed(1, 2) == int.from_bytes(hashlib.sha256(b"1/2").digest()[:4], "little")
    seeds = {epoch_seed(seed, epoch) for seed in range(50) for epoch in range(200)}
    assert len(seeds) == 50 * 200 and max(seeds) < 2**32  # distinct, and within what mt19937 uses


def test_resumed_loader_continues_exactly_where_the_run_stopped(prepared):
    full = make_loader(prepared, "train", batch_size=4, shuffle=True, seed=3, epoch=2)
    batches = [targets for _, targets in full]
    assert len(batches) == 7 and all(b.shape == (4, 4096) for b in batches)
    consumed = 3 * 4  # three steps were taken before the interruption
    resumed = make_loader(prepared, "train", batch_size=4, shuffle=True, seed=3, epoch=2, start_index=consumed)
    assert len(resumed) == 4
    assert torch.equal(torch.cat([t for _, t in resumed]), torch.cat(batches[3:]))
    resumed.sampler.set_epoch(3)  # the next epoch starts from the beginning of a new order
    assert len(resumed) == 7
    assert not torch.equal(torch.cat([t for _, t in resumed]), torch.cat(batches))


def test_loader_without_shuffle_reads_in_file_order_and_drops_last_when_asked(prepared):
    loader = make_loader(prepared, "val", batch_size=4, shuffle=False, seed=0)
    dataset = WindowDataset(prepared, "val")
    order = torch.cat([t for _, t in loader])
    assert order.shape == (14, 4096)
    assert all(torch.equal(order[i], dataset[i][1]) for i in range(14))
    assert len(make_loader(prepared, "val", batch_size=4, shuffle=False, seed=0, drop_last=True)) == 3


def test_worker_processes_yield_the_same_batches(prepared):
    single = [t for _, t in make_loader(prepared, "train", 4, shuffle=True, seed=1)]
    workers = [t for _, t in make_loader(prepared, "train", 4, shuffle=True, seed=1, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(single, workers)) and len(single) == len(workers)
