"""`study bench generate`: samples/s and real-time factor of generation, fast engine vs plain step path.

For each preset (full size, random weights: speed does not depend on them) and batch size it times
the fast backend (numba on a CPU, CUDA graphs on a GPU) and `model.step` from a Python loop, both
sampling at temperature 1. Prints a table; no test asserts timings.
"""

import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from study.bench.timing import time_call
from study.errors import ConfigError
from study.generation.engines.selection import make_engine, resolve_device
from study.generation.engines.numba_engine import default_threads
from study.generation.sampling import SamplingSettings, stream_keys
from study.sashimi import build_model

PRESETS = ("sashimi-2", "sashimi-8")
BATCHES = (1, 16)
# Targets on a 2-core laptop-class CPU, fp32: (preset, batch) -> samples/s (per stream for
# batch 1, summed for batch 16).
TARGETS = {("sashimi-2", 1): 16_000, ("sashimi-8", 1): 8_000, ("sashimi-2", 16): 100_000}


def measure(engine, batch: int, seconds: float, minimum_steps: int, sampling: SamplingSettings,
            repeats: int = 3) -> dict:
    """Median of `repeats` runs of about seconds / repeats each, after a warm-up and a calibration run."""
    state = engine.new_state(batch)
    keys = stream_keys(0, range(batch))
    first = np.full(batch, 1 << 7)
    counter = 0

    def run(steps: int) -> None:
        nonlocal first, counter
        out = engine.run(state, first, np.full((batch, steps), -1, np.int64), keys, counter, sampling)
        first, counter = out.tokens[:, -1], counter + steps

    device = torch.device(getattr(engine, "device", "cpu"))
    run(16)                                                      # compile / capture / warm caches
    calibration = time_call(lambda: run(minimum_steps), device, repeats=1, warmup=0)
    steps = max(minimum_steps, int(seconds / repeats * minimum_steps / max(calibration.seconds, 1e-9)) // 16 * 16)
    cpu_start = time.process_time()
    measurement = time_call(lambda: run(steps), device, repeats=repeats, warmup=0)
    cpu = (time.process_time() - cpu_start) / measurement.calls
    wall = measurement.seconds
    return {"steps": steps, "repeats": repeats, "wall_seconds": wall, "cpu_seconds": cpu,
            "samples_per_second_per_stream": steps / wall, "samples_per_second_summed": batch * steps / wall}


def row(preset: str, path: str, batch: int, threads: int, result: dict, sample_rate: int) -> dict:
    return {"preset": preset, "path": path, "batch": batch, "threads": threads, **result,
            "real_time_factor_per_stream": result["samples_per_second_per_stream"] / sample_rate,
            "real_time_factor_summed": result["samples_per_second_summed"] / sample_rate,
            "cpu_utilisation": result["cpu_seconds"] / result["wall_seconds"] / max(threads, 1)}


@dataclass
class Settings:
    device: str = "auto"                 # auto | cpu | cuda
    presets: list[str] = field(default_factory=lambda: list(PRESETS))
    batches: list[int] = field(default_factory=lambda: list(BATCHES))
    threads: int = 2                     # CPU threads (torch for the step path, numba streams)
    seconds: float = 3.0                 # wall-clock seconds per fast measurement (3 runs)
    step_seconds: float = 3.0            # wall-clock seconds per step-path measurement
    sample_rate: int = 16000             # for the real-time factor
    skip_step: bool = False              # time the fast backend only
    json: bool = False                   # also print one JSON object per row


def main(argv: list[str]) -> int:
    from study.command_args import parse_key_values

    try:
        args = parse_key_values(Settings, argv, "bench generate", "presets=[sashimi-2] batches=[1] seconds=1")
        device = resolve_device(args.device)
    except (ConfigError, ValueError) as error:
        print(error, file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    sampling = SamplingSettings()
    print(f"generation speed, fp32, temperature 1, device {device}, {args.threads} threads "
          f"({len(os.sched_getaffinity(0))} cores usable), median of 3 runs, real time = {args.sample_rate} "
          "samples/s per stream")
    print(f"{'preset':<10} {'path':<7} {'batch':>5} {'samples/s/stream':>17} {'samples/s summed':>17} "
          f"{'x real time':>12} {'summed':>8} {'cpu use':>8}")
    rows = []
    for preset in args.presets:
        torch.manual_seed(0)
        model = build_model(preset, l_max=16384).eval()
        paths = [("fast", "auto")] + ([] if args.skip_step else [("step", "step")])
        for batch in args.batches:
            for label, backend in paths:
                threads = min(args.threads, default_threads(batch)) if label == "fast" else args.threads
                engine = make_engine(model, backend, device, threads=threads)
                name = engine.name if label == "fast" else "step"
                if label == "fast":
                    result = measure(engine, batch, args.seconds, 512, sampling)
                else:
                    result = measure(engine, batch, args.step_seconds, 32, sampling)
                entry = row(preset, name, batch, threads if device.type == "cpu" else 0, result, args.sample_rate)
                rows.append(entry)
                print(f"{preset:<10} {name:<7} {batch:>5} {entry['samples_per_second_per_stream']:>17,.0f} "
                      f"{entry['samples_per_second_summed']:>17,.0f} {entry['real_time_factor_per_stream']:>12.2f} "
                      f"{entry['real_time_factor_summed']:>8.2f} "
                      f"{entry['cpu_utilisation'] * 100 if device.type == 'cpu' else float('nan'):>7.0f}%", flush=True)
                if args.json:
                    print(json.dumps(entry))
    fast = {(r["preset"], r["batch"]): r for r in rows if r["path"] != "step"}
    step = {(r["preset"], r["batch"]): r for r in rows if r["path"] == "step"}
    if step:
        print("speed-up of the fast path over the step path (summed samples/s): " + ", ".join(
            f"{p} b{b} {fast[(p, b)]['samples_per_second_summed'] / step[(p, b)]['samples_per_second_summed']:.0f}x"
            for (p, b) in fast if (p, b) in step))
    for (preset, batch), target in TARGETS.items():
        if (preset, batch) in fast:
            figure = fast[(preset, batch)]["samples_per_second_per_stream" if batch == 1 else "samples_per_second_summed"]
            print(f"target {preset} batch {batch}: >= {target:,} samples/s -> {figure:,.0f} "
                  f"({'met' if figure >= target else 'NOT met'})")
    print("cpu use = process CPU time / wall time / threads; well under 100% means other processes took the cores")
    return 0
