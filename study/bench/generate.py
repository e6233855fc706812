"""`study bench generate`: samples/s and real-time factor of generation, fast engine vs plain step path.

For each preset (full size, random weights: speed does not depend on them) and batch size it times
the fast backend (numba on a CPU, CUDA graphs on a GPU; on a CPU once per weight precision, fp32 with
the folded S4 step the baseline, bf16, int8 and w8a8 with the compact one) and `model.step` from a Python
loop, all sampling at temperature 1. On a CPU it also measures the copy bandwidth in the same run and
prints the bytes of parameters each sample reads and the fraction of that bandwidth reached. Prints a
table; no test asserts timings.
"""

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from study.bench.timing import time_call
from study.errors import ConfigError
from study.generation.engines.selection import PRECISIONS, make_engine, resolve_device
from study.generation.engines.numba_engine import default_threads
from study.generation.sampling import SamplingSettings, stream_keys
from study.sashimi import build_model

PRESETS = ("sashimi-2", "sashimi-8")
BATCHES = (1, 16)
# Targets on this 2-core CPU, default precision: (preset, batch) -> samples/s (per stream for batch 1,
# summed for batch 16); and, since the machine's speed varies between days, as ratios in one run.
TARGETS = {("sashimi-2", 1): 100_000, ("sashimi-8", 1): 16_000, ("sashimi-2", 16): 300_000,
           ("sashimi-8", 16): 60_000}
TARGET_SPEEDUP_SASHIMI_8 = 4.0     # default precision / fp32, SaShiMi-8 batch 1
TARGET_BANDWIDTH_FRACTION = 0.5    # bytes read per sample x samples/s / copy bandwidth, batch 1
COPY_BYTES = 256 * 2**20


def copy_bandwidth(repeats: int = 5) -> float:
    """Bytes/s of a numpy copy of a 256 MiB float32 array, best of `repeats`, counting the bytes read
    and written (the STREAM 'copy' convention); one thread, like one stream of the engine."""
    source = np.ones(COPY_BYTES // 4, np.float32)
    target = np.empty_like(source)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * COPY_BYTES / best


def weight_bytes_per_sample(engine, sampling: SamplingSettings, batch: int, threads: int) -> float:
    """Parameter bytes the numba engine reads per sample of one stream: each thread reads the weights
    once per pair of its streams per step (re-reads at batch > 2 mostly come from cache)."""
    per_thread = math.ceil(batch / threads)
    passes = threads * math.ceil(per_thread / 2) if batch > 1 else 1
    return engine.bytes_for(sampling) * passes / batch


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
    precisions: list[str] = field(default_factory=lambda: ["fp32", "auto"])   # CPU: numba weight storages
    json: bool = False                   # also print one JSON object per row


def main(argv: list[str]) -> int:
    from study.command_args import parse_key_values

    try:
        args = parse_key_values(Settings, argv, "bench generate", "presets=[sashimi-2] batches=[1] seconds=1")
        device = resolve_device(args.device)
        unknown = [precision for precision in args.precisions if precision not in PRECISIONS]
        if unknown or not args.precisions:
            raise ConfigError(f"precisions={args.precisions}: use a list of {', '.join(PRECISIONS)}, "
                              "e.g. precisions=[fp32,bf16]")
    except (ConfigError, ValueError) as error:
        print(error, file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    sampling = SamplingSettings()
    cpu = device.type == "cpu"
    precisions = args.precisions if cpu else ["fp32"]
    bandwidth = copy_bandwidth() if cpu else math.nan
    print(f"generation speed, temperature 1, device {device}, {args.threads} threads "
          f"({len(os.sched_getaffinity(0))} cores usable), median of 3 runs, real time = {args.sample_rate} "
          "samples/s per stream")
    if cpu:
        print(f"copy bandwidth (numpy copy of 256 MiB, read + write, best of 5): {bandwidth / 1e9:.1f} GB/s")
    print(f"{'preset':<10} {'path':<11} {'batch':>5} {'samples/s/stream':>17} {'samples/s summed':>17} "
          f"{'x real time':>12} {'summed':>8} {'cpu use':>8} {'MB/sample':>10} {'GB/s':>7} {'of copy':>8}")
    rows = []
    for preset in args.presets:
        torch.manual_seed(0)
        model = build_model(preset, l_max=16384).eval()
        paths = [("fast", "auto", precision) for precision in precisions]
        paths += [] if args.skip_step else [("step", "step", "fp32")]
        for batch in args.batches:
            for label, backend, precision in paths:
                threads = min(args.threads, default_threads(batch)) if label == "fast" else args.threads
                engine = make_engine(model, backend, device, threads=threads,
                                     precision=precision if label == "fast" else "fp32")
                name = engine.name if label == "fast" else "step"
                weights = getattr(engine, "precision_for", lambda _: "fp32")(sampling)
                if name == "numba":
                    name = f"numba-{weights}" + ("*" if precision == "auto" else "")
                if label == "fast":
                    result = measure(engine, batch, args.seconds, 512, sampling)
                else:
                    result = measure(engine, batch, args.step_seconds, 32, sampling)
                entry = row(preset, name, batch, threads if cpu else 0, result, args.sample_rate)
                entry["precision"], entry["setting"] = weights, precision
                if hasattr(engine, "bytes_for"):
                    entry["bytes_per_sample"] = weight_bytes_per_sample(engine, sampling, batch, threads)
                    entry["bytes_per_second"] = entry["bytes_per_sample"] * entry["samples_per_second_summed"]
                    entry["bandwidth_fraction"] = entry["bytes_per_second"] / bandwidth
                rows.append(entry)
                traffic = (f"{entry['bytes_per_sample'] / 1e6:>10.2f} {entry['bytes_per_second'] / 1e9:>7.1f} "
                           f"{entry['bandwidth_fraction'] * 100:>7.0f}%" if "bytes_per_sample" in entry else "")
                print(f"{preset:<10} {name:<11} {batch:>5} {entry['samples_per_second_per_stream']:>17,.0f} "
                      f"{entry['samples_per_second_summed']:>17,.0f} {entry['real_time_factor_per_stream']:>12.2f} "
                      f"{entry['real_time_factor_summed']:>8.2f} "
                      f"{entry['cpu_utilisation'] * 100 if cpu else float('nan'):>7.0f}% {traffic}", flush=True)
                if args.json:
                    print(json.dumps(entry))
    # the engine the targets are about: the last of `precisions` (the default, 'auto', unless told otherwise)
    fast = {(r["preset"], r["batch"]): r for r in rows if r["path"] != "step" and r["setting"] == precisions[-1]}
    baseline = {(r["preset"], r["batch"]): r for r in rows if r["path"] == "numba-fp32"}
    if cpu and baseline and fast:
        print("default precision / fp32 (summed samples/s): " + ", ".join(
            f"{p} b{b} {fast[(p, b)]['samples_per_second_summed'] / baseline[(p, b)]['samples_per_second_summed']:.2f}x"
            for (p, b) in fast if (p, b) in baseline))
        if ("sashimi-8", 1) in fast and ("sashimi-8", 1) in baseline:
            ratio = (fast[("sashimi-8", 1)]["samples_per_second_summed"]
                     / baseline[("sashimi-8", 1)]["samples_per_second_summed"])
            print(f"target sashimi-8 batch 1: default >= {TARGET_SPEEDUP_SASHIMI_8:.0f}x fp32 -> {ratio:.2f}x "
                  f"({'met' if ratio >= TARGET_SPEEDUP_SASHIMI_8 else 'NOT met'})")
        for (preset, batch), entry in fast.items():
            if batch == 1 and "bandwidth_fraction" in entry:
                share = entry["bandwidth_fraction"]
                print(f"target {preset} batch 1: >= {TARGET_BANDWIDTH_FRACTION:.0%} of copy bandwidth -> {share:.0%} "
                      f"({'met' if share >= TARGET_BANDWIDTH_FRACTION else 'NOT met'})")
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
    if cpu:
        print("numba-X* = the default precision ('auto'; w8a8 when sampling); MB/sample = parameter bytes read per "
              "sample (each thread re-reads them per pair of its streams, mostly from cache); of copy = MB/sample "
              "x summed samples/s / copy bandwidth")
    return 0
