"""Shared test settings: deterministic CPU torch with few threads, outputs under tmp_path."""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Ray's local node registers within 10 s on an idle machine; a loaded one (other jobs on the cores)
# needs longer, and the suite should not fail for that.
os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_torch_thread():
    """Small eager torch ops on two OpenMP threads crawl when another process holds a core (each op
    waits for the descheduled thread); one thread keeps such tests fast on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
