"""Timing and peak-memory measurement shared by the benchmarks; never used by training itself.

CPU peak memory is the process's peak resident set size, so each measurement runs in a fresh
subprocess; on CUDA it is torch's peak allocation.
"""

import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Measurement:
    seconds: float
    peak_memory_gib: float
    memory_kind: str  # "cuda peak allocated" | "process peak RSS"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(function: Callable[[], None], device: torch.device, repeats: int = 2, warmup: int = 1) -> Measurement:
    """Median-free simple timing: mean seconds of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        function()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    synchronize(device)
    seconds = (time.perf_counter() - start) / repeats
    if device.type == "cuda":
        return Measurement(seconds, torch.cuda.max_memory_allocated(device) / 2**30, "cuda peak allocated")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return Measurement(seconds, peak_kib / 2**20, "process peak RSS")


def run_isolated(module: str, arguments: dict, timeout_seconds: float = 1800) -> dict:
    """Run `python -m module --json ARGS` in a fresh process and parse its last output line as JSON.

    A process killed for memory or time returns {"error": ...} instead of raising.
    """
    command = [sys.executable, "-m", module, "--one", json.dumps(arguments)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_seconds:.0f} s"}
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit code {completed.returncode}: {tail[0][:200]}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])
