"""`study bench kernel`: time and peak memory of the S4 kernel sums (Triton vs PyTorch) and of the
real SaShiMi training step. Prints tables and asserts nothing about speed; every row names the
backend it ran, none is swapped in silently.

usage: study bench kernel [heads=[64,128,256]] [lengths=[16384,131072]] [state_half=32]
                          [backends=[triton,torch]] [parts=[kernel,model]] [presets=[sashimi-8,sashimi-2]]
                          [precisions=[fp32,bf16]] [repeats=10] [warmup=2] [model_repeats=3]
"""

import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch

from study.bench.timing import time_call
from study.bench.train import measure_train_step
from study.errors import ConfigError
from study.s4.sums import reference as kernel_ops

CPU_HEADS, CPU_LENGTH = [16], [4096]  # the torch path on CPU, to show the bench runs; not a GPU figure
MODEL_LENGTH = 131072  # one training sequence, batch 1
SUMS = ("cauchy", "vandermonde")


@dataclass
class Settings:
    heads: list[int] = field(default_factory=lambda: [64, 128, 256])
    lengths: list[int] = field(default_factory=lambda: [16384, 131072])
    state_half: int = 32
    backends: list[str] = field(default_factory=lambda: ["triton", "torch"])
    parts: list[str] = field(default_factory=lambda: ["kernel", "model"])
    presets: list[str] = field(default_factory=lambda: ["sashimi-8", "sashimi-2"])
    precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    repeats: int = 10
    warmup: int = 2
    model_repeats: int = 3  # one warm-up step, then this many timed steps

    def __post_init__(self):
        for key, allowed in (("backends", ("triton", "torch")), ("parts", ("kernel", "model")),
                             ("precisions", ("fp32", "bf16"))):
            for item in getattr(self, key):
                if item not in allowed:
                    raise ConfigError(f"study bench kernel: {key}={item!r} is unknown: use {' and/or '.join(allowed)}")


def sum_inputs(sum_name: str, heads: int, state_half: int, length: int, device: torch.device):
    """(leaves, run, grad) for one sum at the sizes of one S4 layer: `run(backend, *leaves)` is the
    sum by that backend, `grad` an upstream gradient of its output's shape."""
    generator = torch.Generator().manual_seed(0)
    dt = torch.exp(torch.empty(heads, 1).uniform_(math.log(1e-3), math.log(1e-1), generator=generator))
    n = torch.arange(state_half)
    diagonal = (dt * torch.complex(-0.5 * torch.ones(heads, state_half), math.pi * n.float())).to(device)  # (H, N)
    if sum_name == "cauchy":  # DPLR: 2x2 Woodbury combos, L//2 + 1 bilinear nodes
        omega = torch.exp(-2j * math.pi * torch.arange(length // 2 + 1, dtype=torch.float64) / length)
        z = (2 * (1 - omega) / (1 + omega)).to(torch.complex64).to(device)                     # (L//2 + 1,)
        v = torch.randn(2, 2, heads, state_half, dtype=torch.complex64, generator=generator).to(device)
        grad = torch.randn(2, 2, heads, z.shape[0], dtype=torch.complex64, generator=generator).to(device)
        inputs, run = (v, diagonal), lambda backend, v, w: kernel_ops.cauchy_conj(v, z, w, backend)
    elif sum_name == "vandermonde":  # S4D: one channel of C B, real output of length L
        c = torch.randn(1, heads, state_half, dtype=torch.complex64, generator=generator).to(device)
        grad = torch.randn(1, heads, length, generator=generator).to(device)                      # (1, H, L)
        inputs, run = (c, diagonal), lambda backend, c, x: kernel_ops.vandermonde_conj(c, x, length, backend)
    else:
        raise ValueError(f"unknown sum {sum_name!r}: use one of {SUMS}")
    return [t.requires_grad_() for t in inputs], run, grad


def kernel_steps(sum_name: str, backend: str, heads: int, state_half: int, length: int,
                 device: torch.device) -> tuple[Callable[[], None], Callable[[], None]]:
    """(forward, forward + backward) closures for one sum at the sizes of one S4 layer."""
    leaves, run, grad = sum_inputs(sum_name, heads, state_half, length, device)

    def forward():
        with torch.no_grad():
            run(backend, *leaves)

    def forward_backward():
        torch.autograd.grad(run(backend, *leaves), leaves, grad)

    return forward, forward_backward


def kernel_table(settings: Settings, device: torch.device) -> list[str]:
    header = (f"{'sum':<12} {'H':>5} {'L':>7} {'backend':<7} {'forward ms':>11} {'fwd+bwd ms':>11} "
              f"{'peak MiB':>9} {'torch/triton':>12}")
    lines = [header, "-" * len(header)]
    for sum_name in SUMS:
        for heads in settings.heads:
            for length in settings.lengths:
                totals = {}
                for backend in settings.backends:
                    try:
                        forward, forward_backward = kernel_steps(sum_name, backend, heads, settings.state_half, length, device)
                        forward_time = time_call(forward, device, settings.repeats, settings.warmup)
                        total = time_call(forward_backward, device, settings.repeats, settings.warmup)
                    except torch.cuda.OutOfMemoryError:
                        lines.append(f"{sum_name:<12} {heads:>5} {length:>7} {backend:<7} {'out of memory':>11}")
                        torch.cuda.empty_cache()
                        continue
                    totals[backend] = total.seconds
                    peak = f"{total.peak_memory_gib * 1024:.0f}" if device.type == "cuda" else "n/a"
                    ratio = f"{totals['torch'] / totals['triton']:.1f}x" if len(totals) == 2 else ""
                    lines.append(f"{sum_name:<12} {heads:>5} {length:>7} {backend:<7} {1e3 * forward_time.seconds:>11.2f} "
                                 f"{1e3 * total.seconds:>11.2f} {peak:>9} {ratio:>12}")
    return lines


def model_table(settings: Settings, device: torch.device, length: int = MODEL_LENGTH,
                overrides: dict | None = None) -> list[str]:
    """The real training step (study.bench.train.measure_train_step) of each preset at batch 1."""
    header = f"{'preset':<10} {'precision':<9} {'backend':<7} {'step ms':>9} {'peak GiB':>9}"
    lines = [header, "-" * len(header)]
    for name in settings.presets:
        for precision in settings.precisions:
            for backend in settings.backends:
                try:
                    result = measure_train_step(name, length, str(device), backend, precision,
                                                steps=settings.model_repeats, overrides=overrides)
                except torch.cuda.OutOfMemoryError:
                    lines.append(f"{name:<10} {precision:<9} {backend:<7} {'out of memory':>19}")
                else:
                    peak = f"{result['peak_memory_gib']:.2f}" if device.type == "cuda" else "n/a"
                    lines.append(f"{name:<10} {precision:<9} {backend:<7} {1e3 * result['seconds_per_step']:>9.1f} {peak:>9}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return lines


def main(argv: list[str]) -> int:
    from study.command_args import parse_key_values

    try:
        settings = parse_key_values(Settings, argv, "bench kernel", "heads=[256] lengths=[131072]")
    except ConfigError as error:
        print(f"{error}\nusage: {__doc__.split('usage:')[1].strip()}", file=sys.stderr)
        return 2
    given = {token.partition("=")[0] for token in argv}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        print("No CUDA device: timing the PyTorch path on CPU at a small size only; "
              "the Triton and GPU figures need a GPU (make gpu-check).")
        settings.backends = ["torch"]
        settings.heads = settings.heads if "heads" in given else CPU_HEADS
        settings.lengths = settings.lengths if "lengths" in given else CPU_LENGTH
        settings.repeats = settings.repeats if "repeats" in given else 3
    else:
        print(f"Device: {torch.cuda.get_device_name(device)}")
        if "triton" in settings.backends:
            kernel_ops.resolve_backend("triton", device)  # raises, naming the cause, if Triton cannot run
    if "kernel" in settings.parts:
        print(f"\nKernel sums, N = {settings.state_half}: forward, forward + backward (median of {settings.repeats})")
        print("\n".join(kernel_table(settings, device)))
    if "model" in settings.parts:
        print(f"\nTraining step at L = {MODEL_LENGTH}, batch 1 (study.training.step.train_step with the recipe's "
              f"AdamW groups; median of {settings.model_repeats})")
        if device.type == "cpu":
            print("skipped: needs a GPU")
        else:
            print("\n".join(model_table(settings, device)))
    return 0
