"""The one timing and peak-memory helper of the benchmarks: median of timed calls after warm-ups.

On CUDA it synchronises around every call and reads torch's peak allocation; on a CPU the peak is
the process's resident set, so a caller that wants it per case runs the case in a fresh process
(`run_isolated`). Never used by training itself.
"""

import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Measurement:
    seconds: float             # median over the timed calls
    fastest_seconds: float
    calls: int
    peak_memory_gib: float
    memory_kind: str           # "cuda peak allocated" | "process peak RSS"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(function: Callable[[], object], device: torch.device, repeats: int = 3, warmup: int = 1,
              budget_seconds: float | None = None) -> Measurement:
    """Median seconds of `repeats` calls of `function` after `warmup` calls; with budget_seconds, stop
    timing early (after at least one timed call) once that much time has passed since the first timed call."""
    device = torch.device(device)
    for _ in range(warmup):
        function()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    started = time.perf_counter()
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
        if budget_seconds is not None and time.perf_counter() - started > budget_seconds:
            break
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**30, "cuda peak allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak RSS"
    return Measurement(statistics.median(times), min(times), len(times), peak, kind)


def run_isolated(module: str, function: str, arguments: dict, timeout_seconds: float = 1800) -> dict:
    """`module.function(**arguments)` in a fresh process (its own peak memory), returning its dict result.

    A process that fails or is killed for memory or time returns {"error": ...} instead of raising.
    """
    program = (f"import json, sys; from {module} import {function} as run; "
               "print(json.dumps(run(**json.loads(sys.argv[1]))))")
    command = [sys.executable, "-c", program, json.dumps(arguments)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_seconds:.0f} s"}
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit code {completed.returncode}: {tail[0][:200]}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])
