"""`study bench generate`: samples/s and real-time factor of generation, fast engine vs plain step path.

For each preset (full size, random weights: speed does not depend on them) and batch size it times
the fast backend (numba on a CPU, CUDA graphs on a GPU) and `model.step` from a Python loop, both
sampling at temperature 1. Prints a table; no test asserts timings.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from study.generation.engines.selection import make_engine, resolve_device
from study.generation.engines.numba_engine import default_threads
from study.generation.sampling import SamplingSettings, stream_keys
from study.sashimi import build_model

PRESETS = ("sashimi-2", "sashimi-8")
BATCHES = (1, 16)
# Issue 6 targets on a 2-core laptop-class CPU, fp32: (preset, batch) -> samples/s (per stream for
# batch 1, summed for batch 16).
TARGETS = {("sashimi-2", 1): 16_000, ("sashimi-8", 1): 8_000, ("sashimi-2", 16): 100_000}


def measure(engine, batch: int, seconds: float, minimum_steps: int, sampling: SamplingSettings,
            repeats: int = 3) -> dict:
    """Time `repeats` runs of about seconds / repeats each (after a warm-up and a calibration run) and
    keep the fastest: other processes on the machine only ever slow a run down."""
    state = engine.new_state(batch)
    keys = stream_keys(0, range(batch))
    first = np.full(batch, 1 << 7)
    counter = 0

    def timed(steps: int) -> tuple[float, float]:
        nonlocal first, counter
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        out = engine.run(state, first, np.full((batch, steps), -1, np.int64), keys, counter, sampling)
        first, counter = out.tokens[:, -1], counter + steps
        return time.perf_counter() - start_wall, time.process_time() - start_cpu

    timed(16)                                           # compile / capture / warm caches
    wall, _ = timed(minimum_steps)                      # calibrate
    steps = max(minimum_steps, int(seconds / repeats * minimum_steps / max(wall, 1e-9)) // 16 * 16)
    wall, cpu = min(timed(steps) for _ in range(repeats))
    return {"steps": steps, "repeats": repeats, "wall_seconds": wall, "cpu_seconds": cpu,
            "samples_per_second_per_stream": steps / wall, "samples_per_second_summed": batch * steps / wall}


def row(preset: str, path: str, batch: int, threads: int, result: dict, sample_rate: int) -> dict:
    return {"preset": preset, "path": path, "batch": batch, "threads": threads, **result,
            "real_time_factor_per_stream": result["samples_per_second_per_stream"] / sample_rate,
            "real_time_factor_summed": result["samples_per_second_summed"] / sample_rate,
            "cpu_utilisation": result["cpu_seconds"] / result["wall_seconds"] / max(threads, 1)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="study bench generate", description=__doc__)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch for the step path, numba streams)")
    parser.add_argument("--seconds", type=float, default=3.0, help="wall-clock seconds per fast measurement (3 runs)")
    parser.add_argument("--step-seconds", type=float, default=3.0, help="wall-clock seconds per step-path measurement")
    parser.add_argument("--sample-rate", type=int, default=16000, help="for the real-time factor")
    parser.add_argument("--skip-step", action="store_true", help="time the fast backend only")
    parser.add_argument("--json", action="store_true", help="also print one JSON object per row")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    sampling = SamplingSettings()
    print(f"generation speed, fp32, temperature 1, device {device}, {args.threads} threads "
          f"({len(os.sched_getaffinity(0))} cores usable), best of 3 runs, real time = {args.sample_rate} "
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
