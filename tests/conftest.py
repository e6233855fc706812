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


@pytest.fixture
def small_filesystem(tmp_path):
    """mount(size_kib, read_only=False) -> a fresh tmpfs folder of that size; skips where mounting
    is not allowed (it needs root and mount(8)); unmounted at the end."""
    import shutil
    import subprocess
    mounted = []

    def mount(size_kib: int, read_only: bool = False):
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("a small file system needs root and mount(8) to make a tmpfs")
        folder = tmp_path / f"tmpfs-{len(mounted)}"
        folder.mkdir()
        options = f"size={size_kib}k,mode=0755" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
